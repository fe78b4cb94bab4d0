#!/usr/bin/env bash
# Install the test needs, then lint, type-check and run the whole suite (real dockerd,
# skopeo and containerd included). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
bash scripts/audit-deps.sh  # pip-audit of the lock files (says so when it cannot be done)
.venv/bin/ruff check gateway ecr_emulator ecr_model tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q -ra "$@"
