"""The configuration's typed sections (pydantic models) with their defaults.

Every key has a default, so an empty file (or none) gives the embedded-emulator setup. The
models refuse unknown keys and values of the wrong type; the checks that belong to one part
of the gateway (access rules, routes, pull-through upstreams, shared state) live beside that
part and are called from the validators here (imported inside them: those modules import
this package). Each field's docstring is its description in the published JSON Schema
(docs/config.schema.json).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from gateway.config.errors import ConfigError
from gateway.config.secret_files import read_secret_file

# Numbers and booleans are taken as YAML typed them: "5" is not 5, and 1 is not true.
Seconds = Annotated[float, Strict(), Field(ge=0)]
Count = Annotated[int, Strict(), Field(ge=0)]
Flag = Annotated[bool, Strict()]
# The policy documents: a mapping, or its JSON text (checked with the route they belong to,
# so that "[1]" is refused as not a mapping rather than once per member of a union).
PolicyDocument = Annotated[Any, WithJsonSchema(
    {"anyOf": [{"type": "object"}, {"type": "string"}, {"type": "null"}]})]
# HOST:PORT, for editors and the Helm chart; the validators below give the clear refusal.
_HOST_PORT = {"pattern": r"^.+:[0-9]{1,5}$"}


class Section(BaseModel):
    """What every section shares: unknown keys refused, an empty section (``auth:`` with
    nothing under it) taking every default, numbers accepted where strings are meant
    (``registry_id: 123456789012``)."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True,
                              use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_is_default(cls, data: Any) -> Any:
        return {} if data is None else data


class RepositorySettings(Section):
    """What CreateRepository is given when ``create_on_push`` creates a repository, and what
    is applied to it right after (the gateway's repository creation template)."""

    image_tag_mutability: Literal["MUTABLE", "IMMUTABLE"] = "MUTABLE"
    scan_on_push: Flag = False
    encryption_type: Literal["AES256", "KMS"] = "AES256"
    kms_key: str | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    repository_policy: PolicyDocument = None
    """SetRepositoryPolicy: an IAM policy document (a mapping, or its JSON text)."""
    lifecycle_policy: PolicyDocument = None
    """PutLifecyclePolicy (ECR only): {"rules": [...]} (a mapping, or its JSON text)."""

    def policy_text(self) -> str | None:
        return _json_text(self.repository_policy)

    def lifecycle_text(self) -> str | None:
        return _json_text(self.lifecycle_policy)


def _json_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, indent=2)


class RouteConfig(Section):
    """Client repository names under ``prefix`` map to ECR repositories under
    ``repository_prefix`` in ``registry_id``/``region``. The longest matching prefix wins;
    a prefix is itself a repository name (no name could start with any other)."""

    prefix: str = ""
    repository_prefix: str = ""
    registry_id: str | None = None
    region: str | None = None
    """None: upstream.region."""
    create_on_push: Flag = True
    anonymous_pull: Flag = False
    """Pulls need no client credentials on this route (honoured by the auth layer)."""
    repository: RepositorySettings = Field(default_factory=RepositorySettings)
    upstream_kind: Literal["ecr", "ecr-public"] = "ecr"
    """"ecr", or "ecr-public": the repositories are ECR Public's (us-east-1), pushed through
    its API and pulled from its registry endpoint."""
    registry_url: str | None = None
    """ECR Public: the registry endpoint pulls go to (https, http only on loopback; it gets
    the ECR Public password). None: https://public.ecr.aws, or the embedded emulator's with
    upstream.mode embedded."""
    registry_alias: str | None = None
    """ECR Public: the alias in pull paths (<registry_url>/v2/<alias>/<repository>/...).
    None: the registry's primary alias (DescribeRegistries); "": names carry the alias (a
    mirror of others' public repositories: it takes no pushes or deletes, 405)."""
    catalog_data: Literal["none", "from_annotations"] = "none"
    """ECR Public: "from_annotations" fills the repository's catalog data (description,
    about, usage, architectures, operating systems) from each tagged image pushed."""
    upstream: PullThroughConfig | None = None
    """Fill ECR from this registry on a miss (pull-through, as a mirror's upstream): a name
    under ``prefix`` is asked of it without the prefix. None: serve what ECR holds. The
    repositories it fills, with the gateway's identity, are its own: no other route's (the
    catch-all added when none has the prefix "" included) or mirror's repository_prefix may
    equal ``repository_prefix`` or lie inside it, unless a longer route takes those names."""

    @model_validator(mode="after")
    def _route(self) -> Self:
        from gateway.ecr.routing import check_route

        check_route(self)
        return self


