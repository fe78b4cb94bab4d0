"""ECR lifecycle policies: the rules' grammar, and which images they expire.

A policy is ``{"rules": [rule, ...]}``; a rule is::

    {"rulePriority": 1, "description": "...",
     "selection": {"tagStatus": "tagged" | "untagged" | "any",
                   "tagPrefixList": ["v"] | "tagPatternList": ["prod*"],   # tagged only
                   "storageClass": "standard" | "archive",                 # default standard
                   "countType": "imageCountMoreThan" | "sinceImagePushed"
                                | "sinceImagePulled" | "sinceImageTransitioned",
                   "countUnit": "days",                                    # all but count
                   "countNumber": 3},
     "action": {"type": "expire"} | {"type": "transition", "targetStorageClass": "archive"}}

``parse`` refuses what ECR refuses, in the words of its validation failures. ``evaluate``
applies ECR's evaluation rules (Amazon ECR User Guide, "Lifecycle policy evaluation rules"):

* rules run by ascending ``rulePriority``; an image is acted on (expired, or transitioned to
  the archive storage class) by at most one rule;
* a rule selects the images of its ``storageClass`` (standard, the default, or archive)
  matching its tag filter: ``tagged`` with ``tagPrefixList``
  selects images having, for every prefix, a tag starting with it; ``tagPatternList`` the
  same with ``*`` wildcards (at most four per pattern); ``untagged`` images without tags;
  ``any`` every image;
* ``imageCountMoreThan n`` keeps the ``n`` most recently pushed of the selected images and
  acts on the rest; ``sinceImagePushed n days`` on those pushed more than ``n`` days ago,
  ``sinceImagePulled`` last pulled (else pushed) more than ``n`` days ago,
  ``sinceImageTransitioned`` archived more than ``n`` days ago;
* an image that matched a higher-priority rule's filter is never expired by a lower one, but
  lower rules still count it ("Rules can never mark images that are marked by higher priority
  rules, but can still identify them as if they haven't been expired");
* an image an index of the repository references is not expired (the index must go first);
* only one rule may select untagged images, and a rule with ``tagStatus`` ``any`` must have
  the highest ``rulePriority``;
* ``sinceImageTransitioned`` goes with ``storageClass`` archive and every other count type
  with standard; a ``transition`` rule selects standard images and names
  ``targetStorageClass`` archive; an ``expire`` rule of archived images counts at least 90
  days ("Archived images have a minimum storage duration of 90 days. You cannot configure
  lifecycle policies that delete images that have been in archive for less than 90 days").

Storage classes, ``sinceImagePulled``, ``sinceImageTransitioned`` and the ``transition``
action are the grammar of the ECR User Guide's "Examples of lifecycle policies" template and
its "Archiving an image" page; the guide's examples write their values in lower case.

``tagPatternList`` is not in botocore's model (the policy is opaque text there); it is part
of ECR's lifecycle policy grammar since 2024.

Every object of the policy takes only the properties above, and ``rulePriority`` and
``countNumber`` are JSON integers (not booleans, floats or strings) of at least 1.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

DAY = 86400.0
MAX_WILDCARDS = 4
_PATTERN = re.compile(r"[a-zA-Z0-9_.*-]+")  # tag characters, and * (the one wildcard)
_POLICY_KEYS = {"rules"}
_RULE_KEYS = {"rulePriority", "description", "selection", "action"}
_ACTION_KEYS = {"type", "targetStorageClass"}
_SELECTION_KEYS = {"tagStatus", "tagPrefixList", "tagPatternList", "storageClass", "countType",
                   "countUnit", "countNumber"}
COUNT_TYPES = ("imageCountMoreThan", "sinceImagePushed", "sinceImagePulled",
               "sinceImageTransitioned")
MIN_ARCHIVE_DAYS = 90  # an archived image is kept at least this long
# ECR documents no upper bound for rulePriority or countNumber; its schema reads them as
# 32-bit signed integers (a Java int), so that is the bound here.
MAX_INTEGER = 2**31 - 1


class PolicyError(ValueError):
    """A lifecycle policy ECR would refuse; the message is ECR's validation failure."""


@dataclass(frozen=True)
class Rule:
    priority: int
    tag_status: str  # "tagged", "untagged" or "any"
    count_type: str  # one of COUNT_TYPES
    count_number: int
    tag_prefixes: tuple[str, ...] = ()
    tag_patterns: tuple[str, ...] = ()
    description: str | None = None
    storage_class: str = "standard"  # the images it selects: "standard" or "archive"
    action: str = "expire"  # or "transition" (to the archive storage class)

    def selects(self, tags: Sequence[str], storage_class: str = "standard") -> bool:
        if storage_class != self.storage_class:
            return False
        if self.tag_status == "any":
            return True
        if self.tag_status == "untagged":
            return not tags
        if not tags:
            return False
        if self.tag_prefixes:
            return all(any(t.startswith(p) for t in tags) for p in self.tag_prefixes)
        return all(any(fnmatch.fnmatchcase(t, p) for t in tags) for p in self.tag_patterns)


