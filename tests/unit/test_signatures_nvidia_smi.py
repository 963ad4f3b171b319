"""nvidia-smi outputs as bug reports carry them -> gpu_samples / gpu_processes rows."""
from __future__ import annotations

from pathlib import Path

import pytest

from hangdoc.importers import nvidia_smi

MIB = 1024 * 1024

TABLE_550 = """\
Wed Mar 12 16:20:53 2025
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 550.54.15              Driver Version: 550.54.15      CUDA Version: 12.4     |
|-----------------------------------------+------------------------+----------------------+
| GPU  Name                 Persistence-M | Bus-Id          Disp.A | Volatile Uncorr. ECC |
| Fan  Temp   Perf          Pwr:Usage/Cap |           Memory-Usage | GPU-Util  Compute M. |
|                                         |                        |               MIG M. |
|=========================================+========================+======================|
|   0  NVIDIA H100 80GB HBM3          On  |   00000000:04:00.0 Off |                    0 |
| N/A   40C    P0            312W /  699W |   81200MiB /  81559MiB |    100%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+
|   1  NVIDIA H100 80GB HBM3          On  |   00000000:64:00.0 Off |                    0 |
| N/A   40C    P0             73W /  699W |       0MiB /  81559MiB |      0%      Default |
|                                         |                        |             Disabled |
+-----------------------------------------+------------------------+----------------------+

+-----------------------------------------------------------------------------------------+
| Processes:                                                                              |
|  GPU   GI   CI        PID   Type   Process name                              GPU Memory |
|        ID   ID                                                               Usage      |
|=========================================================================================|
|    0   N/A  N/A   1234567      C   /usr/bin/python3                             81190MiB |
+-----------------------------------------------------------------------------------------+
"""

# Driver 470 era: narrower columns, process rows without GI/CI, name truncated with "...".
TABLE_470 = """\
+-----------------------------------------------------------------------------+
| NVIDIA-SMI 470.82.01    Driver Version: 470.82.01    CUDA Version: 11.4     |
|-------------------------------+----------------------+----------------------+
| GPU  Name        Persistence-M| Bus-Id        Disp.A | Volatile Uncorr. ECC |
| Fan  Temp  Perf  Pwr:Usage/Cap|         Memory-Usage | GPU-Util  Compute M. |
|                               |                      |               MIG M. |
|===============================+======================+======================|
|   0  Tesla V100-SXM2...  On   | 00000000:00:1E.0 Off |                    0 |
| N/A   34C    P0    57W / 300W |  16001MiB / 16160MiB |     97%      Default |
|                               |                      |                  N/A |
+-------------------------------+----------------------+----------------------+

+-----------------------------------------------------------------------------+
| Processes:                                                                  |
|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |
|        ID   ID                                                   Usage      |
|=============================================================================|
|    0   N/A  N/A     41234      C   python                          15998MiB |
+-----------------------------------------------------------------------------+
"""

QUERY = """\
==============NVSMI LOG==============

Timestamp                                 : Tue Jun 10 09:12:44 2025
Driver Version                            : 550.54.15
CUDA Version                              : 12.4

Attached GPUs                             : 1
GPU 00000000:04:00.0
    Product Name                          : NVIDIA H100 80GB HBM3
    Product Brand                         : NVIDIA
    Minor Number                          : 0
    GPU UUID                              : GPU-4a0b6f1e-1111-2222-3333-444455556666
    FB Memory Usage
        Total                             : 81559 MiB
        Reserved                          : 328 MiB
        Used                              : 81190 MiB
        Free                              : 40 MiB
    BAR1 Memory Usage
        Total                             : 131072 MiB
        Used                              : 1 MiB
        Free                              : 131071 MiB
    Compute Mode                          : Default
    Utilization
        Gpu                               : 100 %
        Memory                            : 0 %
        Encoder                           : 0 %
        Decoder                           : 0 %
    Temperature
        GPU Current Temp                  : 45 C
        GPU T.Limit Temp                  : 42 C
    GPU Power Readings
        Power Draw                        : 312.45 W
        Current Power Limit               : 700.00 W
    Clocks
        Graphics                          : 1980 MHz
        SM                                : 1980 MHz
        Memory                            : 2619 MHz
    Max Clocks
        Graphics                          : 1980 MHz
        SM                                : 1990 MHz
    Processes
        GPU instance ID                   : N/A
        Compute instance ID               : N/A
        Process ID                        : 2529070
            Type                          : C
            Name                          : ray::RayWorkerWrapper
            Used GPU Memory               : 81180 MiB
"""

CSV_LOOP = """\
timestamp, index, uuid, utilization.gpu [%], utilization.memory [%], memory.used [MiB], memory.total [MiB]
2025/06/10 09:12:44.001, 0, GPU-aaa, 100 %, 0 %, 90112 MiB, 97871 MiB
2025/06/10 09:12:44.002, 1, GPU-bbb, 100 %, 1 %, 90112 MiB, 97871 MiB
2025/06/10 09:12:45.001, 0, GPU-aaa, 100 %, 0 %, 90112 MiB, 97871 MiB
2025/06/10 09:12:45.002, 1, GPU-bbb, 99 %, 0 %, 90112 MiB, 97871 MiB
"""

