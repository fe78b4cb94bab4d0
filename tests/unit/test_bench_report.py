"""The benchmark's verdicts: a target missed at reduced sizes is not a failure; a check
(something that must hold at any size) still is."""

from __future__ import annotations

from bench.report import Row, summary, table


def _rows(profile: str) -> list[Row]:
    return [Row("speed", "push ÷ distribution", "≤ 1.5", value=2.0, bound=1.5,
                measured="2.00", profile=profile).judge(),
            Row("fast", "pull ÷ distribution", "≤ 1.5", value=1.0, bound=1.5,
                measured="1.00", profile=profile).judge(),
            Row("all_ok", "concurrent pushes", "all 8 succeed", value=7.0, bound=8.0,
                better="higher", measured="7/8", extra={"check": True},
                profile=profile).judge()]


def test_quick_sizes_mark_missed_targets_instead_of_failing_them() -> None:
    printed = table(_rows("quick")).splitlines()
    verdicts = {line.split()[0]: line.rstrip().rsplit("  ", 1)[1].strip() for line in printed[2:]}
    assert verdicts == {"push": "n/a (quick sizes)", "pull": "PASS", "concurrent": "FAIL"}
    text = summary(_rows("quick"))
    assert text.startswith("1/2 targets met; missed: all_ok")
    assert "not judged at quick sizes" in text and "speed" in text


def test_the_full_run_judges_every_target() -> None:
    assert [r.verdict for r in _rows("full")] == ["FAIL", "PASS", "FAIL"]
    assert summary(_rows("full")) == "1/3 targets met; missed: speed, all_ok"


def test_pull_through_cpu_line_survives_a_pull_shorter_than_a_clock_tick() -> None:
    """At smoke sizes the direct pull can cost 0.00 CPU-s as /proc counts it."""
    from bench.pullthrough import _cpu_text

    zero = {"gateway": [0.01], "client": [0.0], "source": [0.0], "direct_client": [0.0],
            "direct_source": [0.0], "floor": [0.0]}
    assert "x the CPU" not in _cpu_text(zero)
    some = {**zero, "client": [0.29], "direct_client": [0.3], "direct_source": [0.17]}
    assert "x the CPU" in _cpu_text(some)


def test_pull_through_cpu_line_says_what_the_target_leaves_the_gateway() -> None:
    from bench.pullthrough import _cpu_text

    cpu = {"gateway": [0.55], "client": [0.23], "source": [0.13], "direct_client": [0.25],
           "direct_source": [0.15], "floor": [0.9], "floor_hash": [0.18],
           "floor_write": [0.6], "floor_pass": [0.12]}
    text = _cpu_text(cpu, 0.26, 2)
    # 2 CPUs * 1.3 * 0.26 s = 0.676 CPU-s, less 0.23 + 0.13 for the client and the source.
    assert "leaves the gateway 0.32 CPU-s" in text
    assert "hash 0.18, spool write 0.60, loopback pass 0.12" in text
