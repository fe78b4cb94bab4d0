"""AWS Signature Version 4, checked the way AWS checks it.

A request is verified in two steps so that a streamed body never has to be held:
``Verifier.begin`` reads the ``Authorization`` header and checks everything that does not
need the body (the key is known, its session token and expiry, the credential scope's date,
region, service and terminator, the clock skew, the signed headers) and builds the canonical
request up to its payload hash; the caller then feeds each body chunk to ``Pending.update``
as it arrives and calls ``Pending.finish``, which compares the signature computed over the
sha256 of the bytes actually received.

For AWS JSON APIs the payload hash in the canonical request is always the body's own hash,
so an ``X-Amz-Content-SHA256`` header that does not match the body, or ``UNSIGNED-PAYLOAD``,
makes the signature fail as it does on AWS. Errors are AwsError with the names and statuses
botocore gets from AWS JSON services.
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import hmac
import posixpath
import re
import time
from calendar import timegm
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC
from typing import Protocol
from urllib.parse import quote, unquote

from ecr_emulator.credentials import Credential, CredentialStore
from ecr_emulator.errors import AwsError

ALGORITHM = "AWS4-HMAC-SHA256"
# Seconds between X-Amz-Date and the emulator's clock, either way: ECR's own refusals read
# "Signature expired: ... is now earlier than ... (... - 15 min.)" (GetAuthorizationToken).
MAX_SKEW = 900
_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_BASIC_DATE = re.compile(r"\d{8}T\d{6}Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")
_MISMATCH = ("The request signature we calculated does not match the signature you provided. "
             "Check your AWS Secret Access Key and signing method. Consult the service "
             "documentation for details.")


class Headers(Protocol):
    def getall(self, key: str, /) -> list[str]: ...

    def get(self, key: str, /) -> str | None: ...


class SignedRequest(Protocol):
    """What the verifier reads of a request (an aiohttp Request has all of it)."""

    @property
    def method(self) -> str: ...

    @property
    def raw_path(self) -> str: ...  # path and query exactly as received

    @property
    def headers(self) -> Headers: ...


@dataclass(frozen=True)
class Scope:
    access_key_id: str
    date: str
    region: str
    service: str


def incomplete(message: str) -> AwsError:
    return AwsError("IncompleteSignatureException", message)


def invalid(message: str = _MISMATCH) -> AwsError:
    return AwsError("InvalidSignatureException", message)


def missing_token() -> AwsError:
    return AwsError("MissingAuthenticationTokenException", "Missing Authentication Token",
                    status=403)


class Pending:
    """A request whose headers passed; the body's hash decides."""

    def __init__(self, scope: Scope, timestamp: str, canonical_head: str, signing_key: bytes,
                 signature: str, claimed_hash: str | None, credential: Credential) -> None:
        self.scope = scope
        # The key as it stood when the request was checked (its account decides the registry):
        # not looked up again, as the file may have been read anew since.
        self.credential = credential
        self._timestamp = timestamp
        self._head = canonical_head
        self._key = signing_key
        self._signature = signature
        self._claimed = claimed_hash
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes | bytearray | memoryview) -> None:
        self._hash.update(chunk)

    def finish(self) -> None:
        """InvalidSignatureException unless the signature covers the bytes received."""
        payload = self._hash.hexdigest()
        canonical = f"{self._head}\n{payload}"
        scope = self.scope
        string_to_sign = "\n".join((
            ALGORITHM, self._timestamp,
            f"{scope.date}/{scope.region}/{scope.service}/aws4_request",
            hashlib.sha256(canonical.encode()).hexdigest()))
        expected = hmac.new(self._key, string_to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, self._signature):
            if self._claimed is not None and self._claimed != payload:
                raise invalid(_MISMATCH + " The X-Amz-Content-SHA256 header does not match "
                              "the body received.")
            raise invalid()


