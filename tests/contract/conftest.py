"""Prints, after the run, what each contract target matched and where it differs."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.contract.test_contract import REPORT

    for name, report in sorted(REPORT.items()):
        terminalreporter.section(f"contract: {name}")
        terminalreporter.write_line(f"{len(report['matched'])} facts as the AWS reference says")
        for line in report["differs"]:
            terminalreporter.write_line(f"differs: {line}")