@dataclass(frozen=True)
class Candidate:
    """An image as the evaluator sees it."""

    key: Hashable
    tags: tuple[str, ...]
    pushed_at: float
    order: int = 0  # breaks ties between images pushed at the same instant (push order)
    referenced: bool = False  # an index of the repository references it
    storage_class: str = "standard"  # or "archive"
    pulled_at: float | None = None  # last recorded pull; None: never pulled
    archived_at: float | None = None  # when it was last archived


@dataclass(frozen=True)
class Expiry:
    key: Hashable
    rule_priority: int
    action: str = "expire"  # or "transition"


def _fail(detail: str) -> PolicyError:
    return PolicyError(f"Lifecycle policy validation failure: {detail}")


def parse(text: str) -> list[Rule]:
    """The rules of a policy text, sorted by priority; PolicyError if ECR would refuse it."""
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise _fail("Could not map policyString into LifecyclePolicy.") from None
    if not isinstance(document, dict):
        raise _fail("Could not map policyString into LifecyclePolicy.")
    _keys(document, _POLICY_KEYS, {"rules"})
    raw_rules = document["rules"]
    if not isinstance(raw_rules, list) or not raw_rules:
        raise _fail("rules must be a non-empty array")
    rules = sorted((_rule(raw) for raw in raw_rules), key=lambda r: r.priority)
    priorities = [r.priority for r in rules]
    if len(set(priorities)) != len(priorities):
        raise _fail("rulePriority must be unique")
    if sum(r.tag_status == "untagged" for r in rules) > 1:
        raise _fail("only one rule can select untagged images")
    if any(r.tag_status == "any" for r in rules[:-1]):
        raise _fail("a rule with tagStatus any must have the highest rulePriority")
    filters = [(r.tag_prefixes, r.tag_patterns) for r in rules if r.tag_status == "tagged"]
    if len(set(filters)) != len(filters):
        raise _fail("two rules select the same tag prefixes or patterns")
    return rules


def _rule(raw: Any) -> Rule:
    if not isinstance(raw, dict):
        raise _fail('instance type does not match any allowed primitive type '
                    '(allowed: ["object"])')
    _keys(raw, _RULE_KEYS, {"rulePriority", "selection", "action"})
    priority = _integer(raw["rulePriority"], "rulePriority")
    description = raw.get("description")
    if description is not None and not isinstance(description, str):
        raise _fail("description must be a string")
    action = raw["action"]
    if not isinstance(action, dict):
        raise _fail("action must be an object")
    _keys(action, _ACTION_KEYS, {"type"})
    kind = action["type"]
    if kind not in ("expire", "transition"):
        raise _fail(f"instance value ({kind}) not found in enum "
                    '(possible values: ["expire","transition"])')
    if kind == "transition" and action.get("targetStorageClass") != "archive":
        raise _fail("targetStorageClass must be archive when the action type is transition")
    if kind == "expire" and "targetStorageClass" in action:
        raise _fail("targetStorageClass can only be used when the action type is transition")
    selection = raw["selection"]
    if not isinstance(selection, dict):
        raise _fail("selection must be an object")
    _keys(selection, _SELECTION_KEYS, {"tagStatus", "countType", "countNumber"})
    status = selection["tagStatus"]
    if status not in ("tagged", "untagged", "any"):
        raise _fail(f"instance value ({status}) not found in enum "
                    '(possible values: ["any","tagged","untagged"])')
    prefixes = _strings(selection, "tagPrefixList")
    patterns = _strings(selection, "tagPatternList")
    if prefixes and patterns:
        raise _fail("tagPrefixList and tagPatternList cannot be used together")
    if status == "tagged" and not (prefixes or patterns):
        raise _fail("tagPrefixList or tagPatternList is required when tagStatus is tagged")
    if status != "tagged" and (prefixes or patterns):
        raise _fail("tagPrefixList and tagPatternList can only be used when tagStatus is "
                    "tagged")
    for pattern in patterns:
        if _PATTERN.fullmatch(pattern) is None:
            raise _fail(f"tagPatternList entry '{pattern}' may hold tag characters and * only")
        if pattern.count("*") > MAX_WILDCARDS:
            raise _fail(f"tagPatternList entry '{pattern}' has more than {MAX_WILDCARDS} "
                        "wildcards")
    count_type = selection["countType"]
    if count_type not in COUNT_TYPES:
        raise _fail(f"instance failed to match exactly one schema (matched 0 out of "
                    f"{len(COUNT_TYPES)})")
    unit = selection.get("countUnit")
    if count_type != "imageCountMoreThan" and unit != "days":
        raise _fail(f"countUnit must be days when countType is {count_type}")
    if count_type == "imageCountMoreThan" and unit is not None:
        raise _fail("countUnit can only be used when countType is sinceImagePushed, "
                    "sinceImagePulled or sinceImageTransitioned")
    storage = selection.get("storageClass", "standard")
    if storage not in ("standard", "archive"):
        raise _fail(f"instance value ({storage}) not found in enum "
                    '(possible values: ["archive","standard"])')
    if (storage == "archive") != (count_type == "sinceImageTransitioned"):
        raise _fail("storageClass archive goes with countType sinceImageTransitioned, and "
                    "only with it")
    if kind == "transition" and storage != "standard":
        raise _fail("a transition rule selects images of the standard storage class")
    number = _integer(selection["countNumber"], "countNumber")
    if storage == "archive" and number < MIN_ARCHIVE_DAYS:
        raise _fail(f"images in archive are kept at least {MIN_ARCHIVE_DAYS} days: "
                    f"countNumber must be at least {MIN_ARCHIVE_DAYS}")
    return Rule(priority, status, count_type, number, prefixes, patterns, description,
                storage, kind)


