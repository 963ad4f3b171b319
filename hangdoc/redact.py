"""Secrets out of what gets shared: an environment allow-list, and credentials blanked in argv and free text.

Bundles and report archives get attached to bug reports, so anything that looks like a credential is replaced
by REDACTED, by its name (HF_TOKEN, VLLM_API_KEY, --api-key), by its shape (hf_..., sk-..., JWTs, long
base64), or because it is the value of a secret variable of the job seen elsewhere (a token passed on in argv
or printed in a log). Capture redacts the whole bundle before writing it; `hangdoc report` again on everything
it packs (logs, notes, manifests).
"""
from __future__ import annotations

import json
import re
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import pyarrow as pa

if TYPE_CHECKING:
    from hangdoc.bundle import Bundle

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

# Token prefixes: Hugging Face, OpenAI-style API keys, GitHub, GitLab, Slack. A value that starts with one is a
# token at any length; in free text a prefixed word is one when it has a digit or a capital after the prefix
# (so hf_token or sk-learn in a sentence stay).
_PREFIX = r"(?:hf_|sk-|gh[pousr]_|github_pat_|glpat-|xox[abposr]-)"
_PREFIXED = re.compile(_PREFIX + r"[\w.-]+")
_SECRET_VALUE = re.compile(
    r"(?<![\w-])" + _PREFIX + r"(?=[\w-]*[A-Z0-9])[\w-]+"
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
    """Blank token-shaped substrings, URL passwords and values that are a prefixed token or one long
    base64-ish blob."""
    if _looks_like_base64_secret(value) or _PREFIXED.fullmatch(value.strip()):
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
    if m.re is not _BEARER and not secret_name(m.group("name")) and not _PREFIXED.fullmatch(m.group("value")):
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


# --- values known to be secret -------------------------------------------------------------------------
MIN_SECRET_VALUE = 6  # shorter values of secret-named variables (1, true, off) are settings, not secrets


def secret_values(envs: Iterable[Mapping[str, str]]) -> set[str]:
    """The values of secret-named variables (HF_TOKEN, DB_PASSWORD...) in these environments: blanked
    wherever they reappear, in argv, logs or other variables."""
    return {v.strip() for env in envs for k, v in env.items() if secret_name(k) and len(v.strip()) >= MIN_SECRET_VALUE}


class Redactor:
    """redact_text / redact_argv / redact_env, first blanking every occurrence of the known secret values."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        values = sorted({v for v in known if len(v) >= MIN_SECRET_VALUE}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, values))) if values else None

    def known(self, text: str) -> str:
        return self._known.sub(REDACTED, text) if self._known is not None and text else text

    def text(self, text: str) -> str:
        return redact_text(self.known(text))

    def argv(self, argv: Sequence[str]) -> list[str]:
        return redact_argv([self.known(a) for a in argv])

    def env_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
        return list(redact_env({k: self.known(v) for k, v in pairs}).items())


# --- a whole bundle ------------------------------------------------------------------------------------
def _columns(r: Redactor) -> dict[str, dict[str, Callable[[Any], Any]]]:
    return {
        "processes": {"cmdline": r.argv, "env": r.env_pairs, "title": r.text, "stdout_path": r.text,
                      "stderr_path": r.text},
        "log_events": {"text": r.text, "context": lambda lines: [r.text(x) for x in lines]},
        "py_frames": {"thread_name": r.text},
    }


def _map_strings(value: Any, r: Redactor) -> Any:
    if isinstance(value, str):
        return r.text(value)
    if isinstance(value, list):
        return [_map_strings(v, r) for v in value]
    if isinstance(value, dict):
        return {k: (r.argv(v) if k == "command" and isinstance(v, list) and all(isinstance(a, str) for a in v)
                    else _map_strings(v, r)) for k, v in value.items()}
    return value


def _redact_column(table: pa.Table, column: str, fn: Callable[[Any], Any]) -> tuple[pa.Table, int]:
    """Apply fn to each non-null value of a column; returns the table and how many values changed."""
    if column not in table.column_names or not table.num_rows:
        return table, 0
    before = table.column(column).to_pylist()
    after = [None if v is None else fn(v) for v in before]
    changed = sum(1 for a, b in zip(after, before) if a != b)
    if not changed:
        return table, 0
    typ = table.schema.field(column).type
    return table.set_column(table.column_names.index(column), column, pa.array(after, typ)), changed


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for k in sorted(value) for s in _strings(value[k])]
    return []


def redact_bundle(bundle: "Bundle", known: Iterable[str] = ()) -> Counter:
    """Blank secrets in a bundle in place (its tables' free-text columns, argv, env and the manifest), also
    every occurrence of the `known` secret values; returns how many values changed per 'table.column' (and
    'manifest')."""
    r = Redactor(known)
    counts: Counter = Counter()
    for name, columns in _columns(r).items():
        if name not in bundle.tables:
            continue
        table = bundle.tables[name]
        for column, fn in columns.items():
            table, n = _redact_column(table, column, fn)
            if n:
                counts[f"{name}.{column}"] += n
        bundle.tables[name] = table
    before = json.dumps(bundle.manifest, sort_keys=True, default=str)
    manifest = _map_strings(json.loads(before), r)
    after = json.dumps(manifest, sort_keys=True, default=str)
    if after != before:
        changed = sum(1 for a, b in zip(_strings(json.loads(before)), _strings(manifest)) if a != b)
        counts["manifest"] += max(changed, 1)
        bundle.manifest.clear()
        bundle.manifest.update(manifest)
    return counts
