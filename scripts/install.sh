#!/usr/bin/env bash
# Install ecr-gateway into ./.venv from the lock file (Debian 12 or any machine with Python
# 3.11+). Re-running is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

lock=${1:-requirements.lock}
if ! python3 -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv python3-pip >/dev/null
  else
    echo "install.sh: needs Python >= 3.11 with venv (apt-get install python3-venv)" >&2
    exit 1
  fi
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
# Every download is checked against a lock's hashes (pip's hash-checking mode), pip and the
# build backend included: the gateway itself builds with the locked setuptools, not a fresh one.
.venv/bin/python -m pip install -q --require-hashes -r requirements-build.lock
.venv/bin/python -m pip install -q --require-hashes -r "$lock"
# (setuptools warns about editable installs on every run; shown only when the build fails)
built=$(.venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1) || { echo "$built" >&2; exit 1; }
echo "installed: $(.venv/bin/ecr-gateway --help >/dev/null && echo .venv/bin/ecr-gateway)"
