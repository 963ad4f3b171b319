"""vLLM's own GroupCoordinator (real vLLM, CPU build, gloo) traced through the start-up hook.

Runs where vLLM imports: in this interpreter, or in the one HANGDOC_VLLM_PYTHON names (vLLM's CPU wheel
pins an exact torch, so it often lives in its own virtual environment made with --system-site-packages,
which sees hangdoc and its start-up hook). Skipped elsewhere; the stand-in tests in
tests/unit/test_tracer_coordinators.py cover the wrappers without vLLM."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tracer_jobs import TIMEOUT_S, env, free_port, hangdoc_exe, rows, run_job

pytestmark = pytest.mark.integration

VLLM_PYTHON = os.environ.get("HANGDOC_VLLM_PYTHON") or (sys.executable if importlib.util.find_spec("vllm") else None)

SCRIPT = textwrap.dedent("""
    import sys, torch
    import torch.multiprocessing as mp

    def worker(rank, port):
        from vllm.config import VllmConfig, set_current_vllm_config
        from vllm.distributed.parallel_state import (get_tp_group, init_distributed_environment,
                                                     initialize_model_parallel)
        with set_current_vllm_config(VllmConfig()):
            init_distributed_environment(world_size=2, rank=rank, local_rank=rank, backend="gloo",
                                         distributed_init_method=f"tcp://127.0.0.1:{port}")
            initialize_model_parallel(tensor_model_parallel_size=2)
            tp = get_tp_group()
            tp.all_reduce(torch.ones(15, 8, dtype=torch.bfloat16))
            tp.all_gather(torch.ones(3, 4), 0)
            tp.broadcast(torch.zeros(5), src=0)
            if rank == 0:
                tp.send(torch.ones(6))
            else:
                tp.recv(torch.Size([6]), torch.float32)
        print("done", rank, flush=True)

    if __name__ == "__main__":
        mp.spawn(worker, args=(int(sys.argv[1]),), nprocs=2)
""")


@pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not importable (set HANGDOC_VLLM_PYTHON to a Python with vLLM)")
def test_vllm_group_coordinator_calls_are_recorded(tmp_path: Path) -> None:
    (tmp_path / "vdist.py").write_text(SCRIPT)
    trace_dir = tmp_path / "trace"
    rc, out = run_job([hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", VLLM_PYTHON, "vdist.py",
                       str(free_port())], tmp_path, timeout=TIMEOUT_S * 2)
    assert rc == 0, out[-3000:]
    recorded = rows(trace_dir)
    tp = [(r["rank"], r["group"], r["seq"], r["op"], r["dtype"], r["in_shapes"]) for r in recorded
          if r["group"].startswith("tp:")]
    for rank in (0, 1):
        assert [t[1:] for t in tp if t[0] == rank] == [
            ("tp:0", 1, "all_reduce", "bfloat16", [[15, 8]]),
            ("tp:0", 2, "all_gather", "float32", [[3, 4]]),
            ("tp:0", 3, "broadcast", "float32", [[5]]),
            ("tp:0/p2p:0-1", 1, "send" if rank == 0 else "recv", "float32", [[6]]),
        ]
    coordinator = next(r for r in recorded if r["group"] == "tp:0")
    assert coordinator["group_desc"] == "tp:0" and coordinator["group_ranks"] == [0, 1]
    assert "GroupCoordinator" in coordinator["call_site"]


MODEL = textwrap.dedent("""
    import sys
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i + 3 for i in range(509)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(sys.argv[1])
    LlamaForCausalLM(LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=256)).save_pretrained(sys.argv[1])
""")

GENERATE = textwrap.dedent("""
    import sys
    from vllm import LLM, SamplingParams

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], tensor_parallel_size=2, enforce_eager=True, dtype="float32",
                  max_model_len=128, max_num_seqs=4, max_num_batched_tokens=128)
        for out in llm.generate(["w1 w2 w3", "w4 w5"], SamplingParams(max_tokens=4, temperature=0)):
            print("OUT", out.outputs[0].token_ids, flush=True)
""")


@pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM is not importable (set HANGDOC_VLLM_PYTHON to a Python with vLLM)")
def test_vllm_tp2_generation_on_a_tiny_local_model(tmp_path: Path) -> None:
    """`hangdoc run -- <vLLM offline generation, TP=2>` on a randomly initialised 2-layer Llama built here:
    both workers' tensor-parallel all-reduces (through vLLM's CPU shared-memory path, invisible to torch)
    are recorded on tp:0 in the same order."""
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "gen.py").write_text(GENERATE)
    made = subprocess.run([VLLM_PYTHON, "model.py", str(tmp_path / "tiny")], cwd=tmp_path, env=env(),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    assert made.returncode == 0, made.stderr[-3000:]
    trace_dir = tmp_path / "trace"
    rc, out = run_job([hangdoc_exe(), "run", "--trace-dir", str(trace_dir), "--", VLLM_PYTHON, "gen.py",
                       str(tmp_path / "tiny")], tmp_path, timeout=570, VLLM_CPU_KVCACHE_SPACE="1",
                      VLLM_CPU_OMP_THREADS_BIND="nobind")
    assert out.count("OUT") == 2, out[-5000:]
    tp = [r for r in rows(trace_dir) if r["group"] == "tp:0"]
    per_rank = {rank: [(r["seq"], r["op"], r["in_shapes"]) for r in tp if r["rank"] == rank] for rank in (0, 1)}
    assert per_rank[0] == per_rank[1] and len(per_rank[0]) >= 10
    assert {op for _, op, _ in per_rank[0]} >= {"all_reduce"}
    assert [seq for seq, _, _ in per_rank[0]] == list(range(1, len(per_rank[0]) + 1))
