"""Secrets out of what gets shared: an environment allow-list, and credentials blanked in argv and free text.

Bundles and report archives get attached to bug reports, so anything that looks like a credential is replaced
by REDACTED, by its name (HF_TOKEN, VLLM_API_KEY, --api-key) or by its shape (hf_..., sk-..., JWTs, long
base64). Capture uses it on what it reads; `hangdoc report` again on everything it packs (logs, notes, manifests).
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

REDACTED = "<redacted>"

ENV_NAMES = frozenset(
    {
        "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "ROLE_RANK",
        "ROLE_WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID",
        "MPI_LOCALNRANKS", "OMP_NUM_THREADS", "HOSTNAME", "PYTHONFAULTHANDLER",
    }
)
ENV_PREFIXES = (
    "NCCL_", "VLLM_", "TORCH_", "TORCHELASTIC_", "PYTORCH_", "CUDA_", "NVIDIA_", "SLURM_", "OMPI_", "PMIX_",
    "SGLANG_", "TRTLLM_", "TLLM_", "GLOO_", "UCX_", "NIXL_", "NVSHMEM_", "HANGDOC_",
)

# Name parts that mark a secret. Whole '_'/'-' separated words, so TOKENIZER or --max-num-batched-tokens
# stay readable.
_SECRET_WORDS = {"TOKEN", "KEY", "APIKEY", "SECRET", "SECRETS", "PASSWORD", "PASSWD", "PASS", "AUTH",
                 "CREDENTIAL", "CREDENTIALS", "PRIVATE", "COOKIE", "SIGNATURE"}

_SECRET_VALUE = re.compile(
    r"hf_[A-Za-z0-9]{20,}"  # Hugging Face
    r"|sk-[A-Za-z0-9_-]{16,}"  # OpenAI-style API keys
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_\w{20,}"
    r"|glpat-[\w-]{20,}"
    r"|xox[abposr]-[\w-]{10,}"  # Slack
    r"|AKIA[0-9A-Z]{16}"  # AWS access key id
    r"|eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]*"  # JWT
)
_URL_PASSWORD = re.compile(r"(\w+://[^/\s:@]+:)([^/\s@]+)(@)")
_BASE64ISH = re.compile(r"[A-Za-z0-9+/_=-]{32,}")


def secret_name(name: str) -> bool:
    """HF_TOKEN, VLLM_API_KEY, --api-key, db_password: yes. TOKENIZERS_PARALLELISM, --tokenizer: no."""
    words = re.split(r"[_\-.\s]+", name.strip("-").upper())
    return any(w in _SECRET_WORDS for w in words) or "PASSWORD" in name.upper() or "SECRET" in name.upper()


def _looks_like_base64_secret(value: str) -> bool:
    return (
        _BASE64ISH.fullmatch(value) is not None
        and not value.startswith("/")
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(c.isdigit() for c in value)
    )


def redact_value(value: str) -> str:
    """Blank token-shaped substrings, URL passwords and values that are one long base64-ish blob."""
    if _looks_like_base64_secret(value):
        return REDACTED
    value = _SECRET_VALUE.sub(REDACTED, value)
    return _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)


def allowed_env_name(name: str) -> bool:
    return name in ENV_NAMES or name.startswith(ENV_PREFIXES)


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    """The allow-listed variables only, secrets redacted."""
    out = {}
    for name in sorted(env):
        if allowed_env_name(name):
            out[name] = REDACTED if secret_name(name) else redact_value(env[name])
    return out


def redact_argv(argv: Sequence[str]) -> list[str]:
    """argv with the value of secret-named flags (--api-key X, --hf-token=X) and token-shaped words blanked."""
    out: list[str] = []
    blank_next = False
    for arg in argv:
        if blank_next and not arg.startswith("-"):
            out.append(REDACTED)
            blank_next = False
            continue
        blank_next = False
        if arg.startswith("-"):
            flag, eq, value = arg.partition("=")
            if secret_name(flag):
                if eq:
                    out.append(f"{flag}={REDACTED}")
                else:
                    out.append(arg)
                    blank_next = True
                continue
        out.append(redact_value(arg))
    return out



# In free text (log lines, notes): NAME=value, "name": "value", --flag value, Authorization: Bearer value.
_ASSIGNMENT = re.compile(r"""(?<![\w.-])(?P<name>-{0,2}[A-Za-z_][\w.-]*)(?P<sep>['"]?\s*[=:]\s*['"]?)(?P<value>[^\s'",;}]+)""")
_FLAG = re.compile(r"(?<![\w.-])(?P<name>--?[A-Za-z][\w-]*)(?P<sep>\s+)(?P<value>[^\s\-][^\s]*)")
_BEARER = re.compile(r"\b(?P<name>Bearer|Basic)(?P<sep>\s+)(?P<value>[A-Za-z0-9._~+/=-]{8,})")


def _blank(m: re.Match[str]) -> str:
    if m.re is not _BEARER and not secret_name(m.group("name")):
        return m.group(0)
    return m.group("name") + m.group("sep") + REDACTED


def redact_text(text: str) -> str:
    """A log line or note with credentials blanked: values of secret-named assignments and flags, bearer
    tokens, token-shaped words and URL passwords. Ordinary log text (tokens/s, max_num_batched_tokens=8192)
    stays as it was."""
    if not text:
        return text
    for pattern in (_BEARER, _ASSIGNMENT, _FLAG):
        text = pattern.sub(_blank, text)
    words = text.split(" ")
    for i, word in enumerate(words):
        core = word.strip("'\",;:()[]{}<>")
        if core and _looks_like_base64_secret(core):
            words[i] = word.replace(core, REDACTED)
    return redact_value(" ".join(words))
