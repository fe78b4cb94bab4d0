"""scripts/audit-deps.sh says plainly how much of a lock file it could audit: "no known
vulnerabilities" only when every pin was audited."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_audit_counts_what_it_could_not_audit(tmp_path: Path) -> None:
    lock = tmp_path / "small.lock"
    # Two pins of this install, and one whose marker excludes every Python the project runs.
    lock.write_text("six==1.17.0\nidna==3.20\n"
                    "async-timeout==5.0.1 ; python_full_version < '3.11.3'\n")
    result = subprocess.run(["bash", str(ROOT / "scripts" / "audit-deps.sh"), str(lock)],
                            capture_output=True, text=True, timeout=300, check=False)
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and str(lock) in lines[0], result.stdout + result.stderr
    line = lines[0]
    plainly = (re.search(r"NOT DONE .* none of its 2 pins", line)
               or re.search(r"INCOMPLETE .* audited 1 of 2 pins .* 1 could not be audited",
                            line)
               or re.search(r"no known vulnerabilities \(all 2 pins audited\)", line)
               or "has known vulnerabilities" in line)
    assert plainly, line
    assert result.returncode == (1 if "has known vulnerabilities" in line else 0)
