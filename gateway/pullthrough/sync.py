"""``ecr-gateway sync``: copy images from any OCI registry into ECR with the pull-through's
machinery, ahead of the first pull.

    ecr-gateway sync --config gateway.yaml docker.io/library/alpine docker-hub/library/alpine \
        --semver '>=3.19' --last 3
    ecr-gateway sync --config gateway.yaml --file images.yaml

DEST is a repository name as the gateway's clients see it (the configured routes map it onto
ECR). Only what ECR lacks moves: a tag that already points at the upstream's digest is left
alone, a blob ECR holds is not copied (BatchCheckLayerAvailability), so a run that stopped
half-way resumes where it was, and a second run moves nothing. Images are copied in
parallel; in a terminal a line per image shows its progress, elsewhere only the summary
table is printed. The exit status is 1 when anything failed, with the failures listed.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import aiohttp
import yaml

from gateway.backends.router import Storage
from gateway.config.secret_files import read_secret_file
from gateway.ecr.singleflight import SingleFlight
from gateway.oci.errors import OciError
from gateway.oci.mediatypes import MANIFEST_TYPES, ParsedManifest, parse_manifest
from gateway.oci.names import is_name, is_tag
from gateway.oci.offload import off_loop
from gateway.oci.request import RequestContext
from gateway.pullthrough import bounds, pace
from gateway.pullthrough.bounds import Fanout
from gateway.pullthrough.copy import copy_blob
from gateway.pullthrough.selection import TagSelection
from gateway.pullthrough.upstream import (
    EXACT_BYTES,
    ForeignSession,
    OciUpstream,
    UpstreamError,
    registry_url_problem,
)

# Docker Hub's registry API lives at another host than its image names.
_REGISTRY_OF = {"docker.io": "https://registry-1.docker.io"}


@dataclass(frozen=True)
class Job:
    """One source repository, the destination name, and which tags."""

    registry: str  # http(s)://host[:port]
    source: str  # the repository name at the source
    destination: str
    selection: TagSelection
    username: str | None = None
    password: str | None = None


@dataclass
class Outcome:
    image: str
    result: str = "pending"  # copied, unchanged, failed
    blobs: int = 0
    bytes: int = 0
    total: int = 0
    seconds: float = 0.0
    error: str = ""
    started: float = field(default_factory=time.monotonic)


def parse_source(reference: str) -> tuple[str, str, str | None]:
    """``[scheme://]host[:port]/name[:tag]`` → (registry URL, name, tag or None); a bare
    Docker Hub name gets ``library/``."""
    scheme = "https"
    if "://" in reference:
        scheme, reference = reference.split("://", 1)
    host, _, rest = reference.partition("/")
    if not rest or ("." not in host and ":" not in host and host != "localhost"):
        host, rest = "docker.io", reference  # no registry host given
    name, tag = rest, None
    if ":" in rest.rsplit("/", 1)[-1]:
        name, tag = rest.rsplit(":", 1)
    if host == "docker.io" and "/" not in name:
        name = f"library/{name}"
    registry = _REGISTRY_OF.get(host, f"{scheme}://{host}")
    return registry, name, tag


def without_userinfo(source: str) -> str:
    """``source`` without the ``user:password@`` a registry host may have been written with
    (refused, and never echoed where it lands in a terminal's or a CI job's log)."""
    scheme, separator, rest = source.partition("://") if "://" in source else ("", "", source)
    host, slash, path = rest.partition("/")
    return f"{scheme}{separator}{host.rpartition('@')[2]}{slash}{path}"


_ENTRY_KEYS = ("source", "destination", "tags", "username", "password_file")
_TAGS_KEYS = ("regex", "semver", "last")


def jobs_from_file(path: str) -> list[Job]:
    """images.yaml: ``images: [{source, destination, tags: {regex, semver, last},
    username, password_file}]``."""
    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not YAML ({exc})") from None
    if isinstance(document, dict) and any(key != "images" for key in document):
        unknown = next(str(key) for key in document if key != "images")
        raise ValueError(f"{path}: unknown key {printable(unknown)!r} (known: images)")
    images = (document.get("images") or []) if isinstance(document, dict) else None
    if not isinstance(images, list):
        raise ValueError(f"{path}: needs images: a list")
    jobs = []
    for i, entry in enumerate(images):
        where = f"{path}: images[{i}]"
        if not isinstance(entry, dict) or not all(
                isinstance(entry.get(key), str) for key in ("source", "destination")):
            raise ValueError(f"{where}: needs source and destination (strings)")
        tags = entry.get("tags") or {}
        if not isinstance(tags, dict):
            raise ValueError(f"{where}: tags must be a mapping of regex, semver and last")
        # A misspelt key is refused, not left out: ``semvar:`` would select every tag of
        # the source, ``password-file:`` ask it without the credentials meant for it.
        for keys, known, inside in ((entry, _ENTRY_KEYS, ""), (tags, _TAGS_KEYS, "tags: ")):
            misspelt = [str(key) for key in keys if key not in known]
            if misspelt:
                raise ValueError(f"{where}: {inside}unknown key {printable(misspelt[0])!r}"
                                 f" (known: {', '.join(known)})")
        for key in ("username", "password_file"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise ValueError(f"{where}: {key} must be a string")
        password = read_secret_file(entry["password_file"], f"{where}: password_file") \
            if entry.get("password_file") else None
        try:
            jobs.append(job(entry["source"], entry["destination"], tags.get("regex"),
                            tags.get("semver"), tags.get("last"), entry.get("username"),
                            password))
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None
    return jobs


def job(source: str, destination: str, regex: str | None = None, semver: str | None = None,
        last: int | None = None, username: str | None = None,
        password: str | None = None) -> Job:
    registry, name, tag = parse_source(source)
    shown = printable(without_userinfo(source))
    problem = registry_url_problem(registry)
    if problem is not None:  # as for a mirror's upstream
        raise ValueError(f"{shown}: {problem}")
    if not is_name(name):
        raise ValueError(f"{shown}: {printable(name)!r} is not a repository name")
    if tag is not None:
        if not is_tag(tag):
            raise ValueError(f"{shown}: {printable(tag)!r} is not a valid tag")
        if regex or semver or last:
            raise ValueError(f"{shown}: a tag in the source excludes tag patterns")
        regex = re.escape(tag)
    return Job(registry, name, destination, TagSelection.of(regex, semver, last),
               username, password)


class Progress:
    """One line per image, redrawn in place in a terminal; nothing elsewhere."""

    def __init__(self, out: TextIO, outcomes: list[Outcome]) -> None:
        self._out = out
        self._live = out.isatty()
        self._outcomes = outcomes
        self._drawn = 0

    def draw(self) -> None:
        if not self._live:
            return
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F")
        shown = [o for o in self._outcomes if o.result == "pending"][-10:]
        for o in shown:
            share = o.bytes / o.total if o.total else 0.0
            bar = "#" * int(share * 20)
            self._out.write(f"\x1b[2K{printable(o.image)[:50]:50} [{bar:20}] {_size(o.bytes):>9} / "
                            f"{_size(o.total):>9}\n")
        done = sum(o.bytes for o in self._outcomes)
        finished = sum(o.result != "pending" for o in self._outcomes)
        self._out.write(f"\x1b[2Ktotal {finished}/{len(self._outcomes)} images, "
                        f"{_size(done)}\n\x1b[J")
        self._drawn = len(shown) + 1
        self._out.flush()


class Syncer:
    def __init__(self, backend: Storage, http: aiohttp.ClientSession,
                 parallel: int, foreign: ForeignSession, *,
                 blob_grace: float = pace.GRACE_SECONDS,
                 blob_min_rate: float = pace.MIN_RATE) -> None:
        if parallel < 1:  # a semaphore of 0 would never let an image through
            raise ValueError(f"parallel must be at least 1, not {parallel}")
        self._backend = backend
        # What a blob's body must keep up with (pace.py): a source dribbling one cannot
        # hold the run for ever.
        self._blob_grace, self._blob_min_rate = blob_grace, blob_min_rate
        self._http = http
        # Redirects to other origins (a registry's CDN) go through one session for all jobs.
        self._foreign = foreign
        self._limit = asyncio.Semaphore(parallel)
        # Images copied at once often share layers: each goes up once.
        self._blobs: SingleFlight[bool] = SingleFlight("sync_blob")
        # Destinations created in this run (each once, by the first image writing into it).
        self._repositories: set[str] = set()
        self._creations: SingleFlight[bool] = SingleFlight("sync_repository")

    async def plan(self, jobs: list[Job]) -> tuple[list[tuple[Job, OciUpstream, str]],
                                                   list[Outcome]]:
        """Every (job, tag) to copy, and a failed outcome per source that cannot be listed."""
        images, unlisted = [], []
        for one in jobs:
            upstream = OciUpstream(one.registry, lambda: self._http, one.username,
                                   one.password, foreign=self._foreign,
                                   blob_grace=self._blob_grace,
                                   blob_min_rate=self._blob_min_rate)
            try:
                listed = await upstream.tags(one.source)
            except UpstreamError as exc:
                unlisted.append(Outcome(f"{one.destination} (from {one.source})", "failed",
                                        error=f"cannot list the source: "
                                              f"{failure(exc, upstream)}"))
                continue
            # The upstream's word: a name that is no OCI tag (a path, escape sequences, digits
            # by the thousand) is neither selected, nor asked for, nor printed.
            if listed.invalid:
                print(f"ecr-gateway sync: {printable(one.source)}: {listed.invalid} "
                      "tags the source lists are not valid tags: skipped", file=sys.stderr)
            try:
                chosen = await one.selection.select(listed.tags)
            except ValueError as exc:  # a pattern that backtracks against these tags
                unlisted.append(Outcome(f"{one.destination} (from {one.source})", "failed",
                                        error=f"cannot select the tags: {exc}"))
                continue
            images += [(one, upstream, tag) for tag in chosen]
        return images, unlisted

    async def copy(self, one: Job, upstream: OciUpstream, tag: str, outcome: Outcome,
                   progress: Progress) -> None:
        async with self._limit:
            outcome.started = time.monotonic()
            try:
                await self._copy(one, upstream, tag, outcome, progress)
            except UpstreamError as exc:
                outcome.result, outcome.error = "failed", failure(exc, upstream)
            except (OciError, OSError, aiohttp.ClientError) as exc:
                outcome.result, outcome.error = "failed", str(exc)
            outcome.seconds = time.monotonic() - outcome.started
            progress.draw()

    async def _copy(self, one: Job, upstream: OciUpstream, tag: str, outcome: Outcome,
                    progress: Progress) -> None:
        fetched = await upstream.manifest(one.source, tag, MANIFEST_TYPES)
        ctx = RequestContext(one.destination)  # as the gateway's own identity
        try:
            held = await self._backend.get_manifest(ctx, tag)
            if held.digest == fetched.digest:
                outcome.result = "unchanged"
                return
        except OciError:
            pass  # not there yet
        parsed = await off_loop(parse_manifest, fetched.body, fetched.media_type or None)
        bounds.check(parsed)  # before anything is written for it
        await self._contents(one, upstream, ctx, parsed, Fanout(), outcome, progress)
        await self._ensure_repository(ctx)
        await self._backend.put_manifest(ctx, tag, fetched.body, parsed)
        outcome.result = "copied"

    async def _ensure_repository(self, ctx: RequestContext) -> None:
        """Create the destination just before the first blob or manifest goes into it: an
        image whose blobs the source does not serve leaves no empty repository behind (they
        count against the account's quota)."""
        if ctx.name in self._repositories:
            return
        await self._creations.do(ctx.name, partial(self._backend.create_repository_for, ctx))
        self._repositories.add(ctx.name)

    async def _contents(self, one: Job, upstream: OciUpstream, ctx: RequestContext,
                        parsed: ParsedManifest, fanout: Fanout, outcome: Outcome,
                        progress: Progress) -> None:
        """What ``parsed`` references into ECR before it is put: an image's blobs; an
        index's manifests, each with what it references and put once that is held (one at
        a time: an index's entries are never all held in memory)."""

        def moved(count: int) -> None:
            outcome.bytes += count
            progress.draw()

        blobs = {b.digest: b for b in parsed.blobs}
        fanout.take_blobs(len(blobs))
        outcome.total += sum(b.size for b in blobs.values())
        for blob in blobs.values():
            if await self._blobs.do((one.destination, blob.digest), partial(
                    copy_blob, upstream, one.source, self._backend, ctx,
                    blob.digest, moved, blob.size, partial(self._ensure_repository, ctx))):
                outcome.blobs += 1
        for digest in dict.fromkeys(child.digest for child in parsed.children):
            level = fanout.child()
            child = await upstream.manifest(one.source, digest, MANIFEST_TYPES)
            child_parsed = await off_loop(parse_manifest, child.body, child.media_type or None)
            bounds.check(child_parsed)
            await self._contents(one, upstream, ctx, child_parsed, level, outcome, progress)
            await self._ensure_repository(ctx)
            await self._backend.put_manifest(ctx, child.digest, child.body, child_parsed)


async def run_sync(backend: Storage, jobs: list[Job], out: TextIO,
                   parallel: int = 4, *, blob_grace: float = pace.GRACE_SECONDS,
                   blob_min_rate: float = pace.MIN_RATE) -> int:
    async with aiohttp.ClientSession(auto_decompress=False, headers=EXACT_BYTES) as http, \
            ForeignSession() as foreign:
        syncer = Syncer(backend, http, parallel, foreign, blob_grace=blob_grace,
                        blob_min_rate=blob_min_rate)
        images, unlisted = await syncer.plan(jobs)
        copies = [Outcome(f"{one.destination}:{tag}") for one, _, tag in images]
        progress = Progress(out, copies)
        await asyncio.gather(*(syncer.copy(one, upstream, tag, outcome, progress)
                               for (one, upstream, tag), outcome in zip(images, copies,
                                                                        strict=True)))
    outcomes = unlisted + copies
    _summary(out, outcomes)
    failed = [o for o in outcomes if o.result == "failed"]
    for o in failed:
        print(f"ecr-gateway sync: {printable(o.image)}: {printable(o.error)}", file=sys.stderr)
    return 1 if failed else 0


def failure(exc: UpstreamError, upstream: OciUpstream) -> str:
    """A failure line's words for the source's refusal, by what it means: not there, not
    given, the credentials wrong, or not now."""
    registry = upstream.registry
    if exc.missing:
        return f"{registry} does not hold {exc.what} (404)"
    if exc.refused:
        needs = "the credentials given may not read it" if upstream.has_credentials \
            else "it needs credentials"
        return f"{registry} does not hold {exc.what}, or {needs} ({exc.status})"
    if exc.credentials_refused:
        return f"{registry} refuses the credentials given ({exc.status}) for {exc.what}"
    if exc.tls_failure:  # not an outage: trying again later changes nothing
        return f"{registry}: the TLS handshake failed, {exc.tls_failure} ({exc.what})"
    if exc.status == 429:
        return f"{registry} is rate-limiting (429): try again later ({exc.what})"
    if exc.unavailable:
        answered = f"answered {exc.status}" if exc.status else "could not be reached"
        return f"{registry} {answered}: try again later ({exc.what})"
    return f"{registry} answered {exc.status} for {exc.what}"


def _summary(out: TextIO, outcomes: list[Outcome]) -> None:
    width = max([len(printable(o.image)) for o in outcomes] + [5])
    out.write(f"{'image':{width}}  {'result':9}  {'blobs':>5}  {'bytes':>9}  {'seconds':>7}\n")
    for o in outcomes:
        out.write(f"{printable(o.image):{width}}  {o.result:9}  {o.blobs:>5}  {_size(o.bytes):>9}  "
                  f"{o.seconds:>7.1f}\n")
    counts = {r: sum(o.result == r for o in outcomes) for r in ("copied", "unchanged",
                                                                  "failed")}
    out.write(f"{len(outcomes)} images: {counts['copied']} copied, {counts['unchanged']} "
              f"unchanged, {counts['failed']} failed; "
              f"{_size(sum(o.bytes for o in outcomes))} moved\n")
    out.flush()


def printable(text: str) -> str:
    """``text`` with every control or format character (escape sequences, carriage returns,
    bidirectional overrides) written as its Python escape: what an upstream named cannot
    move the cursor, recolour or rewrite the terminal it is printed to."""
    return "".join(ch.encode("unicode_escape").decode("ascii")
                   if unicodedata.category(ch) in _UNPRINTABLE else ch for ch in text)


_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"
