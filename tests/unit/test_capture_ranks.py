"""Rank inference: env beats titles beats argv, titles give global ranks in vLLM's layout, launchers get none."""
from __future__ import annotations

import pyarrow as pa

from hangdoc.capture import ranks as rk
from hangdoc.capture.processes import ProcInfo, apply_log_titles, apply_trace_ranks, parent_alive, process_rows
from hangdoc.schema import table_from_rows


def test_parse_vllm_and_sglang_titles():
    t = rk.parse_title("VLLM::Worker_DP1_TP2")
    assert (t.framework, t.name, dict(t.indices)) == ("vllm", "Worker", {"dp": 1, "tp": 2})
    t = rk.parse_title("VLLM::EngineCore_DP0")
    assert (t.name, dict(t.indices)) == ("EngineCore", {"dp": 0})
    t = rk.parse_title("sglang::scheduler_DP0_PP1_TP3_EP5")
    assert (t.framework, t.name, dict(t.indices)) == ("sglang", "scheduler", {"dp": 0, "pp": 1, "tp": 3, "ep": 5})
    t = rk.parse_title("VLLM::Worker_PP1_PCP1_TP0_DCP1")
    assert dict(t.indices) == {"pp": 1, "pcp": 1, "tp": 0, "dcp": 1}
    assert rk.parse_title("python -m vllm.entrypoints.openai.api_server") is None
    assert rk.parse_title("/usr/bin/python3") is None


def test_global_rank_follows_vllm_layout():
    # Seed 001: TP=4 x DP=2; the worker titled DP1_TP2 is global rank 1*4 + 2.
    assert rk.global_from_indices({"dp": 1, "tp": 2}, {"tp": 4}) == 6
    # PP between DP and TP: ((dp*PP + pp)*TP + tp)
    assert rk.global_from_indices({"dp": 1, "pp": 1, "tp": 3}, {"tp": 4, "pp": 2}) == 15
    # Size-1 dimensions are left out of the title.
    assert rk.global_from_indices({"dp": 3}, {}) == 3
    # An index whose size is unknown: no guess.
    assert rk.global_from_indices({"dp": 1, "tp": 2}, {}) is None
    assert rk.global_from_indices({"ep": 2}, {"tp": 4}) is None


def test_sizes_prefer_launcher_argv_over_sibling_count():
    titles = [{"dp": 0, "tp": 0}, {"dp": 0, "tp": 1}]
    assert rk.parallel_sizes(titles, []) == {"tp": 2}
    assert rk.parallel_sizes(titles, [["vllm", "serve", "m", "--tensor-parallel-size", "8"]]) == {"tp": 8}
    assert rk.sizes_from_argv(["sglang", "--tp-size=4", "--pp", "2"]) == {"tp": 4, "pp": 2}
    assert rk.sizes_from_argv(["vllm", "serve", "-tp", "2"]) == {"tp": 2}


