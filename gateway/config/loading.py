"""Defaults ← file ← environment ← command-line flags, validated by the models.

Environment variables override the file: ``ECR_GATEWAY_<SECTION>__<KEY>`` with ``__``
between levels, values parsed as YAML (``ECR_GATEWAY_BLOBS__MODE=proxy``,
``ECR_GATEWAY_LISTEN=0.0.0.0:5000``; an empty value is null). A refusal names the key's
dotted path, the reason, and where the value came from: ``FILE:LINE:COLUMN``, the variable,
or the flag.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import typing
from collections.abc import Mapping
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.errors import ConfigError, KeyPath
from gateway.config.models import Config

ENV_PREFIX = "ECR_GATEWAY_"
# The key of a refusal of the file itself (unreadable, not YAML): the option that named it.
FILE_OPTION = "--config"


def load_config(path: str | None = None, *, environ: Mapping[str, str] | None = None,
                overrides: dict[str, Any] | None = None) -> Config:
    """Defaults ← file ← environment ← command-line overrides."""
    data: dict[str, Any] = {}
    marks: dict[KeyPath, tuple[int, int]] = {}
    if path:
        data, marks = _read(path)
    environ = os.environ if environ is None else environ
    variables = _env_overrides(environ)
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    for tree in (_tree(variables, environ), flags):
        data = _merge(data, tree)

    def source(key_path: KeyPath) -> str | None:
        if key_path[:1] and key_path[0] in flags:
            return f"--{key_path[0].replace('_', '-')} (command line)"
        for keys, name in variables.items():
            if key_path[:len(keys)] == keys:
                return f"{name} (environment variable)"
        for end in range(len(key_path), -1, -1):
            if key_path[:end] in marks:
                line, column = marks[key_path[:end]]
                return f"{path}:{line}:{column}"
        return path

    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        key_path, reason = _explain(error)
        raise ConfigError(key_path, reason, source(key_path)) from None


def _read(path: str) -> tuple[dict[str, Any], dict[KeyPath, tuple[int, int]]]:
    """The file's mapping, and the line and column of each key in it."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise ConfigError(FILE_OPTION, f"cannot read {path}: {exc.strerror}") from None
    loader = yaml.SafeLoader(text)
    try:  # one parse: the nodes carry the marks, the document is built from them
        node = loader.get_single_node()
        loaded = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        raise _not_yaml(path, exc) from None
    finally:
        loader.dispose()
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError("(top level)", "must be a mapping", path)
    marks: dict[KeyPath, tuple[int, int]] = {}
    if node is not None:
        _marks(node, (), marks)
    return loaded or {}, marks


# What the parser quotes (with repr(): one holding ' comes in double quotes).
_QUOTED = re.compile(r"""(['"])(?:\\.|(?!\1)[^\\])*\1""")
_TOKEN_KIND = re.compile(r"<[a-z ]+>")


def _unnamed(quoted: re.Match[str]) -> str:
    """A token kind ('<scalar>') or a single character (',', '\\t') says what is wrong
    and is kept; anything longer may be a name (an alias, anchor or tag) holding a secret."""
    try:
        text = ast.literal_eval(quoted[0])
    except (ValueError, SyntaxError):
        return "(not shown)"
    keep = isinstance(text, str) and (len(text) <= 1 or _TOKEN_KIND.fullmatch(text))
    return quoted[0] if keep else "(not shown)"


def _not_yaml(path: str, exc: yaml.YAMLError) -> ConfigError:
    """Where the file stops being YAML and why, without the parser's quote of the line (or
    of an alias, anchor or tag it names): a secret may be written there."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or "cannot be parsed"
    problem = _QUOTED.sub(_unnamed, problem)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else path
    return ConfigError(FILE_OPTION, f"is not valid YAML: {problem} (the line is not "
                       "shown: it may hold a secret)", where)


def _marks(node: yaml.Node, at: KeyPath, marks: dict[KeyPath, tuple[int, int]]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            where = (*at, str(key.value))
            marks[where] = (key.start_mark.line + 1, key.start_mark.column + 1)
            _marks(value, where, marks)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            where = (*at, str(i))
            marks[where] = (item.start_mark.line + 1, item.start_mark.column + 1)
            _marks(item, where, marks)


def _env_overrides(environ: Mapping[str, str]) -> dict[KeyPath, str]:
    """Each ``ECR_GATEWAY_*`` variable's key path → its name."""
    return {tuple(name[len(ENV_PREFIX):].lower().split("__")): name
            for name in sorted(environ) if name.startswith(ENV_PREFIX)}