class Verifier:
    def __init__(self, store: CredentialStore, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def begin(self, request: SignedRequest, *, service: str, region: str | None) -> Pending:
        """Check all but the body; raises AwsError as AWS would answer. ``region`` None:
        any well-formed region (one endpoint standing for every regional one).

        The checks come in the order AWS makes them: the form of the header and its date, the clock,
        ``host`` signed, the credential scope, and only then the key."""
        sent = request.headers
        encoding = (sent.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            # The signature covers the body as sent, and the body reaches the emulator only
            # decoded: it could not be checked (ECR's API has no request compression).
            raise AwsError("SerializationException",
                           f"Content-Encoding {encoding!r} is not accepted: send the body "
                           "uncompressed")
        header = sent.get("Authorization")
        if header is not None and "X-Amz-Algorithm" in _query_names(request.raw_path):
            raise invalid("Found both 'X-Amz-Algorithm' as a query-string param and "
                          "'Authorization' as HTTP header.")
        if header is None:
            raise missing_token()
        amz_date = sent.get("X-Amz-Date")
        raw_date = amz_date or sent.get("Date") or ""
        # A repeated header reads as its values joined by commas (RFC 9110, 5.3): the
        # second scheme is then a component that is no key=value pair.
        fields = _authorization_fields(", ".join(sent.getall("Authorization")),
                                       has_date=bool(raw_date))
        when = _parse_date(raw_date, http_date=not amz_date)
        if when is None:
            raise incomplete(f"Date must be in ISO-8601 'basic format'. Got '{raw_date}'. "
                             "See http://en.wikipedia.org/wiki/ISO_8601")
        timestamp = _format(when)  # what the string to sign holds, whichever header
        now = self._clock()
        if when < now - MAX_SKEW:
            raise invalid(f"Signature expired: {timestamp} is now earlier than "
                          f"{_format(now - MAX_SKEW)} ({_format(now)} - 15 min.)")
        if when > now + MAX_SKEW:
            raise invalid(f"Signature not yet current: {timestamp} is still later than "
                          f"{_format(now + MAX_SKEW)} ({_format(now)} + 15 min.)")
        # Names compare without case; the canonical request lists them lowercase and
        # sorted, so a signature over any other order or case does not match.
        signed = sorted({name.lower() for name in fields["SignedHeaders"].split(";") if name})
        if "host" not in signed:
            raise invalid("'Host' or ':authority' must be a 'SignedHeader' in the AWS "
                          "Authorization.")
        credential = fields["Credential"].split("/")
        if len(credential) != 5:
            raise incomplete("Credential must have exactly 5 slash-delimited elements, e.g. "
                             f"keyid/date/region/service/term, got '{fields['Credential']}'")
        key_id, date, scope_region, scope_service, terminator = credential
        problems = []
        if scope_region != region and (region is not None
                                       or not _REGION.fullmatch(scope_region)):
            problems.append(f"Credential should be scoped to a valid region, not "
                            f"'{scope_region}'. ")
        if scope_service != service:
            problems.append(f"Credential should be scoped to correct service: '{service}'. ")
        if terminator != "aws4_request":
            problems.append(f"Credential should be scoped with a valid terminator: "
                            f"'aws4_request', not '{terminator}'. ")
        if date != timestamp[:8]:
            problems.append(f"Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                            f"version of date from HTTP: '{date}' != '{timestamp[:8]}', from "
                            f"'{timestamp}'.")
        if problems:
            raise invalid("".join(problems))
        known = self.store.lookup(key_id)
        if known is None:
            raise AwsError("UnrecognizedClientException",
                           "The security token included in the request is invalid.")
        token = sent.get("X-Amz-Security-Token")
        if known.session_token is not None or token is not None:
            if token is None or known.session_token is None or not hmac.compare_digest(
                    token.encode(), known.session_token.encode()):
                raise AwsError("UnrecognizedClientException",
                               "The security token included in the request is invalid.")
        if known.expires_at is not None and now >= known.expires_at:
            raise AwsError("ExpiredTokenException",
                           "The security token included in the request is expired")
        # The date and the action are what a replayed signature would change: both signed
        # (SigV4: a date header and the x-amz-* headers sent go into SignedHeaders).
        for name in ("x-amz-date" if amz_date is not None else "date", "x-amz-target"):
            if sent.get(name) is not None and name not in signed:
                raise invalid(f"'{name}' must be a 'SignedHeader' in the AWS Authorization.")
        for name in signed:
            if name != "host" and sent.get(name) is None:
                raise invalid(f"The header '{name}' is in SignedHeaders but not in the "
                              "request.")
        head = canonical_head(request, signed)
        claimed = sent.get("X-Amz-Content-SHA256")
        return Pending(Scope(key_id, date, scope_region, scope_service), timestamp, head,
                       signing_key(known.secret_access_key, date, scope_region, scope_service),
                       fields["Signature"], claimed, known)


def _authorization_fields(header: str, *, has_date: bool) -> dict[str, str]:
    scheme, _, rest = header.strip().partition(" ")
    if scheme != ALGORITHM:
        raise incomplete(f"Authorization header requires the {ALGORITHM} scheme. "
                         f"Authorization={scheme}")
    fields: dict[str, str] = {}
    # Components are separated by commas, blanks or both, in any order.
    for part in re.split(r"[,\s]+", rest):
        if not part:
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise incomplete(f"'{name}' not a valid key=value pair (missing equal-sign) in "
                             "Authorization header.")
        fields[name] = value
    missing = "".join(f"Authorization header requires '{name}' parameter. "
                      for name in ("Credential", "Signature", "SignedHeaders")
                      if not fields.get(name))
    if not has_date:
        missing += ("Authorization header requires existence of either a 'X-Amz-Date' or a "
                    "'Date' header. ")
    if missing:
        raise incomplete(f"{missing}Authorization={scheme}")
    if not _HEX64.fullmatch(fields["Signature"]):
        raise incomplete("Authorization header requires a Signature of 64 hexadecimal "
                         "digits.")
    return fields


def _query_names(raw_path: str) -> set[str]:
    query = raw_path.partition("?")[2]
    return {unquote(item.partition("=")[0]) for item in query.split("&") if item}


def _parse_date(value: str, *, http_date: bool) -> float | None:
    """The instant of an ISO 8601 basic-format stamp, or with ``http_date`` also of an
    HTTP date (a ``Date`` header as HTTP writes it, which is how botocore sends one)."""
    if _BASIC_DATE.fullmatch(value):  # strptime alone takes unpadded fields
        try:
            return float(timegm(time.strptime(value, _DATE_FORMAT)))
        except ValueError:
            return None
    if not http_date:
        return None
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # "-0000": UTC, with no claim about the local zone
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _format(moment: float) -> str:
    return time.strftime(_DATE_FORMAT, time.gmtime(moment))


def canonical_head(request: SignedRequest, signed: Iterable[str]) -> str:
    """The canonical request without its last line, the payload hash."""
    path, _, query = request.raw_path.partition("?")
    names = list(signed)
    headers = []
    for name in names:
        values = request.headers.getall(name) if name != "host" else [
            request.headers.get("Host") or ""]
        headers.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    return "\n".join((request.method.upper(), canonical_uri(path), canonical_query(query),
                      "\n".join(headers) + "\n", ";".join(names)))


def canonical_uri(path: str) -> str:
    # The path as received is already percent-encoded; SigV4 (but for S3) encodes it again.
    normalized = posixpath.normpath(path or "/")
    if normalized.startswith("//"):
        normalized = normalized[1:]
    if path.endswith("/") and normalized != "/":
        normalized += "/"
    return quote(normalized, safe="/~")


def canonical_query(query: str) -> str:
    """Every parameter of the query, sorted and encoded: with header authentication a
    parameter added after signing (even one named X-Amz-Signature) breaks the signature."""
    pairs = []
    for item in query.split("&") if query else []:
        if not item:
            continue
        name, _, value = item.partition("=")
        pairs.append((quote(unquote(name), safe="-_.~"), quote(unquote(value), safe="-_.~")))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


@functools.lru_cache(maxsize=256)
def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = f"AWS4{secret}".encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