class PullThroughConfig(Section):
    """The registry a mirror fills ECR from when ECR does not hold what a client asks for:
    any OCI registry, anonymous, with the docker token flow or Basic auth. ``password_file``
    holds the password (never the configuration itself)."""

    url: str = ""
    username: str | None = None
    password_file: str | None = None
    tag_ttl_seconds: Seconds = 300.0
    """How long a tag is trusted before one HEAD asks the upstream whether it moved."""
    platforms: Literal["all", "requested"] = "all"
    """An index's children copied into ECR: "all", or only those clients ask for."""
    timeout_seconds: Seconds = 30.0
    """Connect and read timeout of each upstream request; a manifest, a token or a tag page
    must also arrive whole within four times this."""
    blob_grace_seconds: Seconds = 20.0
    """How long a blob's body may take before ``blob_min_rate`` applies to it."""
    blob_min_rate: Count = 64 * 1024
    """Bytes a second a blob's body must keep up with on average (counted from its start)
    once ``blob_grace_seconds`` have passed, or its transfer is cut off as the upstream's
    failure: one that sends a byte just inside each read timeout would otherwise hold the
    fill, its spool budget and the clients waiting for it for ever. 0: no floor."""
    max_blob_transfers: Annotated[int, Strict(), Field(ge=1)] = 32
    """Blob transfers from this upstream in flight at once in one process (each holds a
    connection, a spool file and two spooling threads until its body ends or falls below
    ``blob_min_rate``). Beyond it a transfer waits a few seconds for its turn, then its
    client gets a 503 with Retry-After: an upstream that sends headers and then stalls,
    asked for many blobs, holds no more than this."""
    max_new_repositories_per_hour: Annotated[int, Strict(), Field(ge=0)] = 100
    """ECR repositories this upstream's fills may create in an hour (sliding, per process);
    0: no bound. Each distinct image a client pulls through is one more repository, created
    with the gateway's identity: without a bound, any client allowed to pull through could
    spend the account's repository quota (10,000 a region by default) and every team's new
    repository would then be refused. Past it, an image whose repository ECR does not hold
    is served from the upstream (verified, as any cold pull) but not stored, with a warning;
    fills into repositories that exist are never bounded, nor is ``ecr-gateway sync``."""
    token_realm_hosts: list[str] = Field(default_factory=list)
    """Hosts besides the upstream's own (and the known realm of a well-known registry, such as
    ``auth.docker.io`` for ``registry-1.docker.io``) that its token realm may name: the
    credentials and token requests go to no other host. A shared domain is not enough."""
    private_redirects: Flag = False
    """The upstream's redirects to another origin (its blob storage) may lead to private
    networks: RFC 1918, CGNAT 100.64.0.0/10 and IPv6 ULA, for a registry whose storage lives
    in the operator's network (an S3 interface endpoint). Off: globally routable addresses
    only. Loopback, link-local and cloud metadata addresses are refused either way."""

    def password(self) -> str | None:
        if not self.password_file:
            return None
        return read_secret_file(self.password_file, "upstream password file")

    @model_validator(mode="after")
    def _upstream(self) -> Self:
        from gateway.pullthrough.upstream import check_pull_through

        check_pull_through(self)
        return self


