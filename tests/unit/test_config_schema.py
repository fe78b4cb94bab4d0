"""The published JSON Schema (docs/config.schema.json, and the Helm chart's copy): made from
the models and current, a valid draft-07 schema, and every example configuration the
project ships passes it (and the models) — so what editors and Helm check is what the
gateway accepts."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gateway.cli import main
from gateway.config import ENV_PREFIX, Config, load_config
from gateway.config.schema import CHART_SCHEMA, DOCS_SCHEMA, expected_files

ROOT = Path(__file__).resolve().parents[2]


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(DOCS_SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _problems(document: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}"
            for e in _validator().iter_errors(document)]


def test_the_schema_files_are_current() -> None:
    for path, text in expected_files().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is not current: run `ecr-gateway config-schema --write`")


def test_config_schema_prints_the_published_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config-schema"]) == 0
    assert capsys.readouterr().out == DOCS_SCHEMA.read_text()


def test_the_chart_holds_the_same_schema_for_config() -> None:
    chart = json.loads(CHART_SCHEMA.read_text())
    docs = json.loads(DOCS_SCHEMA.read_text())
    assert chart["definitions"] == docs["definitions"]
    assert chart["properties"]["config"]["properties"] == docs["properties"]
    assert chart["properties"]["config"]["additionalProperties"] is False


@pytest.mark.parametrize(("document", "where"), [
    ({"upstream": {"regoin": "eu-west-1"}}, "upstream"),
    ({"blobs": {"mode": "sideways"}}, "blobs.mode"),
    ({"cache": {"tag_ttl_seconds": -1}}, "cache.tag_ttl_seconds"),
    ({"cache": {"manifest_max_bytes": 1.5}}, "cache.manifest_max_bytes"),
    ({"routes": [{"prefix": "a", "repository": {"scan_on_push": "yes"}}]},
     "routes.0.repository.scan_on_push"),
    ({"mirrors": {"docker.io": {"upstream": {"url": "https://r", "colour": 1}}}},
     "mirrors.docker.io.upstream"),
    ({"listen": "nowhere"}, "listen"),
])
def test_the_schema_refuses_what_the_gateway_refuses(document: dict[str, Any],
                                                     where: str) -> None:
    problems = _problems(document)
    assert any(p.startswith(f"{where}:") for p in problems), problems
    with pytest.raises(ValueError):  # and the models agree
        load_config(None, environ={}, overrides=document)


def _readme_configs() -> list[tuple[str, dict[str, Any]]]:
    """The yaml blocks of README and docs/ that are gateway configurations (any top-level
    key of one)."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = page.read_text()
        for match in re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL):
            document = yaml.safe_load(match.group(1))
            if isinstance(document, dict) and set(document) & set(Config.model_fields):
                line = text[:match.start()].count(chr(10)) + 2
                found.append((f"{page.relative_to(ROOT)}:{line}", document))
    return found


def _shipped_configs() -> list[tuple[str, dict[str, Any]]]:
    files = [ROOT / "config.example.yaml", ROOT / "deploy" / "config.yaml",
             *sorted((ROOT / "deploy" / "kubernetes").rglob("config.yaml"))]
    return [(str(path.relative_to(ROOT)), yaml.safe_load(path.read_text()) or {})
            for path in files]


def test_every_example_configuration_passes_the_schema_and_the_models(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    readme = _readme_configs()
    assert len(readme) >= 7, "README lost its configuration examples"
    shipped = _shipped_configs()
    assert len(shipped) >= 5  # the example, the image's default, the three overlays
    for name in [n for n in os.environ if n.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)
    for where, document in readme + shipped:
        assert _problems(document) == [], where
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(document))
        load_config(str(path), environ={})
        # and what a reader runs on a copy: check-config, which makes serve's start checks
        # (an anonymous rule on 0.0.0.0 loads, but does not start)
        code = main(["check-config", "--skip-file-checks", str(path)])
        assert code == 0, f"{where}: {capsys.readouterr().err}"


def test_readme_shows_editors_the_schema() -> None:
    text = (ROOT / "README.md").read_text()
    assert "# yaml-language-server: $schema=" in text
    assert "docs/config.schema.json" in text
