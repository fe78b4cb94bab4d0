"""The benchmark's plumbing on tiny sizes: ``python -m bench --smoke`` starts the reference
registry, the emulator and the gateways, drives every row, and writes a report that has
every row with a target and a measurement. Nothing here judges speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import require_tool

ROWS = {
    "push", "push_embedded", "pull_redirect", "pull_proxy", "pull_cache", "push_cpu",
    "push_cpu_floor", "push_emulator_cpu", "push_emulator_cpu_floor", "pull_cpu",
    "fetch_redirect", "fetch_cache", "bare",
    "head_digest_rps", "head_digest_p99",
    "head_tag_rps", "head_tag_p99",
    "memory_peak", "memory_flat", "memory_idle", "concurrent_push_ok", "concurrent_push_tput",
    "concurrent_pull_ok", "concurrent_pull_tput", "economy_push", "economy_repush",
    "push_upstream", "push_cpu_all", "push_page_cache", "page_cache_write", "blob_get",
    "skopeo_floor",
    "pullthrough_cold", "pullthrough_warm", "pullthrough_warm_redirect", "pullthrough_fill",
    "pullthrough_cpu",
    "sync_throughput",
    "listings_tags_calls", "listings_tags_p99", "listings_catalog_calls", "listings_catalog_p99",
    "growth_push_1", "growth_push_2", "growth_push_3", "growth_push_4", "growth_time_linear",
    "growth_memory_flat", "growth_concurrency", "growth_concurrency_cpu", "growth_concurrency_tput",
    "growth_concurrency_memory",
}


def test_smoke_run_reports_every_row(tmp_path: Path) -> None:
    require_tool("skopeo")
    require_tool("docker-registry")
    require_tool("containerd")
    out = tmp_path / "results"
    run = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out),
                          "--work", str(tmp_path / "work")],
                         capture_output=True, text=True, timeout=300,
                         cwd=Path(__file__).resolve().parents[2], check=False)
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads((out / "latest.json").read_text())
    rows = {row["key"]: row for row in report["rows"]}
    assert set(rows) == ROWS
    for row in rows.values():
        assert row["target"] and row["measured"], row
        judged = row["target"] != "information" and not row["measured"].startswith("n/a")
        if judged:
            assert row["value"] is not None and row["passed"] is not None, row
    # Plumbing, not speed: what must hold at any size does hold.
    assert rows["concurrent_push_ok"]["passed"] and rows["concurrent_pull_ok"]["passed"]
    assert rows["economy_repush"]["value"] == 0
    assert rows["listings_tags_calls"]["passed"] and rows["listings_catalog_calls"]["passed"]
    assert report["meta"]["head_load_tool"] in ("hey", "python-aiohttp")
    for key in ("fetch_redirect", "fetch_cache"):  # containerd really fetched
        assert rows[key]["value"] is not None, rows[key]
    for row in rows.values():
        assert row["title"] in run.stdout  # the printed table has every row
        if not row["extra"].get("check"):  # a speed target missed at smoke sizes is no FAIL
            printed = next(line for line in run.stdout.splitlines() if row["title"] in line)
            assert "FAIL" not in printed, printed
    assert (out / "latest.png").stat().st_size > 10_000