class MirrorConfig(Section):
    """Where requests for one upstream registry go when a mirror client names it with
    ``?ns=<host>`` (containerd does, on every request to a mirror). ``<host>/<name>`` is
    served from the ECR repository ``repository_prefix/<name>``: ``docker.io`` with prefix
    ``docker-hub`` maps ``docker.io/library/nginx`` to ``docker-hub/library/nginx``, as an
    ECR pull-through cache rule with that prefix names it. For an ECR host
    (``<account>.dkr.ecr.<region>.amazonaws.com``) registry_id and region default to the
    ones in the host name. Mirror routes are pull-only: nothing is created on push."""

    repository_prefix: str = ""
    """Required with ``upstream``, and then the mirror's alone: it fills these repositories
    with the gateway's identity, so no other mirror's prefix may equal it, lie inside it or
    hold it, and no route's repository_prefix may equal it or lie inside it."""
    registry_id: str | None = None
    """None: from an ECR host name, else the caller's own."""
    region: str | None = None
    """None: from an ECR host name, else upstream.region."""
    anonymous_pull: Flag = False
    """Pulls through this mirror need no credentials (honoured by the auth layer, within its
    access rules). Off by default: containerd can send a per-node credential instead."""
    registry_url: str | None = None
    """public.ecr.aws only (an ECR Public mirror): the registry endpoint pulls go to (https,
    http only on loopback). None: https://public.ecr.aws, or the embedded emulator's with
    upstream.mode embedded."""
    upstream: PullThroughConfig | None = None
    """Fill ECR from this registry on a miss (pull-through); None: serve what ECR holds."""


class CacheConfig(Section):
    """The pull path's in-memory caches (per process)."""

    tag_ttl_seconds: Seconds = 5.0
    """How long a tag → digest answer is reused (0: every tag read asks ECR)."""
    manifest_max_bytes: Count = 64 * 1024**2
    """Manifests by digest (immutable), least recently used dropped beyond this size."""
    manifest_revalidate_seconds: Seconds = 5.0
    """A manifest by digest is served from the cache this long after ECR last confirmed it;
    older, it is asked for again (an image deleted elsewhere is not served beyond this).
    With auth.mode aws it also bounds every answer kept for one identity (download URLs,
    which blobs a repository holds, its right to push to uploads others opened): keys or
    permissions IAM withdrew end within it."""
    download_url_ttl_seconds: Seconds = 300.0
    """Presigned download URLs are reused this long (well within their validity); those got
    with a caller's own keys (auth.mode aws) at most manifest_revalidate_seconds."""
    listing_max_bytes: Count = 64 * 1024**2
    """Tag lists and the catalog kept for paging (for tag_ttl_seconds), least recently read
    dropped beyond this estimate of their size."""


class UpstreamConfig(Section):
    mode: Literal["embedded", "aws"] = "embedded"
    """"embedded": start the ECR emulator; "aws": a real (or given) ECR."""
    region: str = "us-east-1"
    endpoint_url: str | None = None
    public_endpoint_url: str | None = None
    """The ECR Public API (routes with upstream_kind ecr-public). None: endpoint_url."""
    access_key_id: str | None = None
    secret_access_key: str | None = None
    session_token: str | None = None
    retry_budget_seconds: Seconds = 10.0
    call_timeout_seconds: Seconds = 60.0
    connect_timeout_seconds: Seconds = 5.0
    max_connections: Count = 64
    http_connect_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 10.0
    """The gateway's own HTTP client (blob downloads in proxy mode and for mounts, the ECR
    Public registry): to open a connection. An upstream that stops answering fails the
    request with 503 instead of holding it for ever."""
    http_pool_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 30.0
    """The gateway's own HTTP client: to wait for a free connection in the pool."""
    http_read_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 60.0
    """The gateway's own HTTP client: the longest silence while reading an answer."""
    breaker_failures: Count = 5
    """Circuit breaker: after this many consecutive outage failures (no answer, 5xx) calls
    to the endpoint fail at once with 503 for breaker_open_seconds, then one probe goes (0:
    off)."""
    breaker_open_seconds: Seconds = 2.0
    private_downloads: Flag = False
    """Blob download URLs the gateway fetches itself (proxy mode, mounts) may lead to
    private networks (RFC 1918, CGNAT, IPv6 ULA): S3 reached through an interface VPC
    endpoint. Off: https to globally routable addresses only, besides the configured
    endpoints' own origins; loopback, link-local and metadata addresses never."""

    @model_validator(mode="after")
    def _endpoints_need_aws(self) -> Self:
        # the embedded emulator replaces them, so a configured endpoint would go unused
        for key in ("endpoint_url", "public_endpoint_url"):
            if self.mode == "embedded" and getattr(self, key):
                raise ConfigError(key, "is called only with upstream.mode: aws (the embedded"
                                       " emulator has its own); set upstream.mode: aws")
        return self


