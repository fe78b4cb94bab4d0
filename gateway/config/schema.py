"""The configuration's JSON Schema, made from the models: docs/config.schema.json (for
editors: ``# yaml-language-server: $schema=...``) and the ``config`` part of the Helm chart's
values.schema.json. ``ecr-gateway config-schema`` prints it; ``--write`` regenerates both
files (a test fails while either is not current).

Draft-07, the newest draft Helm's validator and most editors know: definitions under
``definitions``, so that the chart can hold them at its own top level.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config.models import Config

DRAFT = "http://json-schema.org/draft-07/schema#"
ROOT = Path(__file__).resolve().parents[2]
DOCS_SCHEMA = ROOT / "docs" / "config.schema.json"
CHART_SCHEMA = ROOT / "deploy" / "helm" / "ecr-gateway" / "values.schema.json"


def config_schema() -> dict[str, Any]:
    schema = _tidy(Config.model_json_schema(ref_template="#/definitions/{model}"))
    definitions = schema.pop("$defs", {})
    return {"$schema": DRAFT, **schema, "definitions": definitions}


def _tidy(node: Any) -> Any:
    """Descriptions as one line each (docstrings are wrapped for the source, not for an
    editor's hover), with markdown's single backticks."""
    if isinstance(node, dict):
        return {key: " ".join(value.replace("``", "`").split())
                if key == "description" and isinstance(value, str) else _tidy(value)
                for key, value in node.items()}
    if isinstance(node, list):
        return [_tidy(item) for item in node]
    return node


def chart_schema(values_schema: dict[str, Any]) -> dict[str, Any]:
    """The chart's values schema with its ``config`` property (and the definitions it refers
    to) replaced by the gateway's; the chart still requires ``listen`` (its templates read
    it)."""
    config = config_schema()
    definitions = config.pop("definitions")
    del config["$schema"]
    config["description"] = ("The gateway's configuration (docs/config.schema.json, made by "
                             "`ecr-gateway config-schema`); the gateway checks it again at "
                             "start.")
    config["required"] = ["listen"]
    properties = dict(values_schema["properties"])
    properties["config"] = config
    return {**values_schema, "properties": properties, "definitions": definitions}


def render(schema: dict[str, Any]) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def expected_files() -> dict[Path, str]:
    """Each generated file and the text it should have."""
    chart = json.loads(CHART_SCHEMA.read_text(encoding="utf-8"))
    return {DOCS_SCHEMA: render(config_schema()), CHART_SCHEMA: render(chart_schema(chart))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ecr-gateway config-schema",
                                     description="print the configuration's JSON Schema")
    parser.add_argument("--write", action="store_true",
                        help=f"write {DOCS_SCHEMA.relative_to(ROOT)} and the Helm chart's "
                             f"{CHART_SCHEMA.relative_to(ROOT)} instead")
    args = parser.parse_args(argv)
    if not args.write:
        sys.stdout.write(render(config_schema()))
        return 0
    for path, text in expected_files().items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
