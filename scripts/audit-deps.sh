#!/usr/bin/env bash
# Known-vulnerability audit of the locked dependencies (pip-audit against PyPI's advisory
# data). A vulnerable pin fails the run. If the advisory service cannot be reached, or
# answers for none of the pins, this says so plainly and does not fail: the audit is then
# not done, which is different from passing.
set -uo pipefail
cd "$(dirname "$0")/.."

audit=.venv/bin/pip-audit
[ -x "$audit" ] || audit=$(command -v pip-audit || true)
if [ -z "$audit" ]; then
  echo "dependency audit: SKIPPED, pip-audit is not installed (it is in the test extra)"
  exit 0
fi
status=0
for lock in requirements.lock requirements-test.lock; do
  [ -f "$lock" ] || continue
  out=$("$audit" -r "$lock" --no-deps --disable-pip --progress-spinner off 2>&1)
  rc=$?
  pins=$(grep -cE '^[A-Za-z0-9_.-]+==' "$lock")
  unaudited=$(grep -c 'could not be audited' <<<"$out")
  if [ "$rc" -eq 1 ] && grep -qE 'Found [0-9]+ known vulnerabilit' <<<"$out"; then
    echo "dependency audit: $lock has known vulnerabilities:"
    echo "$out"
    status=1
  elif [ "$rc" -ne 0 ]; then
    echo "dependency audit: NOT DONE for $lock, pip-audit could not run or reach its" \
         "advisory service (exit $rc):"
    tail -n 3 <<<"$out"
  elif [ "$unaudited" -ge "$pins" ]; then
    echo "dependency audit: NOT DONE for $lock, the advisory service answered for none of" \
         "its $pins pins (network or mirror restrictions)"
  else
    echo "dependency audit: $lock: no known vulnerabilities ($((pins - unaudited)) of $pins" \
         "pins audited)"
  fi
done
exit $status