class StagingConfig(Section):
    """Uploaded blobs kept locally until an image references them (ECR cannot serve them)."""

    max_bytes: Count = 10 * 1024**3
    """Past it, the least recently read staged blobs go (down to 90% of it). Processes
    sharing the data folder count each other's blobs every 10 seconds, so the folder may
    briefly hold more by what the others staged meanwhile."""
    spools_max_bytes: Count = 10 * 1024**3
    """Disk the spools of unfinished uploads may take at once (each upload's bytes are
    spooled while they go to ECR, so that the blob can be read before an image references
    it). An upload that does not fit goes on unspooled: its blob is then served once an
    image references it, and a tail under ECR's 5 MiB part minimum waits in the session
    store. So clients that open uploads and never finish them cannot fill the disk. Counted
    per process (each process sharing the data folder counts the others' spools every 10
    seconds). 0: no bound."""
    pullthrough_max_bytes: Count = 10 * 1024**3
    """Disk that blobs being pulled through from an upstream may take at once (each is
    spooled while it is copied into ECR): a cold pull beyond it is answered 503 with
    Retry-After, so a burst of cold pulls never fills the disk pushes stage on."""


class BlobCacheConfig(Section):
    """Proxy mode: a local copy of every blob served, shared by all repositories."""

    path: str | None = None
    """None: no blob cache."""
    max_bytes: Count = 20 * 1024**3


class BlobsConfig(Section):
    mode: Literal["redirect", "proxy"] = "redirect"
    """"redirect" (307 to the download URL) or "proxy" (the gateway streams the blob)."""
    staging: StagingConfig = Field(default_factory=StagingConfig)
    cache: BlobCacheConfig = Field(default_factory=BlobCacheConfig)
    direct_io: Literal["auto", "always", "never"] = "auto"
    """How the gateway writes and reads its own blob files: staged pushes and pull-through
    spools, and the blob cache's copies of those spools (its fills from ECR go through the
    page cache, where a direct write would make the client wait for the disk). ``always``:
    with O_DIRECT, past the page cache (each byte goes to the disk at once); ``never``:
    through the page cache (a staged blob its image references before write-back never
    reaches the disk); ``auto``: ``always`` on a virtual machine whose memory balloon
    reports freed pages to its host, where each new page-cache page costs a fault in the
    host (measured: 2.9 CPU-s per GiB staged, against 0.2 written directly), ``never``
    elsewhere."""


class UploadsConfig(Section):
    idle_timeout_seconds: Seconds = 3600.0
    """A session no request touched for this long is dropped with its spool. The embedded
    emulator ends an upload that received no part for twice as long, deleting its parts
    (ECR has no call to cancel one)."""
    finished_timeout_seconds: Seconds = 60.0
    """A session whose layer was completed but that outlived its closing PUT (the process
    died, or the store failed, before deleting it) is kept this long after the layer was
    completed, for the client's PUT again, then dropped with its spool (it took no more
    bytes anyway). Capped at ``idle_timeout_seconds``."""


class ClientKeyConfig(Section):
    """How a caller without a login is told apart from another by its address, for the
    per-client ``limits`` and the failed logins per address (``auth.rate_limit``). The
    address is the peer's, or the one the ``trusted_proxies`` forwarded. Replicas sharing
    Redis need the same setting (their session counts are kept per key): one that differs
    is named in a warning (gateway/state/agreement.py)."""

    ipv6_prefix_length: Annotated[int, Strict(), Field(ge=32, le=128)] = 64
    """An IPv6 client counts by this prefix of its address. 64: a host is routinely handed a
    whole /64, and counted per address it would have 2**64 fresh limits. Shorter (56, 48)
    where the clients that matter are sites an ISP hands a /56 or /48; longer (up to 128)
    only where many distinct clients share a /64 (IPv6 pods of a cluster subnet) and the
    addresses are the operator's own: any other holder of a /64 then is 2**64 clients, held
    only by the registry-wide bounds."""
    ipv4_prefix_length: Annotated[int, Strict(), Field(ge=16, le=32)] = 32
    """An IPv4 client (and one an IPv6 address carries) counts by this prefix of its
    address; 32: the address itself."""
    nat64_prefixes: list[str] = Field(default_factory=lambda: ["64:ff9b::/96"])
    """Prefixes (RFC 6052: /32, /40, /48, /56, /64 or /96, bits 64 to 71 zero) whose
    addresses are IPv4 clients translated by a NAT64 or SIIT: such a client counts by the
    IPv4 address the address carries (after the prefix, the "u" octet skipped), not the
    translator's prefix, which every IPv4 client behind it shares. Add the operator's own
    network-specific prefix (one carved from 64:ff9b:1::/48, RFC 8215, or from its own
    space); list only prefixes nothing but the translators send from. IPv4-mapped, Teredo
    and 6to4 addresses always count by their IPv4 address."""

    @field_validator("nat64_prefixes")
    @classmethod
    def _nat64_prefixes(cls, prefixes: list[str]) -> list[str]:
        from gateway.auth.client_keys import parse_nat64_prefixes

        parse_nat64_prefixes(prefixes)  # raises ConfigError naming the bad one
        return prefixes