def _tree(variables: dict[KeyPath, str], environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for keys, name in variables.items():
        value = _environ_value(keys, name, environ)
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value
    return tree


# Keys whose variables are taken as they are, not as YAML: a credential is any text ("pw #1"
# would lose " #1" as a comment, "*pw" would be an alias, "0123" a number).
_VERBATIM = frozenset({"access_key_id", "secret_access_key", "session_token"})


def _environ_value(keys: KeyPath, name: str, environ: Mapping[str, str]) -> Any:
    value = environ[name]
    if value == "":
        return None
    if keys[-1] in _VERBATIM:
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as exc:
        # Not the parser's words: they quote the value (and the token it stumbled on), and
        # a variable is how secrets reach a container (ECR_GATEWAY_UPSTREAM__SECRET_ACCESS_KEY).
        mark = getattr(exc, "problem_mark", None)
        at = f" at character {mark.column + 1}" if mark is not None else ""
        raise ConfigError(keys, f"is not valid YAML{at} (the value is not shown: it may be a "
                          "secret); quote it", f"{name} (environment variable)") from None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _explain(error: ErrorDetails) -> tuple[KeyPath, str]:
    """The key path and the reason, in the gateway's words, of one pydantic error."""
    key_path = tuple(str(part) for part in error["loc"])
    kind, given, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    cause = ctx.get("error")
    if isinstance(cause, ConfigError):  # a check of ours: its key is relative to loc
        return (*key_path, *cause.parts), cause.reason
    if kind == "extra_forbidden":
        return key_path, "unknown key" + _suggestion(key_path)
    reasons = {
        "bool_type": "must be true or false",
        # the kind, not the value: a misplaced secret is not echoed
        "string_type": f"must be a string, got {_kind(given)}",
        "int_type": f"must be a whole number, got {given!r}",
        "int_from_float": f"must be a whole number, got {given!r}",
        "dict_type": "must be a mapping",
        "model_type": "must be a mapping",
        "model_attributes_type": "must be a mapping",
        "list_type": "must be a list",
    }
    if kind in reasons:
        return key_path, reasons[kind]
    if kind in ("int_parsing", "float_type", "float_parsing"):
        return key_path, f"must be a number, got {given!r}"
    if kind == "literal_error":
        choices = ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", ""))))
        return key_path, f"must be one of {choices}, got {given!r}"
    if kind == "greater_than_equal":
        bound = ctx.get("ge")
        return key_path, "must not be negative" if bound == 0 else f"must be at least {bound}"
    if kind == "greater_than":
        return key_path, f"must be more than {ctx.get('gt')}"
    message = str(error["msg"])
    return key_path, message[:1].lower() + message[1:]


def _kind(value: Any) -> str:
    kinds = {bool: "true or false", dict: "a mapping", list: "a list", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _suggestion(key_path: KeyPath) -> str:
    """`` (did you mean 'region'?)`` when the unknown key is a typo of a known one."""
    section: Any = Config
    entry = False  # the next part is a list index or a mapping's key
    for part in key_path[:-1]:
        if entry:
            entry = False
            continue
        field = section.model_fields.get(part)
        if field is None:
            return ""
        section = field.annotation
        members = [a for a in typing.get_args(section) if a is not type(None)]
        if typing.get_origin(section) in (list, dict):
            section, entry = members[-1], True
        elif members:  # X | None
            section = members[0]
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            return ""
    close = difflib.get_close_matches(key_path[-1], list(section.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
