"""The signature catalogue on real log lines of vLLM, SGLang, TensorRT-LLM, PyTorch and NCCL.

Each line below is in the exact wording and prefix layout those projects print; each must match its signature
and no other, and the named groups the analysis passes read must come out right.
"""
from __future__ import annotations

import pytest

from hangdoc.signatures import load_catalogue, match_line

REAL = [
    # (signature, line, fields expected from the match)
    ("vllm_shm_broadcast_timeout",
     "(EngineCore pid=395) INFO 07-12 02:35:01 [shm_broadcast.py:705] No available shared memory broadcast block found "
     "in 60 seconds. This typically happens when some processes are hanging or doing some time-consuming work (e.g. "
     "compilation, weight/kv cache quantization).", {"seconds": "60"}),
    ("vllm_rpc_timeout", "TimeoutError: RPC call to sample_tokens timed out.", {"method": "sample_tokens"}),
    ("vllm_engine_dead", "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace "
     "(above) for the root cause.", {}),
    ("vllm_worker_died", "(EngineCore_DP0 pid=265) ERROR 02-27 10:31:24 [multiproc_executor.py:231] Worker proc "
     "VllmWorker-0 died unexpectedly, shutting down executor.", {"worker": "VllmWorker-0"}),
    ("vllm_worker_died", "ERROR 06-11 08:02:10 [ray_executor_v2.py:464] RayWorkerProc rank=[3] died unexpectedly, "
     "shutting down executor.", {"worker_rank": "3"}),
    ("vllm_engine_core_died", "(APIServer pid=6101) ERROR 03-06 12:01:23 [core_client.py:596] Engine core proc "
     "EngineCore_DP0 died unexpectedly, shutting down client.", {"engine": "EngineCore_DP0"}),
    ("vllm_worker_shutting_down", "(Worker_TP0 pid=193108) INFO 10-22 17:38:02 [multiproc_executor.py:599] WorkerProc "
     "shutting down.", {}),
    ("vllm_parent_exited", "(Worker_TP0 pid=45252) INFO 08-25 17:51:32 [multiproc_executor.py:793] Parent process "
     "exited, terminating worker queues", {}),
    ("vllm_parent_exited", "(Worker_TP1 pid=1163) INFO 10-10 11:32:51 [multiproc_executor.py:558] Parent process "
     "exited, terminating worker", {}),
    ("vllm_worker_init_failed", "(EngineCore_DP0 pid=16449) ERROR 09-30 04:44:55 [core.py:708] Exception: WorkerProc "
     "initialization failed due to an exception in a background process. See stack trace for root cause.", {}),
    ("vllm_engine_init_failed", "(APIServer pid=1) RuntimeError: Engine core initialization failed. See root cause "
     "above. Failed core proc(s): {}", {}),
    ("servers_failed_to_start", "Failed to start server rank 0: Server exited unexpectedly", {"server": "0"}),
    ("servers_failed_to_start", "Exception: Servers failed to start", {}),
    ("broken_pipe", "(Worker_DP0_TP0 pid=912) ERROR 03-06 12:01:22 [multiproc_executor.py:860] BrokenPipeError: "
     "[Errno 32] Broken pipe", {}),
    ("c10d_watchdog_timeout", "[rank0]:[E1218 20:27:21.426415540 ProcessGroupNCCL.cpp:629] [Rank 0] Watchdog caught "
     "collective operation timeout: WorkNCCL(SeqNum=1, OpType=BROADCAST, NumelIn=131072000, NumelOut=131072000, "
     "Timeout(ms)=600000) ran for 600081 milliseconds before timing out.",
     {"seq": "1", "op": "BROADCAST", "numel_in": "131072000", "timeout_ms": "600000"}),
    ("c10d_pg_status", "[rank0]:[E606 09:09:08.169193939 ProcessGroupNCCL.cpp:2395] [PG ID 0 PG GUID 0(default_pg) "
     "Rank 0]  failure detected by watchdog at work sequence id: 1 PG status: last enqueued work: 1, last completed "
     "work: -1", {"seq": "1", "enqueued": "1", "completed": "-1"}),
    ("c10d_dump_signal", "[rank0]:[E810 03:04:11.562692551 ProcessGroupNCCL.cpp:1858] [PG ID 0 PG GUID 0(default_pg) "
     "Rank 0] Received a dump signal due to a collective timeout from  rank 1 and we will try our best to dump the "
     "debug info.", {"worker_rank": "1"}),  # about rank 1's timeout, not its printer
    ("c10d_dump_signal", "[rank0]:[E327 17:04:16.182548526 ProcessGroupNCCL.cpp:1346] [PG 0 Rank 0] Received a timeout "
     "signal from this local rank and will start to dump the debug info.", {}),  # the 2.3 wording
    ("c10d_watchdog_stuck", "[rank2]:[E1229 20:29:13.091296956 ProcessGroupNCCL.cpp:1484] [PG ID 0 PG GUID "
     "0(default_pg) Rank 2] ProcessGroupNCCL's watchdog got stuck for 480 seconds without making progress in "
     "monitoring enqueued collectives.", {"seconds": "480"}),
    ("gloo_timeout", "[rank4]: RuntimeError: [/pytorch/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:129] "
     "Timed out waiting 1800000ms for send operation to complete", {"timeout_ms": "1800000", "op": "send"}),
    ("gloo_peer_gone", "[rank0]: RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] "
     "Connection closed by peer [127.0.0.1]:38825. This is typically caused by a remote worker crashing. Check the logs "
     "of the remote worker before reporting an error.", {"peer": "127.0.0.1", "port": "38825"}),
    ("gloo_peer_gone", "[rank1]: RuntimeError: [/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] "
     "Read error [127.0.0.1]:38825: Connection reset by peer. This is typically caused by a remote worker hanging or "
     "bugs in the application.", {"peer": "127.0.0.1"}),
    ("nccl_warn", "node-15:3408431:3408790 [2] NCCL WARN Call to ibv_reg_mr failed with error Cannot allocate memory",
     {"message": "Call to ibv_reg_mr failed with error Cannot allocate memory"}),
    ("cuda_oom", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity "
     "of 79.10 GiB of which 1.06 GiB is free.", {"tried": "2.00 GiB"}),
    ("cuda_oom", "RuntimeError: CUDA error: out of memory", {}),
    ("cuda_error", "RuntimeError: CUDA error: an illegal memory access was encountered",
     {"error": "an illegal memory access was encountered"}),
    ("sglang_watchdog_timeout", "[2025-04-03 20:06:34 DP1 TP0] Watchdog timeout (self.watchdog_timeout=300)",
     {"seconds": "300"}),
    ("sglang_watchdog_timeout", "[2026-01-09 11:20:40 TP3] Scheduler watchdog timeout (self.watchdog_timeout=300, "
     "self.soft=False)", {"component": "Scheduler", "seconds": "300"}),
    ("sglang_child_failed", "Received sigquit from a child process. It usually means the child failed.", {}),
    ("trtllm_hang_detected", "[04/18/2026-14:07:12] [TRT-LLM] [RANK 1] [E] Hang detected after 300 seconds.",
     {"seconds": "300"}),
    ("torchrun_child_failed", "E0101 12:00:00.123000 140 torch/distributed/elastic/multiprocessing/api.py:869] failed "
     "(exitcode: -9) local_rank: 3 (pid: 12345) of binary: /usr/bin/python3",
     {"exitcode": "-9", "local_rank": "3", "worker_pid": "12345"}),  # a local rank: not about global rank 3
    ("fatal_signal", "  traceback : Signal 6 (SIGABRT) received by PID 3346290", {"signal": "SIGABRT", "signal_no": "6"}),
    ("nccl_connection_closed", "node-3:1203:1290 [1] misc/socket.cc:50 NCCL WARN socketProgress: Connection closed by "
     "localRank 2", {"local_rank": "2"}),
    ("nixl_expired_kv_blocks", "(EngineCore_DP0 pid=3747544) WARNING 09-24 16:35:21 [nixl_connector.py:1048] Releasing "
     "expired KV blocks for request cmpl-3da205a6-1c3c-41b5-aeaa-b8421e81fd5c-0 which were retrieved by 0 decode "
     "worker(s) within 120 seconds.",
     {"request": "cmpl-3da205a6-1c3c-41b5-aeaa-b8421e81fd5c-0", "consumers": "0", "seconds": "120"}),
    ("nixl_expired_kv_blocks", "WARNING 11-02 10:00:00 [worker.py:2210] Releasing expired KV blocks for request "
     "3_cmpl-fb4bc0e0-0 which were retrieved by 0 remote worker(s) before lease expired.",
     {"request": "3_cmpl-fb4bc0e0-0", "consumers": "0"}),
    ("nixl_unrecognized_request", "ERROR 07-01 12:00:05 [nixl_connector.py:1180] Potentially invalid KV blocks for "
     "unrecognized request cmpl-456-1 were retrieved by a decode worker. They may have expired.",
     {"request": "cmpl-456-1"}),
    ("vllm_kv_cache_usage", "(EngineCore_DP0 pid=3747544) INFO 05-24 16:12:10 [loggers.py:123] Engine 000: Avg prompt "
     "throughput: 0.0 tokens/s, Avg generation throughput: 0.0 tokens/s, Running: 0 reqs, Waiting: 96 reqs, GPU KV "
     "cache usage: 99.8%, Prefix cache hit rate: 87.5%", {"percent": "99.8"}),
]

