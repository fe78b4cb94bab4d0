#!/usr/bin/env bash
# Install the test needs, then lint, type-check and run the whole suite (real dockerd,
# skopeo and containerd included). This is what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh
.venv/bin/ruff check gateway tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q -ra "$@"
