#!/usr/bin/env bash
# Installs everything the test suite needs on a fresh machine: hangdoc with its test extra (pytest, torch CPU)
# and ray extra (the Ray fan-out test), and a headless Chromium for the HTML report check.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -e ".[test,ray]"
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null && ! command -v google-chrome >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "tests/setup.sh: no Chromium and no root apt-get here: the HTML browser test will be skipped" >&2
  fi
fi
