"""Traces are on only when the OTEL_* environment asks, and off loads no SDK."""

from __future__ import annotations

import subprocess
import sys

import pytest

from gateway.observability.tracing import requested


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, False),
])
def test_requested_by_the_standard_variables(environ: dict[str, str], expected: bool) -> None:
    assert requested(environ) is expected


def test_off_imports_no_sdk() -> None:
    script = ("import sys\n"
              "from gateway.app import build_app\n"
              "from gateway.config import load_config\n"
              "from gateway.observability.tracing import Tracing\n"
              "assert Tracing.from_environ({}, 'test') is None\n"
              "build_app(load_config(None, environ={}))\n"
              "loaded = [m for m in sys.modules if m.startswith('opentelemetry.sdk')]\n"
              "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