APPS = """\
pid, process_name, used_gpu_memory [MiB], gpu_uuid
2529070, ray::RayWorkerWrapper, 90000 MiB, GPU-bbb
"""

DMON = """\
# gpu    pwr  gtemp  mtemp     sm    mem    enc    dec    mclk    pclk
# Idx      W      C      C      %      %      %      %     MHz     MHz
    0    402     51      -    100      0      0      0    2619    1980
    1    398     50      -    100      1      0      0    2619    1980
    0    401     51      -    100      0      0      0    2619    1980
    1    399     50      -    100      0      0      0    2619    1980
"""


def _write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_default_table_reads_each_gpu_and_its_processes() -> None:
    samples, procs = nvidia_smi.parse_text(TABLE_550)
    assert [s["gpu"] for s in samples] == [0, 1]
    g0 = samples[0]
    assert g0["bus_id"] == "00000000:04:00.0" and g0["sm_util"] == 100.0
    assert g0["mem_used"] == 81200 * MIB and g0["mem_total"] == 81559 * MIB
    assert g0["power_w"] == 312.0 and g0["temperature_c"] == 40.0
    assert g0["t"] is not None and samples[1]["sm_util"] == 0.0
    assert procs == [{"gpu": 0, "pid": 1234567, "used_memory": 81190 * MIB}]


def test_old_driver_table_and_repeated_snapshots_become_samples() -> None:
    samples, procs = nvidia_smi.parse_text(TABLE_470 + "\n" + TABLE_470.replace("97%", "98%"))
    assert [(s["gpu"], s["sample"], s["sm_util"]) for s in samples] == [(0, 0, 97.0), (0, 1, 98.0)]
    assert samples[0]["name"].startswith("Tesla V100")
    assert procs == [{"gpu": 0, "pid": 41234, "used_memory": 15998 * MIB}]


def test_query_output_reads_memory_bandwidth_and_ignores_max_clocks() -> None:
    samples, procs = nvidia_smi.parse_text(QUERY)
    (g,) = samples
    assert g["uuid"].startswith("GPU-4a0b") and g["sm_util"] == 100.0 and g["mem_bw_util"] == 0.0
    assert g["mem_used"] == 81190 * MIB and g["mem_total"] == 81559 * MIB
    assert g["sm_clock_mhz"] == 1980.0 and g["power_w"] == pytest.approx(312.45)
    assert procs == [{"gpu": 0, "uuid": g["uuid"], "pid": 2529070, "used_memory": 81180 * MIB}]


def test_query_gpu_csv_loop_numbers_samples_per_gpu() -> None:
    samples, _ = nvidia_smi.parse_text(CSV_LOOP)
    assert [(s["gpu"], s["sample"]) for s in samples] == [(0, 0), (1, 0), (0, 1), (1, 1)]
    assert samples[3]["sm_util"] == 99.0 and samples[1]["mem_bw_util"] == 1.0
    assert samples[0]["mem_used"] == 90112 * MIB and samples[0]["t"] is not None


def test_dmon_reads_sm_and_memory_columns() -> None:
    samples, _ = nvidia_smi.parse_text(DMON)
    assert [(s["gpu"], s["sample"], s["sm_util"], s["mem_bw_util"]) for s in samples] == [
        (0, 0, 100.0, 0.0), (1, 0, 100.0, 1.0), (0, 1, 100.0, 0.0), (1, 1, 100.0, 0.0)
    ]


def test_read_joins_compute_apps_to_gpus_by_uuid(tmp_path: Path) -> None:
    files = [_write(tmp_path, "smi.csv", CSV_LOOP), _write(tmp_path, "apps.csv", APPS)]
    assert all(nvidia_smi.matches(f) for f in files)
    bundle = nvidia_smi.read(files)
    assert bundle.rows("gpu_samples") == 4
    (proc,) = bundle.table("gpu_processes").to_pylist()
    assert proc["pid"] == 2529070 and proc["gpu"] == 1 and proc["uuid"] == "GPU-bbb"


def test_files_that_are_not_nvidia_smi_are_not_claimed(tmp_path: Path) -> None:
    assert not nvidia_smi.matches(_write(tmp_path, "a.log", "INFO starting\nall good\n"))
    assert not nvidia_smi.matches(_write(tmp_path, "b.csv", "rank, op, seq\n0, all_reduce, 1\n"))
    assert nvidia_smi.matches(_write(tmp_path, "c.txt", TABLE_470))
    assert nvidia_smi.matches(_write(tmp_path, "d.txt", QUERY))
    assert nvidia_smi.matches(_write(tmp_path, "e.txt", DMON))
