"""ECR Public catalog data from an image's OCI annotations and config.

With ``catalog_data: from_annotations`` on an ECR Public route, every tagged push fills the
repository's catalog data (PutRepositoryCatalogData) from what the image says of itself:

* description: ``org.opencontainers.image.description``, else ``...title``;
* aboutText: a markdown page of the title, description, source, homepage (``url``),
  documentation, version, revision, licenses, vendor and authors;
* usageText: how to pull the image, and its documentation link;
* architectures and operatingSystems: the config's ``architecture``/``os`` (for an index,
  every platform it lists), written as the Gallery's badges (x86-64, ARM 64, Linux, ...).

Annotations come from the manifest (or index), over the labels of the image config (which
``docker build`` writes the same ``org.opencontainers.image.*`` keys into).
"""

from __future__ import annotations

from typing import Any

import orjson

PREFIX = "org.opencontainers.image."
ARCHITECTURES = {"amd64": "x86-64", "386": "x86", "arm64": "ARM 64", "arm": "ARM"}
SYSTEMS = {"linux": "Linux", "windows": "Windows"}
# RepositoryCatalogDataInput's limits.
MAX_DESCRIPTION, MAX_TEXT, MAX_ITEMS, MAX_ITEM = 1024, 10240, 50, 50


def from_image(manifest: bytes, config: bytes | None, reference: str) -> dict[str, Any]:
    """The catalog data an image (manifest and, for an image manifest, its config blob)
    gives; ``reference`` is how it is pulled. Empty if the image says nothing."""
    try:
        doc = orjson.loads(manifest)
        config_doc = orjson.loads(config) if config else {}
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict) or not isinstance(config_doc, dict):
        return {}
    # The client wrote these documents: a member of another JSON type than expected says
    # nothing (the push itself is checked elsewhere), it never fails the push.
    labels = _object(_object(config_doc.get("config")).get("Labels"))
    notes = {**_strings(labels), **_strings(doc.get("annotations"))}
    children = doc.get("manifests")
    platforms = [_object(m.get("platform")) for m in
                 (children if isinstance(children, list) else []) if isinstance(m, dict)]
    platforms = platforms or [config_doc]
    data: dict[str, Any] = {}
    description = notes.get(PREFIX + "description") or notes.get(PREFIX + "title")
    if description:
        data["description"] = description[:MAX_DESCRIPTION]
    about = _about(notes)
    if about:
        data["aboutText"] = about[:MAX_TEXT]
    architectures = _badges((p.get("architecture") for p in platforms), ARCHITECTURES)
    if architectures:
        data["architectures"] = architectures
    systems = _badges((p.get("os") for p in platforms), SYSTEMS)
    if systems:
        data["operatingSystems"] = systems
    if data:
        usage = f"Pull it with:\n\n```\ndocker pull {reference}\n```\n"
        if notes.get(PREFIX + "documentation"):
            usage += f"\nDocumentation: {notes[PREFIX + 'documentation']}\n"
        data["usageText"] = usage[:MAX_TEXT]
    return data


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str) and v}


def _about(notes: dict[str, str]) -> str:
    lines = []
    if notes.get(PREFIX + "title"):
        lines += [f"# {notes[PREFIX + 'title']}", ""]
    if notes.get(PREFIX + "description"):
        lines += [notes[PREFIX + "description"], ""]
    facts = [("Source", "source"), ("Homepage", "url"), ("Documentation", "documentation"),
             ("Version", "version"), ("Revision", "revision"), ("Licenses", "licenses"),
             ("Vendor", "vendor"), ("Authors", "authors")]
    lines += [f"* {label}: {notes[PREFIX + key]}" for label, key in facts
              if notes.get(PREFIX + key)]
    return "\n".join(lines).strip()


def _badges(values: Any, names: dict[str, str]) -> list[str]:
    found = [names.get(v, v) for v in values if isinstance(v, str) and v]
    return [v[:MAX_ITEM] for v in dict.fromkeys(found)][:MAX_ITEMS]