class LimitsConfig(Section):
    """Bounds against resource exhaustion; 0 disables a bound."""

    max_manifest_bytes: Count = 4 * 1024**2
    """ECR's own PutImage limit is 4 MiB."""
    max_uploads_per_client: Count = 128
    """Upload requests (blob uploads' POST, PATCH and PUT, and manifest PUTs) in progress
    per user or address, in each replica (counted in its memory: N replicas take N times as
    many; the open sessions below are counted across replicas with Redis)."""
    max_uploads_total: Count = 512
    """Upload requests (as above) in progress over all clients, in each replica."""
    max_open_uploads: Count = 10000
    """Upload sessions open at once."""
    max_open_uploads_per_client: Count = 100
    """Upload sessions one client (its user name, else its address's ``client_key``) holds
    open at once: each may keep a tail under 5 MiB on disk or in Redis until it ends or
    idles out."""
    max_upload_tail_bytes_per_client: Count = 64 * 1024**2
    """Bytes one client's open upload sessions may keep in the session store (Redis, or the
    local disk) waiting for ECR's 5 MiB part minimum. A request whose tail does not fit is
    cut back to what the client was told before it, the rest reported not received (the
    client sends it again from the upload's Range), so sessions opened and never finished
    cannot fill Redis's memory. A tail the staging spool holds alone (the default,
    process-local store) counts against blobs.staging.spools_max_bytes instead."""
    max_upload_tail_bytes: Count = 1024**3
    """Bytes the tails of all clients' open upload sessions may take together in the session
    store: the local one (``state.backend: local``, a file per session under data_dir) or
    Redis (counted there across replicas: keep it under Redis's ``maxmemory``). A PATCH
    whose tail does not fit gets 429 with Retry-After and the upload's Range (the client
    sends it again once sessions end), so clients each at their own bound cannot fill the
    disk or Redis together (10,000 sessions of up to 5 MiB). Once reached, a warning says
    so once a minute, and ``ecr_gateway_upload_refusals_total{bound="tail_total"}`` counts
    each refusal. 0: no bound."""
    max_abandoned_upload_bytes_per_client: Count = 64 * 1024**3
    """Bytes one client has ECR hold for its unfinished uploads: those it sent for uploads
    still open (given back when ECR accepts an upload's completion), and for uploads that
    ended without completion (cancelled with DELETE, expired, refused) within twice
    ``uploads.idle_timeout_seconds`` (how long the embedded emulator keeps such an upload;
    ECR has no call to cancel one). Past it, the client's POSTs get 429 with Retry-After; a
    PATCH whose Content-Length would take it past gets 429 before a byte is read, and a
    chunked one stops before the part that would, with 429 and the upload's Range (the
    client continues from it). It is also the most one client pushes at once (the default
    is above ECR's largest layer, 52,000 MiB; layers larger together need it raised), and
    a few interrupted pushes of large images count, so a login every CI job shares needs
    room for them (0: no bound). Replicas sharing Redis add up their counts there, so a
    client spread over N replicas meets one bound, not N (past it by at most what the
    others let through in the moment before their counts are written; while Redis is down,
    each replica's own count applies)."""
    body_idle_timeout_seconds: Seconds = 60.0
    """A request body silent this long is cut (408)."""
    body_timeout_seconds: Seconds = 3600.0
    """A request body taking longer is cut (408)."""
    header_timeout_seconds: Seconds = 60.0
    """To send a request's headers (and keep-alive idle); over TLS served by the gateway, to
    finish the handshake too."""
    max_client_connections: Count | None = None
    """Client connections open at once in this process, each a file descriptor, which the
    requests' own files and upstream connections need too: past it a new connection gets
    503 with Retry-After and is closed before anything of it is read. None: half the
    process's open-file limit (the gateway raises its soft limit to the hard one at start),
    at most 16,384; 0: no bound."""
    max_connections_per_client: Count = 1024
    """Of those, at most this many (and never more than a quarter of them) from one client
    (its address's key, ``client_key``: no login is known before a request), so that one
    client cannot hold them all: past it 429 with Retry-After, closed at once. Connections
    of ``trusted_proxies`` count in the total only. 0: a quarter of the total."""
    max_header_bytes: Count = 8190
    """One request line or header field."""
    max_headers: Count = 100
    """Header fields per request."""
    max_page_size: Count = 1000
    """The largest `n` of a tags or catalog page, and the size of a page that asks for none
    (a `Link` header names the rest)."""
    client_key: ClientKeyConfig = Field(default_factory=ClientKeyConfig)
    max_referrers_bytes: Count = 128 * 1024**2
    """Referrers answers being read from ECR and sent, together, in each replica: each read
    takes room for the most one ListImageReferrers answer can be (16 MiB) while it waits
    for it, then keeps room for the page it answers (up to about 16 MiB of referrers,
    encoded as sent) until every reader sharing it was sent it (the parsing takes a few
    times an answer's size for a moment). Without room a read waits up to 10 s for some
    (a client's burst is served in turn), then a client holding a quarter of it gets 429,
    anyone else 503, with Retry-After (``ecr_gateway_referrers_refusals_total`` counts
    both). 0: no bound."""
    max_blob_downloads_per_client: Count = 50
    """Blob reads one client (its user name, else its address's ``client_key``) streams
    from storage at once in proxy mode, in each replica: each holds one of the 100
    connections of the gateway's HTTP client for as long as its client reads. A read beyond
    it waits up to ``blob_download_wait_seconds`` for one of the client's own to end
    (waiting holds no connection), then gets 429 with Retry-After; a warning says so once a
    minute and ``ecr_gateway_blob_download_refusals_total`` counts each refusal. So one
    client asking for blobs and reading none (anyone, where pulls are anonymous) holds half
    the connections at most, not all of them while every other client's reads wait and
    fail. A docker or containerd pull reads 3 layers at once: a node-local mirror pulling 16
    images at once, or a CI fleet sharing one login, stays within the default. Reads of the
    blob cache and redirects hold no connection and are not counted. 0: no bound."""
    blob_download_wait_seconds: Seconds = 10.0
    """How long a read over its client's ``max_blob_downloads_per_client`` waits for one of
    the client's own to end before its 429."""
    send_idle_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 60.0
    """An answer whose client takes none of its unsent bytes for this long (a full receive
    window, a reader that stopped) has its connection closed, as nginx's ``send_timeout``:
    blobs in every mode, manifests, listings, errors. What the answer held is given back
    at once: in proxy mode the ECR download connection (the HTTP client has 100) and its
    buffers, an open cache file, a cache fill; in pull-through the client's hold on the
    spool (the copy into ECR goes on). Time the gateway spends waiting on storage or the
    upstream does not count; a client reading steadily, however slowly, is not cut."""
    referrers_send_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 60.0
    """To send a referrers answer whole, from its headers to its last byte: a client that
    does not read it in time (a full receive window, a slowloris reader) has its connection
    closed, and the page's room in ``max_referrers_bytes`` is given back, so that clients
    not reading cannot keep others' reads refused. A whole answer, not the time between two
    writes (nginx's ``send_timeout``): a reader taking a byte now and then would otherwise
    hold a page for hours. A full page (about 16 MiB) needs about 280 KB/s to arrive within
    the default."""


