"""Logging: plain text or one JSON object per line, at the configured level, with secrets
removed from every line whatever logged them.

``log_format: json`` gives ``{"ts", "level", "logger", "message", ...}`` per line; the access
log's line (logger ``gateway.access``) carries its fields at the top level instead of a
message. ``text`` keeps ``<time> <LEVEL> <logger> <message>`` with the access fields as one
JSON object in the message.

Redaction: the configured secrets (AWS secret key and session token, the Redis URL's
password, …) are replaced wherever they appear, and so is anything that looks like a
credential (``Authorization`` values, bearer/basic tokens, presigned URL signatures and
security tokens, ``password=``/``secret=``/``token=`` values).

In ``json``, everything the process writes is JSON, one object per line: the ready line on
stdout (``announce``), Python warnings (captured into the ``py.warnings`` logger), uncaught
exceptions (main thread and others), and the embedded emulator's lines (relayed by the
gateway, see gateway/serve.py).
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

MASK = "***"

# The id of the request being served, so that every line logged while serving it (ECR
# retries, upstream failures) can be matched with its access line.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id",
                                                                         default=None)


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True

_PATTERNS = (
    # header or field name, then its value: a quoted one up to its closing quote (an escaped
    # quote is part of it), a bare one up to a separator (a quote in it too: password=ab"cd).
    # Text is redacted before anything encodes it (Redactor.values), so no quote here is JSON's.
    # "password" and "secret" count anywhere (dbpassword=); the shorter names only standing
    # on their own, so "htpasswd: user 'x'" (a file name) is left alone ("_" and "-" are
    # separators: aws_session_token, x-amz-security-token).
    re.compile(r'(?i)(?P<name>(?:password|secret(?:_access_key)?|(?<![a-z0-9])(?:authorization'
               r'|x-amz-security-token|x-amz-signature|x-amz-credential|passwd|session_token'
               r'|access_token|refresh_token|token)|"token")["\']?\s*[:=]\s*(?P<quote>["\'])?)'
               r'(?P<scheme>(?:bearer|basic|aws4-hmac-sha256)\s+)?'
               r'(?(quote)(?:\\.|(?!(?P=quote))[^\\])+|[^&\s,]+)'),
    # a bare bearer/basic credential
    re.compile(r"(?i)(\b(?:bearer|basic)\s+)([A-Za-z0-9._~+/=-]{8,})()"),
    # user:password@ in URLs (redis://:pw@host, https://u:pw@host)
    re.compile(r"(://[^/\s:@]*:)([^@\s/]+)(@)"),
    # other stores' signed URLs, as a registry's redirect to its CDN names them (CloudFront's
    # Signature=, Google's X-Goog-Signature=, Azure's sig=): a credential for the URL's
    # lifetime. Query parameters only: "team/sig:v1" names an image.
    re.compile(r"(?i)([?&](?:signature|x-goog-signature|x-goog-credential|sig)=)"
               r"([^&\s\"'#]+)()"),
)


# What each of _PATTERNS needs to match at all (the first's names all hold one of the first
# five, the second's scheme one of the next two, a URL's credentials an "@", a signed URL's
# parameter "sig" or "x-goog"): a text without any, most of an access line's fields, is
# left as it is without running them.
_MAY_HOLD_CREDENTIALS = re.compile(
    r"(?i)pass|secret|authorization|x-amz|x-goog|token|bearer|basic|sig|@")


class Redactor:
    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        if not _MAY_HOLD_CREDENTIALS.search(text):
            return text
        first, bare, url, signed = _PATTERNS
        text = first.sub(lambda m: f"{m['name']}{m['scheme'] or ''}{MASK}", text)
        text = bare.sub(lambda m: f"{m[1]}{MASK}", text)
        text = url.sub(lambda m: f"{m[1]}{MASK}{m[3]}", text)
        return signed.sub(lambda m: f"{m[1]}{MASK}", text)

    def values(self, value: object) -> object:
        """``value`` (JSON-like data) with every string in it redacted. Data about to become
        JSON is redacted before JSON escapes it: a secret holding a quote, a backslash, a
        control or a non-ASCII character is no longer itself once encoded."""
        if isinstance(value, dict):
            return {key: self.values(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.values(item) for item in value]
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self(str(value))


# C0 and C1 controls but the tab, DEL, and the Unicode line and paragraph separators.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    return _CONTROLS.sub(lambda m: f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                         else f"\\u{ord(m[0]):04x}", text)


class TextFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "access", None)
        if isinstance(fields, dict) and not record.exc_info:
            # Its message is the fields as JSON: each redacted before it is encoded, as in json.
            # Formatted on the record itself (one line per request: no copy of it made).
            record.message = json.dumps(self._redact.values(fields))
            record.asctime = self.formatTime(record)
            return self.formatMessage(record)
        # One event, one line: a message quoting another's words (an upstream registry's
        # error text, say) keeps its line breaks and terminal escapes as visible escapes, so
        # it cannot end the line early and pass for lines of the gateway's own. Redacted
        # first: a secret holding such a character is itself only before the escape.
        message = _escape_controls(self._redact(record.getMessage()))
        line = super().format(logging.makeLogRecord(
            {**record.__dict__, "msg": message, "args": None}))
        request_id = getattr(record, "request_id", None)
        if request_id:
            line += f" request_id={request_id}"
        return self._redact(line)


class JsonFormatter(logging.Formatter):
    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self._redact = redact

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            entry.update(fields)
        else:
            entry["message"] = record.getMessage()
            request_id = getattr(record, "request_id", None)
            if request_id:
                entry["request_id"] = request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(self._redact.values(entry))


_format = "text"


def setup(level: str, fmt: str = "text", secrets: Iterable[str | None] = ()) -> None:
    """Send every log line to stderr in ``fmt`` at ``level``, redacted."""
    global _format
    _format = fmt
    redact = Redactor(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(redact) if fmt == "json" else TextFormatter(redact))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # Lines Python would print itself go through the same handler, so that in json every
    # line parses.
    logging.captureWarnings(True)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught
    # botocore logs request details (signed headers included) at DEBUG: never below WARNING.
    for noisy in ("botocore", "aiobotocore", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def announce(message: str, **fields: Any) -> None:
    """Print a line for whoever started the process (the ready line) on stdout: as it is in
    ``text``, as a log object in ``json``."""
    if _format != "json":
        print(message, flush=True)
        return
    record = logging.LogRecord("gateway", logging.INFO, __file__, 0, message, None, None)
    entry = json.loads(JsonFormatter(Redactor()).format(record))
    print(json.dumps({**entry, **fields}), flush=True)


def _log_uncaught(kind: type[BaseException], value: BaseException,
                  tb: TracebackType | None) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("gateway").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit or args.exc_value is None:
        return
    logging.getLogger("gateway").error(
        "uncaught exception in thread %s", args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))


class Sparing:
    """Says each kind of warning at most once per ``seconds``: an upstream down or a wrong
    setting would otherwise repeat its line on every request (the metrics count them all).
    :meth:`due` answers whether to say it now, and how many went unsaid since the last time."""

    def __init__(self, seconds: float = 60.0, clock: Any = time.monotonic) -> None:
        self._seconds = seconds
        self._clock = clock
        self._said: dict[str, tuple[float, int]] = {}  # kind -> (when said, unsaid since)

    def due(self, kind: str) -> int | None:
        """None: not now (counted); else the number left unsaid since it was last said."""
        now = self._clock()
        said = self._said.get(kind)
        if said is not None and now - said[0] < self._seconds:
            self._said[kind] = (said[0], said[1] + 1)
            return None
        self._said[kind] = (now, 0)
        return 0 if said is None else said[1]


def unsaid(count: int) -> str:
    """What a spared line adds about the ones left out before it."""
    return f" ({count} more like it since the last such line)" if count else ""

