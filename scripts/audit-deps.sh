#!/usr/bin/env bash
# Known-vulnerability audit of the locked dependencies (pip-audit against PyPI's advisory
# data). A vulnerable pin fails the run. If the advisory service cannot be reached, or
# answers for none of the pins, this says so plainly and does not fail: the audit is then
# not done, which is different from passing. Pins it could not audit are counted as such;
# pins whose environment marker excludes this Python are not pins of this install.
# Usage: audit-deps.sh [LOCK_FILE...]   (default: requirements.lock requirements-test.lock)
set -uo pipefail
locks=("$@")
for i in "${!locks[@]}"; do locks[i]=$(realpath "${locks[i]}"); done
cd "$(dirname "$0")/.."
[ ${#locks[@]} -gt 0 ] || locks=(requirements.lock requirements-test.lock)

audit=.venv/bin/pip-audit
[ -x "$audit" ] || audit=$(command -v pip-audit || true)
if [ -z "$audit" ]; then
  echo "dependency audit: SKIPPED, pip-audit is not installed (it is in the test extra)"
  exit 0
fi
python=.venv/bin/python
[ -x "$python" ] || python=python3
# pip-audit's JSON report → "audited unaudited" on the first line, then one line per
# known vulnerability.
summarise=$(cat <<'PY'
import json, sys
deps = json.load(sys.stdin)["dependencies"]
skipped = [d for d in deps if d.get("skip_reason")]
print(len(deps) - len(skipped), len(skipped))
for d in deps:
    for v in d.get("vulns", []):
        fixes = ", ".join(v.get("fix_versions", [])) or "none yet"
        print("  %s %s: %s (fixed in %s)" % (d["name"], d["version"], v["id"], fixes))
PY
)
status=0
for lock in "${locks[@]}"; do
  [ -f "$lock" ] || continue
  out=$("$audit" -r "$lock" --no-deps --disable-pip --progress-spinner off -f json 2>/dev/null)
  rc=$?
  if ! report=$("$python" -c "$summarise" <<<"$out" 2>/dev/null); then
    echo "dependency audit: NOT DONE for $lock, pip-audit could not run or reach its" \
         "advisory service (exit $rc)"
    continue
  fi
  read -r audited unaudited <<<"$(head -n 1 <<<"$report")"
  vulnerable=$(tail -n +2 <<<"$report")
  if [ -n "$vulnerable" ]; then
    echo "dependency audit: $lock has known vulnerabilities:"
    echo "$vulnerable"
    status=1
  elif [ "$audited" -eq 0 ]; then
    echo "dependency audit: NOT DONE for $lock, the advisory service answered for none of" \
         "its $unaudited pins (no network to it, or a package mirror?)"
  elif [ "$unaudited" -gt 0 ]; then
    echo "dependency audit: INCOMPLETE for $lock: audited $audited of" \
         "$((audited + unaudited)) pins (no known vulnerabilities among them);" \
         "$unaudited could not be audited, the advisory service did not answer for them" \
         "(no network to it, or a package mirror?)"
  else
    echo "dependency audit: $lock: no known vulnerabilities (all $audited pins audited)"
  fi
done
exit $status
