"""Tunable limits of the emulator, with ECR's published values as defaults.

ECR's quota pages disagree with each other (4,200 or 1,000 parts, 52,000 or 10,000 MiB
layers), so every limit can be changed per instance: ``Settings(...)`` when embedding, or
``ECR_EMULATOR_<FIELD>`` environment variables for ``ecr-gateway emulator``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    part_size: int = 10 * MiB
    """``partSize`` that InitiateLayerUpload announces."""
    min_part_size: int = 5 * MiB
    """Every part but the last must be at least this big (checked by CompleteLayerUpload)."""
    max_part_size: int = 20 * MiB
    """A bigger part is InvalidLayerPartException ("The layer part size isn't valid"). The
    API reference allows 20,971,520 bytes (more is InvalidParameterException), the service
    quotas page 10 MiB: set it to 10485760 to hold clients to the quota page."""
    max_parts: int = 4200
    """Parts per upload; one more gives LimitExceededException."""
    max_layer_size: int = 52_000 * MiB
    """Bytes per layer; a part that would pass it gives LimitExceededException."""
    max_images_per_repository: int = 20_000
    max_repositories: int = 100_000
    download_url_expires: int = 3600
    """Lifetime in seconds of GetDownloadUrlForLayer URLs (S3 presigned URLs default to 1 h)."""
    auth_token_lifetime: int = 12 * 3600
    """GetAuthorizationToken tokens are valid for 12 hours."""
    lifecycle_interval: int = 3600
    """Seconds between two applications of every lifecycle policy (0: only on demand, through
    ``POST /_emulator/lifecycle/run``). ECR applies them within 24 hours."""
    pull_through_refresh_seconds: int = 24 * 3600
    """How old a pull through cache repository's check of a tag against its upstream may be
    before a pull by that tag asks the upstream again (ECR: "at least once every 24 hours")."""
    upload_lifetime: int = 24 * 3600
    """Seconds an upload lives after its InitiateLayerUpload or its last accepted part; then
    it ends, its file deleted, and later calls naming it get UploadNotFoundException (0:
    uploads never expire). ECR publishes no lifetime; without one, uploads a client abandons
    (ECR has no call to cancel one) keep their parts on disk for ever."""
    lifecycle_preview_seconds: int = 0
    """How long a lifecycle policy preview stays IN_PROGRESS before it is COMPLETE."""
    public_registry_alias: str = "emulator"
    """The ECR Public registry's alias: its images are pulled as ``<host>/<alias>/<name>``."""
    public_anonymous_pull_rate: int = 1
    """ECR Public registry endpoint: manifest reads per second for an anonymous token
    (bursts of ten times as many); ECR Public's unauthenticated quota is 1 per second."""
    public_authenticated_pull_rate: int = 10
    """The same for a token obtained with GetAuthorizationToken (ECR Public: 10 per second)."""
    public_max_parts: int = 1000
    """``max_parts`` of the ECR Public registry: its quota (not adjustable) is 1,000 parts."""
    public_max_layer_size: int = 10_000 * MiB
    """``max_layer_size`` of the ECR Public registry: its quota is 10,000 MiB a layer."""
    request_body_grace_seconds: int = 20
    request_body_min_rate: int = 64 * 1024
    """A request's body must arrive within the grace plus its length at this many bytes a
    second, or the call fails with 408 RequestTimeoutException: a caller trickling an
    UploadLayerPart (whose signature is only checked at its end) holds that upload's lock
    for no longer than that."""
    unverified_body_bytes: int = 128 * MiB
    """Request-body bytes all callers together may have in memory before their signatures
    are checked (each body's first 64 KiB and a layer part streaming to its upload's file
    are not counted); a body that would pass it fails with ThrottlingException (see
    body_budget.py)."""
    max_connections: int = 512
    """Connections open at once; past it a new one gets 503 and is closed (0: no limit).
    Each may hold a request head and a body's first 64 KiB (connections.py)."""
    header_timeout: int = 60
    """Seconds a connection may take to send a request head, or stay idle between two."""
    request_log_max_bytes: int = 64 * MiB
    """Size past which ``requests.log`` becomes ``requests.log.1`` (the one before dropped)."""
    durable: int = 1
    """1: a part, a layer and a database commit are on disk (fsync) before the call answers,
    so nothing acknowledged is lost to a power cut. 0: the same writes without a sync, as
    distribution's filesystem driver leaves them; survives a killed process, not a power cut.
    Only for measuring what durability costs (the benchmark's judged no-fsync row)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """Defaults overridden by ``ECR_EMULATOR_PART_SIZE``-style variables (integers, but
        for the one text setting, the public registry alias)."""
        overrides: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = environ.get(f"ECR_EMULATOR_{field.name.upper()}")
            if raw is not None:
                overrides[field.name] = raw if field.type in (str, "str") else int(raw)
        return cls(**overrides)