class StateConfig(Section):
    """Where upload sessions live: ``local`` (this process, spilled to data_dir) or ``redis``
    (shared by every replica, so any replica can continue any session)."""

    backend: Literal["local", "redis"] = "local"
    redis_url: str | None = None
    """redis://host:port/db, redis+sentinel://h1:26379,h2:26379/service[/db] or
    redis+cluster://h1:6379,h2:6379 (gateway/state/connect.py); a password here shows in
    configs."""
    redis_password_file: str | None = None
    """A file holding the Redis password (a mounted Secret): kept out of the URL and config."""
    redis_sentinel_password_file: str | None = None
    """A file holding the Sentinels' own password, when they ask for one (redis+sentinel)."""
    key_prefix: str = "ecr-gateway:"
    lock_ttl_seconds: Seconds = 15.0
    """A dead replica's session lock (and blob fill lock) frees itself after this."""
    lock_wait_seconds: Seconds = 60.0
    """A request waits this long for a busy session."""
    redis_timeout_seconds: Annotated[float, Strict(), Field(gt=0)] = 2.0
    """A Redis command not answered within this (the Redis client's retries of a lost
    connection included) takes Redis as down: the request gets 503 with Retry-After, and
    every command fails at once, unsent, until Redis answers a PING again."""
    redis_probe_seconds: Annotated[float, Strict(), Field(gt=0)] = 1.0
    """While Redis is taken as down, it is PINGed this often (once at once)."""
    peer_url: str | None = None
    """How the other replicas reach this one (for staged blobs read through another replica),
    e.g. http://10.0.0.5:5000. None: the listen address, unless it is a wildcard."""

    @model_validator(mode="after")
    def _state(self) -> Self:
        from gateway.state import check_state

        check_state(self)
        return self


