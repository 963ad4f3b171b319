"""Env allow-list and secret redaction: what a bundle or report archive attached to a bug report may carry."""
from __future__ import annotations

from hangdoc.redact import REDACTED, redact_argv, redact_env, redact_text, redact_value, secret_name


def test_env_keeps_allow_listed_only_and_redacts_by_name():
    env = {
        "RANK": "3",
        "CUDA_VISIBLE_DEVICES": "0,1,2,3",
        "NCCL_SOCKET_IFNAME": "eth0",
        "NCCL_IB_HCA": "mlx5_0,mlx5_1",
        "MASTER_ADDR": "10.0.0.1",
        "VLLM_API_KEY": "plain-looking",
        "SLURM_JOB_PASSWORD": "x",
        "TORCH_NCCL_TRACE_BUFFER_SIZE": "2000",
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz",  # not allow-listed at all
        "AWS_SECRET_ACCESS_KEY": "abc",
        "HOME": "/root",
        "PATH": "/usr/bin",
    }
    out = redact_env(env)
    assert set(out) == {"RANK", "CUDA_VISIBLE_DEVICES", "NCCL_SOCKET_IFNAME", "NCCL_IB_HCA", "MASTER_ADDR",
                        "VLLM_API_KEY", "SLURM_JOB_PASSWORD", "TORCH_NCCL_TRACE_BUFFER_SIZE"}
    assert out["VLLM_API_KEY"] == REDACTED and out["SLURM_JOB_PASSWORD"] == REDACTED
    assert out["NCCL_IB_HCA"] == "mlx5_0,mlx5_1" and out["TORCH_NCCL_TRACE_BUFFER_SIZE"] == "2000"


def test_values_that_look_like_secrets():
    assert redact_value("hf_" + "a1B2" * 8) == REDACTED
    assert redact_value("Bearer sk-proj-abcdefghijklmnop1234") == f"Bearer {REDACTED}"
    assert redact_value("https://user:hunter2@example.com/x") == f"https://user:{REDACTED}@example.com/x"
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
    assert redact_value(jwt) == REDACTED
    assert redact_value("QWxhZGRpbjpvcGVuIHNlc2FtZQ0aLongB64Value99") == REDACTED
    # ordinary values survive
    for value in ("eth0", "0,1,2,3", "/usr/local/cuda-12.4/lib64", "INFO", "10.0.0.1", "ghost",
                  "6a3f0b9e1c2d4e5f8a7b6c5d4e3f2a1b", "/scratch/user123/nccl_debug_logs/run1abcdefXYZ"):
        assert redact_value(value) == value


def test_secret_names_are_whole_words():
    for name in ("HF_TOKEN", "VLLM_API_KEY", "--api-key", "--hf-token", "DB_PASSWORD", "NCCL_SECRET", "X_AUTH"):
        assert secret_name(name), name
    for name in ("TOKENIZERS_PARALLELISM", "--tokenizer", "--max-num-batched-tokens", "NCCL_KEYS_PER_RANK",
                 "--tokenizer-mode", "MASTER_PORT"):
        assert not secret_name(name), name


def test_argv_flags_and_values():
    argv = ["vllm", "serve", "m", "--api-key", "abc123", "--hf-token=hf_zzz", "--tokenizer", "meta/llama",
            "--max-num-batched-tokens", "8192", "--extra", "sk-abcdefghijklmnopqrstuv"]
    assert redact_argv(argv) == ["vllm", "serve", "m", "--api-key", REDACTED, f"--hf-token={REDACTED}",
                                 "--tokenizer", "meta/llama", "--max-num-batched-tokens", "8192", "--extra", REDACTED]
    # a secret-named flag followed by another flag (a boolean switch) redacts nothing
    assert redact_argv(["x", "--use-auth", "--port", "8"]) == ["x", "--use-auth", "--port", "8"]


