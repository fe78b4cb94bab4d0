"""The shipped Grafana dashboard queries only metrics the gateway exports, so a renamed
metric breaks this test instead of leaving an empty panel in production."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway.observability.metrics import REGISTRY

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ecr-gateway.json"

# Names in PromQL that are functions, keywords or label names, not series.
_NOT_SERIES = {"sum", "by", "rate", "histogram_quantile", "max", "le", "route", "action",
               "outcome", "cache", "event", "kind", "status", "job", "instance"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                             "_created"),
             "gauge": ("",), "summary": ("_sum", "_count", "_created"), "info": ("_info",)}


def exported_series() -> set[str]:
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


def queried_series(expr: str) -> set[str]:
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "", without_labels)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_ranges))
    return {w for w in words if w not in _NOT_SERIES and not w.startswith("__")}


def panels() -> list[dict]:
    return json.loads(DASHBOARD.read_text())["panels"]


def test_every_panel_queries_exported_metrics() -> None:
    exported = exported_series()
    assert panels()
    for panel in panels():
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried = queried_series(target["expr"])
            assert queried, (panel["title"], target["expr"])
            unknown = queried - exported
            assert not unknown, f"{panel['title']!r} queries {sorted(unknown)}, not exported"


def test_dashboard_covers_the_operators_questions() -> None:
    """Rate, latency, errors by route; upstream calls and throttles by action; cache hit
    ratios; uploads in flight; bytes in and out."""
    queried = set().union(*(queried_series(t["expr"]) for p in panels() for t in p["targets"]))
    for needed in ("ecr_gateway_http_requests_total",
                   "ecr_gateway_http_request_duration_seconds_bucket",
                   "ecr_gateway_upstream_calls_total", "ecr_gateway_upstream_throttles_total",
                   "ecr_gateway_cache_events_total", "ecr_gateway_upload_sessions_active",
                   "ecr_gateway_http_received_bytes_total", "ecr_gateway_http_sent_bytes_total"):
        assert needed in queried, needed


def test_a_misspelt_metric_is_caught() -> None:
    assert queried_series('sum(rate(ecr_gateway_http_request_total{job="x"}[5m]))') \
        - exported_series() == {"ecr_gateway_http_request_total"}
