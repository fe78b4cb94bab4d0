"""Prints, after the run, what each contract target matched and where it differs."""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    from tests.contract.targets import AWS_PROFILE
    from tests.contract.test_contract import REPORT

    if REPORT and not AWS_PROFILE:
        terminalreporter.section("contract: aws")
        terminalreporter.write_line("not a target in this run: set ECR_CONTRACT_AWS_PROFILE to "
                                    "an AWS profile to validate against real ECR")
    for name, report in sorted(REPORT.items()):
        terminalreporter.section(f"contract: {name}")
        terminalreporter.write_line(f"{len(report['matched'])} facts as the AWS reference says")
        for line in report["differs"]:
            terminalreporter.write_line(f"differs: {line}")