def test_free_text_blanks_credentials_and_keeps_log_text():
    cases = {
        "HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz123 started": f"HF_TOKEN={REDACTED} started",
        "vllm serve m --api-key abc123 --port 8000": f"vllm serve m --api-key {REDACTED} --port 8000",
        '{"api_key": "s3cr3t", "model": "x"}': f'{{"api_key": "{REDACTED}", "model": "x"}}',
        "Authorization: Bearer abc.def.ghijkl": f"Authorization: Bearer {REDACTED}",
        "db password: hunter2 (retrying)": f"db password: {REDACTED} (retrying)",
        "fetch https://u:pw@host/x failed": f"fetch https://u:{REDACTED}@host/x failed",
        "token QWxhZGRpbjpvcGVuIHNlc2FtZQ0aLongB64Value99,": f"token {REDACTED},",
    }
    for text, want in cases.items():
        assert redact_text(text) == want, text
    for keep in ("max_num_batched_tokens=8192 tokens/s 55.1", "INFO 03-01 12:30:01 engine.py:99] shm_broadcast timeout",
                 "NCCL_IB_HCA=mlx5_0 NCCL_DEBUG=INFO", "--tokenizer meta/llama --max-model-len 4096",
                 'File "/usr/lib/python3/site-packages/torch/distributed/distributed_c10d.py", line 2606, in all_reduce'):
        assert redact_text(keep) == keep


def test_a_value_with_a_token_prefix_is_a_token_at_any_length():
    for value in ("hf_x", "hf_abc", "sk-1", "ghp_ab", "github_pat_x1", "glpat-a", "xoxb-1"):
        assert redact_value(value) == REDACTED, value
        assert redact_env({"VLLM_ENDPOINT_CRED": value, "NCCL_X": value}) == {"NCCL_X": REDACTED,
                                                                               "VLLM_ENDPOINT_CRED": REDACTED}
    assert redact_argv(["serve", "hf_Ab1"]) == ["serve", REDACTED]
    # in free text: a prefixed word with a digit or capital after the prefix, or the value of any assignment
    assert redact_text("login with hf_Ab1 ok") == f"login with {REDACTED} ok"
    assert redact_text("VLLM_X=hf_abc started") == f"VLLM_X={REDACTED} started"
    for keep in ("read hf_token from disk", "from huggingface_hub import hf_hub_download", "task-1 sk-learn",
                 "ghost_x"):
        assert redact_text(keep) == keep


def test_values_of_secret_variables_are_blanked_wherever_they_reappear():
    from hangdoc.redact import Redactor, secret_values

    value = "plain-looking-password"
    known = secret_values([{"DB_PASSWORD": value, "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1", "RANK": "0",
                            "PATH": "/usr/bin"}])
    assert known == {value}  # short settings of secret-named variables are not secrets
    r = Redactor(known)
    assert r.argv(["python", "train.py", value, f"--db={value}"]) == ["python", "train.py", REDACTED, f"--db={REDACTED}"]
    assert r.text(f"connecting to db as admin/{value} failed") == f"connecting to db as admin/{REDACTED} failed"
    assert r.env_pairs([("NCCL_X", f"x{value}y"), ("RANK", "0")]) == [("NCCL_X", f"x{REDACTED}y"), ("RANK", "0")]
    assert Redactor(["1"]).text("rank 1") == "rank 1"


def test_import_writes_a_redacted_bundle(tmp_path):
    """`hangdoc import` makes a bundle people attach as it is: the secrets in the logs it read stay out of it."""
    from typer.testing import CliRunner

    from hangdoc.bundle import Bundle
    from hangdoc.cli import app

    log = tmp_path / "rank0.log"
    log.write_text(
        "[rank0]:[E1204 10:00:00.000000000 ProcessGroupNCCL.cpp:632] [PG ID 0 PG GUID 0(default_pg) Rank 0] "
        "Watchdog caught collective operation timeout: WorkNCCL(SeqNum=7, OpType=ALLREDUCE, NumelIn=4, "
        "NumelOut=4, Timeout(ms)=600000) ran for 600001 milliseconds before timing out.\n"
        "curl -H 'Authorization: Bearer abcdefghijklmnopqrstuvwxyz012345' https://user:hunter2@example.org/\n"
    )
    out = tmp_path / "bundle"
    r = CliRunner().invoke(app, ["import", str(log), "--output", str(out)])
    assert r.exit_code == 0, r.output
    written = b"".join(p.read_bytes() for p in out.iterdir() if p.is_file())
    assert b"abcdefghijklmnopqrstuvwxyz012345" not in written and b"hunter2" not in written
    assert Bundle.open(out).rows("log_events") > 0
