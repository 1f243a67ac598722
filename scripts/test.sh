#!/usr/bin/env bash
# Install what the tests need and run them: the project (with its test extras) in
# .venv, and the Debian packages the tests start for real (redis-server; chromium
# for the console's browser tests); lint; then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "please install: ${missing[*]}" >&2
    exit 1
  fi
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
# Exactly the locked versions, each checked against its hash; then the project itself.
.venv/bin/python -m pip install -q --require-hashes -r requirements-dev.lock
.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e .
.venv/bin/ruff check bot intents storage notify tests bench wsgi.py
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
