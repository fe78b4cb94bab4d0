"""``ecr-gateway sync``'s tag selection and printing take what an upstream lists: tags of
thousands of digits, escape sequences."""

from __future__ import annotations

from gateway.pullthrough.selection import TagSelection, parse_version
from gateway.pullthrough.sync import printable


def test_a_version_of_thousands_of_digits_is_no_version() -> None:
    assert parse_version("9" * 5000) is None
    assert parse_version("1.0.0-" + "9" * 5000) is None
    assert parse_version("9" * 18) == (10**18 - 1, 0, 0, ((2, 0, ""),))
    assert parse_version("1.2.3\n") is None
    chosen = TagSelection.of(last=2).select(["1.0.0", "9" * 5000, "2.0.0", "1.0.0-" + "9" * 5000])
    assert chosen == ["1.0.0", "2.0.0"]


def test_printed_text_cannot_drive_the_terminal() -> None:
    shown = printable("v1\x1b]0;pwned\x07\x1b[2J\r\u202e")
    assert shown == "v1\\x1b]0;pwned\\x07\\x1b[2J\\r\\u202e"
    assert printable("café 1.0") == "café 1.0"