class TokenConfig(Section):
    """The gateway's own token server (docker token auth)."""

    realm: str | None = None
    """Where clients are sent for tokens (and send their passwords). None: the host the
    client used if it is in realm_hosts (or a loopback name on a loopback listener), else
    the address the connection arrived on."""
    realm_hosts: list[str] = Field(default_factory=list)
    """host[:port] as clients write it."""
    service: str = "ecr-gateway"
    issuer: str = "ecr-gateway"
    ttl_seconds: Annotated[int, Strict(), Field(ge=60)] = 300
    refresh_ttl_seconds: Count = 14 * 86400
    """0: never hand out refresh tokens."""
    signing_key_file: str | None = None
    """None: generated into data_dir/auth (mode 0600)."""

    @field_validator("realm")
    @classmethod
    def _realm(cls, realm: str | None) -> str | None:
        from gateway.auth.challenge import check_realm

        return check_realm(realm)


class AccessRuleConfig(Section):
    """Repository pattern → users/groups → actions; the first matching rule decides.

    A rule with ``ecr_repository`` instead matches the ECR repository a request resolves to
    (after routes and mirrors): such rules can only narrow what the name rules allow, and
    are needed to push or delete in an ECR repository a mirror serves."""

    repository: str = "**"
    ecr_repository: str | None = None
    users: list[str] = Field(default_factory=list)
    """"*": every authenticated user."""
    groups: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)
    """pull, push, delete, catalog."""
    anonymous: Flag = False
    """Also applies to callers without credentials (pull only)."""

    @model_validator(mode="after")
    def _rule(self) -> Self:
        from gateway.auth.rules import check_rule

        check_rule(self)
        return self


class RateLimitConfig(Section):
    """Failed logins tolerated per user name and per client address within the window."""

    window_seconds: Seconds = 300.0
    max_failures_per_user: Count = 10
    max_failures_per_address: Count = 50