BENIGN = [
    "(Worker_TP0 pid=48211) INFO 04-15 03:12:40 [gpu_model_runner.py:2602] Model loading took 3.9 GiB and 61.1 seconds",
    "Loading safetensors checkpoint shards: 100% Completed | 4/4 [00:02<00:00,  1.62it/s]",
    "node-15:3408431:3408790 [2] NCCL INFO Channel 00/24 :    0   1   2   3",
    "[04/18/2026-14:02:11] [TRT-LLM] [RANK 0] [I] Run warmup with 2 tokens, include 0 generation tokens",
    "[2025-04-03 20:00:01 DP0 TP0] Prefill batch. #new-seq: 1, #new-token: 7, #cached-token: 0",
    "(APIServer pid=1) INFO:     Application startup complete.",
]


@pytest.mark.parametrize("sig_id,line,fields", REAL, ids=[f"{s}-{i}" for i, (s, _, _) in enumerate(REAL)])
def test_real_line_matches_its_signature_only_with_its_fields(sig_id: str, line: str, fields: dict[str, str]) -> None:
    hits = match_line(line)
    assert [s.id for s in hits] == [sig_id]
    m = hits[0].search(line)
    got = {k: v for k, v in m.groupdict().items() if v is not None}
    assert {k: got.get(k) for k in fields} == fields


@pytest.mark.parametrize("line", BENIGN)
def test_ordinary_lines_match_nothing(line: str) -> None:
    assert match_line(line) == []


def test_every_signature_is_exercised_and_documented() -> None:
    catalogue = load_catalogue()
    assert {s.id for s in catalogue} == {sig for sig, _, _ in REAL}
    for s in catalogue:
        assert s.meaning and s.action, s.id
    assert {s.id for s in catalogue if s.phase == "startup"} >= {"vllm_worker_init_failed", "servers_failed_to_start"}


def test_docs_list_every_signature() -> None:
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "signatures.md").read_text()
    missing = [s.id for s in load_catalogue() if f"`{s.id}`" not in docs]
    assert missing == []