def _integer(value: Any, name: str) -> int:
    """``value`` if it is a JSON integer from 1 to MAX_INTEGER (``true`` is a boolean, ``1.0``
    a number, ``"1"`` a string, though Python would compare each of them with an int)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{name}: instance type ({_json_type(value)}) does not match any allowed "
                    'primitive type (allowed: ["integer"])')
    if value < 1:
        raise _fail(f"{name}: numeric instance is lower than the required minimum (minimum: 1, "
                    f"found: {value})")
    if value > MAX_INTEGER:
        raise _fail(f"{name}: numeric instance is greater than the required maximum (maximum: "
                    f"{MAX_INTEGER}, found: {value})")
    return value


def _json_type(value: Any) -> str:
    """The JSON schema type name of a parsed value."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null" if value is None else "integer"


def _keys(value: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    missing = sorted(required - set(value))
    if missing:
        raise _fail(f"object has missing required properties ({orjson.dumps(missing).decode()})")
    extra = sorted(set(value) - allowed)
    if extra:
        raise _fail("object instance has properties which are not allowed by the schema: "
                    f"({orjson.dumps(extra[:1]).decode()})")


def _strings(selection: dict[str, Any], key: str) -> tuple[str, ...]:
    value = selection.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not value or not all(
            isinstance(v, str) and v for v in value):
        raise _fail(f"{key} must be a non-empty array of non-empty strings")
    return tuple(value)


def _moment(rule: Rule, image: Candidate) -> float | None:
    """The instant a time-based rule measures ``image``'s age from."""
    if rule.count_type == "sinceImagePulled":
        return image.pulled_at if image.pulled_at is not None else image.pushed_at
    if rule.count_type == "sinceImageTransitioned":
        return image.archived_at
    return image.pushed_at


def evaluate(rules: Sequence[Rule], images: Sequence[Candidate], now: float) -> list[Expiry]:
    """The images the rules act on, oldest first, each with the rule and its action."""
    claimed: set[Hashable] = set()  # matched a higher-priority rule's filter
    acted: dict[Hashable, Rule] = {}
    newest_first = sorted(images, key=lambda i: (i.pushed_at, i.order), reverse=True)
    for rule in sorted(rules, key=lambda r: r.priority):
        selected = [image for image in newest_first
                    if rule.selects(image.tags, image.storage_class)]
        if rule.count_type == "imageCountMoreThan":
            doomed = selected[rule.count_number:]
        else:
            cutoff = now - rule.count_number * DAY
            doomed = [image for image in selected
                      if (moment := _moment(rule, image)) is not None and moment < cutoff]
        for image in doomed:
            if image.key in claimed or image.key in acted or image.referenced:
                continue
            acted[image.key] = rule
        claimed.update(image.key for image in selected)
    by_key = {image.key: image for image in images}
    order = sorted(acted, key=lambda k: (by_key[k].pushed_at, by_key[k].order))
    return [Expiry(key, acted[key].priority, acted[key].action) for key in order]