class AuthConfig(Section):
    mode: Literal["none", "htpasswd", "aws"] = "none"
    allow_anonymous_on_public_address: Flag = False
    local_host_names: list[str] = Field(default_factory=list)
    """Names, besides IP addresses and ``localhost``, by which clients may address a gateway
    listening on a loopback address where callers without credentials get something
    (``mode: none``, anonymous pulls). A request naming any other host in its ``Host`` is
    refused there (403 DENIED): a web page can point a name of its own at 127.0.0.1 (DNS
    rebinding) and then send the gateway what any local process could. The hosts of
    ``token.realm_hosts`` count as listed. Requests from ``trusted_proxies`` are not checked
    (the proxy answers for its own server names)."""
    htpasswd_file: str | None = None
    token: TokenConfig = Field(default_factory=TokenConfig)
    groups: dict[str, list[str]] = Field(default_factory=dict)
    rules: list[AccessRuleConfig] = Field(default_factory=list)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    max_waiting_password_checks: Count | None = None
    """htpasswd: password checks that may wait for a thread (bcrypt runs on half the CPUs)
    at once, per replica; past it a login is refused at once with 429 and a short
    Retry-After, not queued, and not counted as a failure. A name logging in from an address
    where it logged in within the last day has a lane of its own, served first, with room
    for a quarter as many more: guesses from elsewhere, however many, cannot fill it. None:
    64 per thread (at cost 12, about 16 s of waiting)."""

    @model_validator(mode="after")
    def _auth(self) -> Self:
        from gateway.auth.rules import check_rule_groups

        if self.mode == "htpasswd" and not self.htpasswd_file:
            raise ConfigError("htpasswd_file", "is required when auth.mode is htpasswd")
        check_rule_groups(self.rules, self.groups)
        return self


class TlsConfig(Section):
    """HTTPS served by the gateway itself; both files are re-read when they change."""

    cert_file: str | None = None
    key_file: str | None = None
    reload_interval_seconds: Seconds = 5.0

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("", "cert_file and key_file go together")
        return self


class Config(Section):
    """The ecr-gateway configuration (``ecr-gateway serve --config FILE``). Any key can be
    overridden from the environment: ``ECR_GATEWAY_<SECTION>__<KEY>``, values parsed as
    YAML."""

    model_config = ConfigDict(title="ecr-gateway configuration")

    listen: Annotated[str, Field(json_schema_extra=_HOST_PORT)] = "127.0.0.1:5000"
    """Address the registry listens on (HOST:PORT)."""
    data_dir: str = "./.ecr-gateway"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    """"text" or "json" (one JSON object per line)."""
    shutdown_grace_seconds: Seconds = 30.0
    """SIGTERM: in-flight requests get this long."""
    trusted_proxies: list[str] = Field(default_factory=list)
    """Peers (addresses or CIDRs) whose X-Forwarded-Proto/-Host/-For are believed; nobody
    else's are."""
    metrics_listen: Annotated[str | None, Field(json_schema_extra=_HOST_PORT)] = None
    """HOST:PORT of a listener serving only /metrics (no credentials asked there). None:
    /metrics on the main listener, behind a login when authentication is on."""
    upstream: UpstreamConfig = Field(default_factory=UpstreamConfig)
    routes: list[RouteConfig] = Field(default_factory=list)
    mirrors: dict[str, MirrorConfig] = Field(default_factory=dict)
    """Upstream registry host (containerd's ?ns=) → ECR target. Empty: ns is ignored and
    `routes` serve every request; else a request whose ns is not listed gets NAME_UNKNOWN."""
    cache: CacheConfig = Field(default_factory=CacheConfig)
    blobs: BlobsConfig = Field(default_factory=BlobsConfig)
    uploads: UploadsConfig = Field(default_factory=UploadsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    tls: TlsConfig = Field(default_factory=TlsConfig)

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def effective_routes(self) -> list[RouteConfig]:
        """The configured routes, plus a catch-all default when none covers every name."""
        routes = list(self.routes)
        if not any(route.prefix == "" for route in routes):
            routes.append(RouteConfig())
        return routes

    @field_validator("listen")
    @classmethod
    def _listen(cls, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        if not host.strip("[]") or not port.isdigit() or int(port) > 65535:
            raise ConfigError("", f"must be HOST:PORT, got {listen!r}")
        return listen

    @field_validator("metrics_listen")
    @classmethod
    def _metrics_listen(cls, listen: str | None) -> str | None:
        return None if listen is None else cls._listen(listen)

    @field_validator("trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, proxies: list[str]) -> list[str]:
        from gateway.auth.forwarded import check_networks

        check_networks(proxies)
        return proxies

    @model_validator(mode="after")
    def _routing(self) -> Self:
        from gateway.ecr.routing import check_mirrors, check_pull_through_routes, check_routes

        check_routes(self.routes)
        check_mirrors(self.mirrors, self.routes, self.upstream.region)
        check_pull_through_routes(self.routes, self.mirrors, self.upstream.region)
        return self