def test_env_order_and_launcher_vars():
    env = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "SLURM_PROCID": "0"}
    r = rk.from_env(env)
    assert (r.global_rank, r.local_rank, r.world_size, r.source) == (5, 1, 8, "env")
    mpi = rk.from_env({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_SIZE": "4", "OMPI_COMM_WORLD_LOCAL_RANK": "2"})
    assert (mpi.global_rank, mpi.world_size) == (2, 4)
    assert rk.from_env({"SLURM_PROCID": "1", "SLURM_NTASKS": "2"}).global_rank == 1
    assert rk.from_env({"SLURM_PROCID": "1"}, launcher_vars=False) is None
    assert rk.from_env({}) is None


def test_argv_and_log_titles():
    r = rk.from_argv(["python", "train.py", "--rank", "3", "--local_rank=1", "--world-size", "4"])
    assert (r.global_rank, r.local_rank, r.world_size, r.source) == (3, 1, 4, "argv")
    assert rk.from_argv(["python", "x.py"]) is None
    text = "(Worker_DP1_TP2 pid=4242) INFO 05-12 ...\n(EngineCore_DP0 pid=17) WARNING ...\n"
    assert rk.log_titles(text) == {4242: "Worker_DP1_TP2", 17: "EngineCore_DP0"}


def _info(pid, ppid, cmdline, env=None, comm="python", **kw):
    return ProcInfo(pid=pid, ppid=ppid, comm=comm, cmdline=cmdline, exe="/usr/bin/python3", create_time=100.0 + pid,
                    status="sleeping", env=env, parent_comm="python", parent_create_time=50.0, **kw)


def test_process_rows_trust_order_and_roles():
    infos = [
        _info(10, 1, ["/usr/bin/python3", "/usr/bin/vllm", "serve", "m", "-tp", "4"], env={"SLURM_PROCID": "0"}),
        _info(11, 10, ["VLLM::EngineCore_DP1"], env=None, env_error="permission denied"),
        # setproctitle blanked environ: the title is all there is
        _info(12, 11, ["VLLM::Worker_DP1_TP2"], env={}),
        # env beats the title when both exist
        _info(13, 11, ["VLLM::Worker_DP1_TP3"], env={"RANK": "99", "WORLD_SIZE": "100"}),
        _info(20, 1, ["/usr/bin/python3", "-m", "torch.distributed.run", "--nproc-per-node", "2", "t.py"],
              env={"SLURM_PROCID": "3", "NCCL_DEBUG": "WARN"}),
        _info(21, 20, ["/usr/bin/python3", "-u", "t.py", "--rank", "7"], env={"RANK": "1", "LOCAL_RANK": "1"}),
        _info(22, 20, ["/usr/bin/python3", "-u", "t.py", "--rank", "0"], env=None),
    ]
    rows, notes = process_rows(infos, "h", {12: [2]})
    by = {r["pid"]: r for r in rows}
    assert (by[10]["role"], by[10]["global_rank"]) == ("api", None)  # an API server's Slurm task id is no rank
    assert (by[11]["role"], by[11]["dp_rank"], by[11]["global_rank"]) == ("engine", 1, None)  # its workers hold ranks
    assert (by[12]["global_rank"], by[12]["tp_rank"], by[12]["dp_rank"], by[12]["rank_source"]) == (6, 2, 1, "title")
    assert by[12]["gpu_indices"] == [2]
    assert (by[13]["global_rank"], by[13]["rank_source"], by[13]["tp_rank"]) == (99, "env", 3)
    assert (by[20]["role"], by[20]["global_rank"]) == ("launcher", None)
    assert (by[21]["global_rank"], by[21]["local_rank"], by[21]["rank_source"]) == (1, 1, "env")
    assert (by[22]["global_rank"], by[22]["rank_source"], by[22]["role"]) == (0, "argv", "worker")
    assert by[22]["env"] is None and any("pid 22" in n and "unreadable" in n for n in notes)
    assert dict(by[20]["env"]) == {"NCCL_DEBUG": "WARN", "SLURM_PROCID": "3"}
    table_from_rows("processes", rows)  # rows fit the schema


def test_engine_without_workers_is_its_own_rank():
    # TP=1, DP=2: each EngineCore runs the model in-process, so its DP index is its rank.
    rows, _ = process_rows([_info(5, 1, ["VLLM::EngineCore_DP0"]), _info(6, 1, ["VLLM::EngineCore_DP1"])], "h")
    assert [(r["global_rank"], r["rank_source"]) for r in rows] == [(0, "title"), (1, "title")]


def test_parent_alive_flags_orphans():
    base = dict(ppid=1, create_time=200.0, parent_comm="process_api", parent_create_time=1.0)
    assert parent_alive(ProcInfo(pid=5, **base), "worker") is False
    ok = dict(ppid=40, create_time=200.0, parent_comm="python", parent_create_time=100.0)
    assert parent_alive(ProcInfo(pid=5, **ok), "worker") is True
    # parent pid reused by a younger process: the launcher is gone
    reused = dict(ppid=40, create_time=200.0, parent_comm="python", parent_create_time=300.0)
    assert parent_alive(ProcInfo(pid=5, **reused), "worker") is False
    # parent vanished between reads
    assert parent_alive(ProcInfo(pid=5, ppid=40, create_time=200.0), "worker") is False
    # a worker re-attached to a subreaper
    tini = dict(ppid=7, create_time=200.0, parent_comm="tini", parent_create_time=10.0)
    assert parent_alive(ProcInfo(pid=5, **tini), "worker") is False
    assert parent_alive(ProcInfo(pid=5, **tini), "launcher") is True


def test_log_prefixes_fill_rankless_processes():
    rows, _ = process_rows([_info(30, 1, ["python3", "w.py"], env={}), _info(31, 1, ["python3", "w.py"], env={})], "h")
    assert all(r["global_rank"] is None for r in rows)
    assert apply_log_titles(rows, {30: "EngineCore_DP0"}) == 0  # an engine's prefix is no rank
    filled = apply_log_titles(rows, {30: "Worker_TP0", 31: "Worker_TP1"})
    assert filled == 2
    assert [(r["global_rank"], r["tp_rank"], r["rank_source"]) for r in rows] == [(0, 0, "log"), (1, 1, "log")]


def test_trace_ranks_override_with_a_note():
    rows, _ = process_rows([_info(40, 1, ["python3"], env={"RANK": "2"}), _info(41, 1, ["python3"], env={})], "h")
    coll = pa.table({"pid": [40, 40, 41], "rank": [3, 3, 1]})
    notes = apply_trace_ranks(rows, coll)
    assert [(r["global_rank"], r["rank_source"]) for r in rows] == [(3, "trace"), (1, "trace")]
    assert len(notes) == 1 and "pid 40" in notes[0] and "env said 2" in notes[0]
