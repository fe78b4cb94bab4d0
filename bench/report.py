"""Rows of the benchmark, and the three forms of the report: a table, JSON and a PNG chart."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Row:
    """One figure: what is measured, its target, and the verdict.

    ``value`` is judged against ``bound`` (``better`` = "lower": value ≤ bound passes;
    "higher": value ≥ bound passes); ``passed`` None means not judged (n/a or information).
    ``gateway``/``reference`` (in ``unit``) feed the chart's side-by-side panels.
    """

    key: str
    title: str
    target: str
    measured: str = ""
    value: float | None = None
    bound: float | None = None
    better: str = "lower"
    passed: bool | None = None
    gateway: float | None = None
    reference: float | None = None
    unit: str = ""
    panel: str = ""  # "time", "head" or "" (ratio rows are charted against their bound)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # The targets are set for the full sizes; at smaller ones (--quick) a missed speed or
    # memory target says nothing about the gateway. Checks (extra["check"]) hold at any size.
    profile: str = "full"

    def judge(self) -> Row:
        if self.value is not None and self.bound is not None:
            if self.better == "lower":
                self.passed = self.value <= self.bound
            else:
                self.passed = self.value >= self.bound
        return self

    @property
    def sized_out(self) -> bool:
        """Missed, but only at sizes the target was not set for."""
        return (self.passed is False and self.profile != "full"
                and not self.extra.get("check"))

    @property
    def verdict(self) -> str:
        if self.passed is None:
            return "n/a" if self.measured.startswith("n/a") else "info"
        if self.sized_out:
            return f"n/a ({self.profile} sizes)"
        return "PASS" if self.passed else "FAIL"


def table(rows: list[Row]) -> str:
    headers = ("row", "target", "measured", "result")
    cells = [(r.title, r.target, r.measured, r.verdict) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    for cell in cells:
        out.append("  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    out = ["| row | target | measured | result |", "| --- | --- | --- | --- |"]
    for r in rows:
        out.append(f"| {r.title} | {r.target} | {r.measured} | {r.verdict} |")
    return "\n".join(out)


def summary(rows: list[Row]) -> str:
    judged = [r for r in rows if r.passed is not None and not r.sized_out]
    failed = [r.key for r in judged if not r.passed]
    text = f"{len(judged) - len(failed)}/{len(judged)} targets met"
    text += f"; missed: {', '.join(failed)}" if failed else ""
    sized_out = [r for r in rows if r.sized_out]
    if sized_out:
        text += (f"; not judged at {sized_out[0].profile} sizes (the targets are for the full "
                 f"run): {', '.join(r.key for r in sized_out)}")
    return text


def write_json(path: Path, rows: list[Row], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "summary": summary(rows), "rows": [asdict(r) for r in rows]}
    path.write_text(json.dumps(document, indent=2) + "\n")


def write_chart(path: Path, rows: list[Row], title: str) -> bool:
    """The PNG: seconds side by side, manifest HEAD side by side, every ratio vs its bound.
    Returns False when matplotlib is not installed."""
    try:
        os.environ.setdefault("MPLBACKEND", "Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    times = [r for r in rows if r.panel == "time" and r.gateway is not None]
    heads = [r for r in rows if r.panel == "head" and r.gateway is not None]
    ratios = [r for r in rows if r.value is not None and r.bound is not None]
    fig, axes = plt.subplots(1, 3, figsize=(17, 6.5),
                             gridspec_kw={"width_ratios": [1.1, 0.9, 1.4]})
    _pairs(axes[0], times, "seconds (lower is better)")
    _pairs(axes[1], heads, "requests/s (higher is better)")
    _ratios(axes[2], ratios)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _pairs(ax: Any, rows: list[Row], label: str) -> None:
    names = [r.extra.get("short", r.key) for r in rows]
    ys = range(len(rows))
    height = 0.38
    ax.barh([y + height / 2 for y in ys], [r.reference or 0 for r in rows], height,
            label="distribution 2.8", color="#9e9e9e")
    ax.barh([y - height / 2 for y in ys], [r.gateway or 0 for r in rows], height,
            label="ecr-gateway", color="#1f77b4")
    for y, r in zip(ys, rows, strict=True):
        for offset, value in ((-height / 2, r.gateway), (height / 2, r.reference)):
            if value:
                text = f" {value:.0f}" if value >= 100 else f" {value:.3g}"
                ax.text(value, y + offset, text, va="center", fontsize=8)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(label)
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2,
              frameon=False)
    ax.margins(x=0.18)


def _ratios(ax: Any, rows: list[Row]) -> None:
    """Each judged figure ÷ its bound; yes/no checks (counts against an exact bound) are
    drawn as a full bar, green or red, labelled with what was measured."""
    names = [r.extra.get("short", r.key) for r in rows]
    checks = [bool(r.extra.get("check")) or not r.bound for r in rows]
    scaled = [1.0 if check else (r.value or 0.0) / (r.bound or 1.0)
              for r, check in zip(rows, checks, strict=True)]
    colors = ["#2ca02c" if r.passed else "#9e9e9e" if r.sized_out else "#d62728"
              for r in rows]
    ys = range(len(rows))
    ax.barh(list(ys), scaled, color=colors)
    ax.axvline(1.0, color="black", linewidth=1)
    for y, r, s, check in zip(ys, rows, scaled, checks, strict=True):
        sign = "≤" if r.better == "lower" else "≥"
        label = (f" {r.measured.split(' (')[0][:40]}" if check
                 else f" {r.value:.3g} ({sign} {r.bound:g})")
        ax.text(s, y, label, va="center", fontsize=8)
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("measured ÷ target bound (green: met)")
    ax.margins(x=0.35)
