"""The suite's own account of a failed comparison of long byte strings (see
tests/support/failure_report.py): a few lines that still name the difference."""

from __future__ import annotations

import os

from tests.support.failure_report import explain, explain_bytes


def test_a_cut_short_body_is_named_as_a_prefix() -> None:
    data = os.urandom(4096)
    lines = explain_bytes(data[:3501], data)
    assert lines[:2] == ["bytes differ: left 3501 bytes, right 4096 bytes",
                         "left is the first 3501 bytes of right (595 missing)"]
    assert len(lines) == 6 and all(len(line) < 200 for line in lines)


def test_a_changed_byte_is_located() -> None:
    data = bytearray(os.urandom(1000))
    changed = bytes(data[:700]) + bytes([data[700] ^ 1]) + bytes(data[701:])
    assert explain_bytes(bytes(data), changed)[1] == "first difference at offset 700"


def test_lists_of_blobs_name_the_item_and_short_values_are_left_to_pytest() -> None:
    blob = os.urandom(300)
    lines = explain([b"a", blob], [b"a", blob[:-1]])
    assert lines is not None and "item 1:" in lines
    assert explain(b"short", b"other") is None
    assert explain([1, 2], [1, 3]) is None
