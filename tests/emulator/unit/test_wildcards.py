"""AWS wildcards: ``*`` and ``?`` only; brackets and other fnmatch syntax are literal, as IAM
and ECR's filters read them."""

from __future__ import annotations

import pytest

from ecr_emulator.wildcards import matches


@pytest.mark.parametrize(("value", "pattern", "expected"), [
    ("ecr:BatchGetImage", "ecr:Batch*", True),
    ("ecr:BatchGetImage", "ecr:Batch?etImage", True),
    ("ecr:BatchGetImage", "ecr:Batch[GC]*", False),  # fnmatch: a character class, True
    ("team/[prod]", "team/[prod]", True),
    ("team/p", "team/[prod]", False),  # fnmatch: True
    ("team/app", "team/*", True),
    ("team/app", "TEAM/*", False),
    ("a.b", "a?b", True),
    ("axb", "a.b", False),  # a dot is a dot
    ("line\nbreak", "line*", True),
])
def test_only_star_and_question_mark_are_wildcards(value: str, pattern: str,
                                                   expected: bool) -> None:
    assert matches(value, pattern) is expected
