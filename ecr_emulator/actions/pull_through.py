"""Pull through cache: Create/Describe/Update/Delete/ValidatePullThroughCacheRule, and the
imports they cause.

A rule maps repositories named ``<ecrRepositoryPrefix>/<rest>`` (every name for ``ROOT``) to
``<upstreamRepositoryPrefix>/<rest>`` (``<rest>`` for ROOT, the default) of the registry at
``upstreamRegistryUrl``, which may be any OCI registry (``http://127.0.0.1:5000`` included).
BatchGetImage of an image the repository lacks fetches its manifest (and an index's child
manifests) from the upstream, creating the repository from the matching repository creation
template (PULL_THROUGH_CACHE) on the first pull; the layers follow when a client asks for
them (GetDownloadUrlForLayer, BatchCheckLayerAvailability), streamed into the blob store
and checked against their digest. A tag already cached is served without asking the
upstream again until its last check is ``pull_through_refresh_seconds`` old (24 hours: ECR
"checks the upstream registry for a new version of the image with that specific tag and
attempts to update the image in your private registry at least once every 24 hours"); a pull
by that tag then asks the upstream which image it names and caches it if it is another (an
upstream that cannot tell leaves the cached image served, and a pull asks again after
``FAILED_CHECK_RETRY_SECONDS``, not every pull waiting on it; an immutable tag does not
move). As in ECR, an image asked for by digest alone is not fetched (its first pull must be
by tag: containers-roadmap #2837): ImageNotFound, unless it is cached already (an index's
children come with the index). An imported image brings its referrers
(signatures, SBOMs: the manifests whose ``subject`` it is, from the upstream's referrers API
or referrers tag), and
ListImageReferrers of such a repository first fetches the referrers it lacks
(UnableToListUpstreamImageReferrersException when the upstream cannot be asked).

Credentials are Secrets Manager ARNs (``…:secret:ecr-pullthroughcache/<name>``); the
emulator resolves them in ``<data-dir>/pull-through-secrets.json``, an object whose keys are
ARNs or secret names and whose values are ``{"username": …, "accessToken": …}``, read at
each use. Failures give the documented codes: ImageNotFound, UpstreamAccessDenied,
UpstreamTooManyRequests or UpstreamUnavailable failures of BatchGetImage,
UnableToGetUpstreamImageException for a secret that cannot be used or an invalid upstream
manifest, UnableToGetUpstreamLayerException from GetDownloadUrlForLayer.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
import uuid
from typing import Any

from ecr_emulator import image_store, manifests, paging, store
from ecr_emulator import registry_documents as registry
from ecr_emulator.actions import templates
from ecr_emulator.db import rows_in
from ecr_emulator.errors import AwsError
from ecr_emulator.image_store import Failure, Image
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.role_arns import check_custom_role
from ecr_emulator.state import EmulatorState
from ecr_emulator.upstream import (
    MANIFEST_TYPES,
    Credential,
    Upstream,
    UpstreamError,
    check_registry_url,
)

log = logging.getLogger(__name__)

# A tag whose check failed (the upstream down, stalled, refusing) is checked again this long
# after, or after pull_through_refresh_seconds if that is shorter.
FAILED_CHECK_RETRY_SECONDS = 300

MAX_RULES = 50  # a registry's quota of pull through cache rules
ROOT = "ROOT"
SECRETS_FILE = "pull-through-secrets.json"
NEEDS_CREDENTIAL = ("docker-hub", "github-container-registry", "azure-container-registry",
                    "gitlab-container-registry")
_KNOWN_HOSTS = {
    "registry-1.docker.io": "docker-hub", "public.ecr.aws": "ecr-public", "quay.io": "quay",
    "registry.k8s.io": "k8s", "ghcr.io": "github-container-registry",
    "registry.gitlab.com": "gitlab-container-registry", "cgr.dev": "chainguard",
}
_FAILURE_CODES = {"denied": "UpstreamAccessDenied", "throttled": "UpstreamTooManyRequests",
                  "unavailable": "UpstreamUnavailable", "not_found": "ImageNotFound"}


def _key(prefix: str) -> str:
    return prefix if prefix == ROOT else prefix.rstrip("/")


def _not_found(prefix: str, registry_id: str) -> AwsError:
    return AwsError("PullThroughCacheRuleNotFoundException",
                    f"The pull through cache rule with prefix '{prefix}' does not exist in the "
                    f"registry with id '{registry_id}'")


def _registry_kind(url: str) -> str | None:
    host = url.split("://", 1)[-1].split("/", 1)[0].lower()
    if host.endswith(".azurecr.io"):
        return "azure-container-registry"
    if ".dkr.ecr." in host and host.endswith(".amazonaws.com"):
        return "ecr"
    return _KNOWN_HOSTS.get(host)


def _check_registry_id(state: EmulatorState, params: Json) -> str:
    registry_id = params.get("registryId") or state.account_id
    if registry_id != state.account_id:
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'registryId' failed to satisfy constraint: "
                       f"'only registry {state.account_id} exists'")
    return str(registry_id)


# Credentials


def load_credential(state: EmulatorState, arn: str | None, error: str) -> Credential | None:
    """The username and token ``arn`` names; ``error`` is the exception name for a secret
    the emulator cannot use (a missing one is SecretNotFoundException at rule creation)."""
    if arn is None:
        return None
    path = state.data_dir / SECRETS_FILE
    try:
        secrets = json.loads(path.read_text())
    except FileNotFoundError:
        secrets = {}
    except (OSError, ValueError):
        raise AwsError(error, f"The secret '{arn}' could not be read") from None
    name = arn.split(":secret:", 1)[-1]
    value = secrets.get(arn, secrets.get(name)) if isinstance(secrets, dict) else None
    if value is None:
        code = "SecretNotFoundException" if error != "UnableToGetUpstreamImageException" else error
        raise AwsError(code, f"The secret '{arn}' does not exist")
    if not (isinstance(value, dict) and isinstance(value.get("username"), str)
            and isinstance(value.get("accessToken"), str)):
        code = "UnableToDecryptSecretValueException" if error != (
            "UnableToGetUpstreamImageException") else error
        raise AwsError(code, f"The secret '{arn}' must hold a username and an accessToken")
    return Credential(value["username"], value["accessToken"])


# The rule actions


def _answer(rule: Json, registry_id: str, *members: str) -> Json:
    shown = {"registryId": registry_id}
    shown.update({k: rule[k] for k in members if rule.get(k) is not None})
    return shown


_RULE_MEMBERS = ("ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt", "upstreamRegistry",
                 "credentialArn", "customRoleArn", "upstreamRepositoryPrefix", "updatedAt")


@action("CreatePullThroughCacheRule")
async def create_rule(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = _check_registry_id(state, params)
    url = params["upstreamRegistryUrl"]
    try:
        check_registry_url(url)
    except ValueError:
        raise AwsError("UnsupportedUpstreamRegistryException",
                       f"The upstream registry URL '{url}' is not supported") from None
    kind = params.get("upstreamRegistry") or _registry_kind(url)
    if kind in NEEDS_CREDENTIAL and not params.get("credentialArn"):
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'credentialArn' failed to satisfy constraint: "
                       f"'a credential is required for upstream registry {kind}'")
    check_custom_role(params.get("customRoleArn"), registry_id)
    load_credential(state, params.get("credentialArn"), "UnableToAccessSecretException")
    prefix = params["ecrRepositoryPrefix"]
    now = time.time()
    rule: Json = {"ecrRepositoryPrefix": prefix, "upstreamRegistryUrl": url, "createdAt": now,
                  "upstreamRegistry": kind, "credentialArn": params.get("credentialArn"),
                  "customRoleArn": params.get("customRoleArn"),
                  "upstreamRepositoryPrefix": params.get("upstreamRepositoryPrefix", ROOT),
                  "updatedAt": now}

    def create(db: sqlite3.Connection) -> None:
        if registry.get(db, registry.PULL_THROUGH, _key(prefix)) is not None:
            raise AwsError("PullThroughCacheRuleAlreadyExistsException",
                           f"A pull through cache rule with prefix '{prefix}' already exists "
                           f"in the registry with id '{registry_id}'")
        if registry.count(db, registry.PULL_THROUGH) >= MAX_RULES:
            raise AwsError("LimitExceededException",
                           f"A registry has at most {MAX_RULES} pull through cache rules")
        registry.put(db, registry.PULL_THROUGH, _key(prefix), rule, now)

    await state.db.write(create)
    return _answer(rule, registry_id, "ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt",
                   "upstreamRegistry", "credentialArn", "customRoleArn",
                   "upstreamRepositoryPrefix")


@action("DescribePullThroughCacheRules")
async def describe_rules(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = _check_registry_id(state, params)
    rules = await state.db.read(registry.all_of, registry.PULL_THROUGH)
    wanted = params.get("ecrRepositoryPrefixes")
    if wanted is not None:
        if "maxResults" in params or "nextToken" in params:
            raise AwsError("InvalidParameterException",
                           "maxResults and nextToken cannot be used with ecrRepositoryPrefixes")
        by_key = dict(rules)
        for prefix in wanted:
            if _key(prefix) not in by_key:
                raise _not_found(prefix, registry_id)
        rules = [(k, by_key[k]) for k in dict.fromkeys(_key(p) for p in wanted)]
    after = paging.decode("DescribePullThroughCacheRules", params.get("nextToken"), "")
    if after:
        rules = [(k, r) for k, r in rules if k > after]
    limit = paging.page_size(params, 100)
    result: Json = {"pullThroughCacheRules": [_answer(r, registry_id, *_RULE_MEMBERS)
                                              for _, r in rules[:limit]]}
    if len(rules) > limit:
        result["nextToken"] = paging.encode("DescribePullThroughCacheRules", rules[limit - 1][0])
    return result


@action("UpdatePullThroughCacheRule")
async def update_rule(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = _check_registry_id(state, params)
    prefix = params["ecrRepositoryPrefix"]
    if "credentialArn" not in params and "customRoleArn" not in params:
        raise AwsError("InvalidParameterException",
                       "Invalid parameter: give credentialArn, customRoleArn or both")
    check_custom_role(params.get("customRoleArn"), registry_id)
    load_credential(state, params.get("credentialArn"), "UnableToAccessSecretException")
    now = time.time()

    def update(db: sqlite3.Connection) -> Json:
        rule = registry.get(db, registry.PULL_THROUGH, _key(prefix))
        if rule is None:
            raise _not_found(prefix, registry_id)
        rule.update({k: params[k] for k in ("credentialArn", "customRoleArn") if k in params})
        rule["updatedAt"] = now
        registry.put(db, registry.PULL_THROUGH, _key(prefix), rule, now)
        return dict(rule)

    rule = await state.db.write(update)
    return _answer(rule, registry_id, "ecrRepositoryPrefix", "credentialArn", "customRoleArn",
                   "upstreamRepositoryPrefix", "updatedAt")


@action("DeletePullThroughCacheRule")
async def delete_rule(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = _check_registry_id(state, params)
    prefix = params["ecrRepositoryPrefix"]
    rule = await state.db.write(registry.delete, registry.PULL_THROUGH, _key(prefix))
    if rule is None:
        raise _not_found(prefix, registry_id)
    return _answer(rule, registry_id, "ecrRepositoryPrefix", "upstreamRegistryUrl", "createdAt",
                   "credentialArn", "customRoleArn", "upstreamRepositoryPrefix")


@action("ValidatePullThroughCacheRule")
async def validate_rule(call: Call, params: Json) -> Json:
    """Whether the upstream answers ``/v2/`` with the rule's credential."""
    state = call.state
    registry_id = _check_registry_id(state, params)
    prefix = params["ecrRepositoryPrefix"]
    rule = await state.db.read(registry.get, registry.PULL_THROUGH, _key(prefix))
    if rule is None:
        raise _not_found(prefix, registry_id)
    failure = None
    try:
        credential = load_credential(state, rule.get("credentialArn"),
                                     "UnableToAccessSecretException")
        await Upstream(rule["upstreamRegistryUrl"], credential).ping()
    except AwsError as exc:
        failure = exc.message
    except UpstreamError as exc:
        failure = str(exc)
    answer = _answer(rule, registry_id, "ecrRepositoryPrefix", "upstreamRegistryUrl",
                     "credentialArn", "customRoleArn", "upstreamRepositoryPrefix")
    answer["isValid"] = failure is None
    if failure is not None:
        answer["failure"] = failure
    return answer


# Imports


def matching_rule(db: sqlite3.Connection, repository: str) -> tuple[Json, str] | None:
    """The rule ``repository`` falls under (the longest prefix; ROOT if no other) and the
    upstream repository it maps to."""
    candidates = []
    for key, rule in registry.all_of(db, registry.PULL_THROUGH):
        if key == ROOT:
            candidates.append((-1, rule, repository))
        elif repository.startswith(key + "/"):
            candidates.append((len(key), rule, repository[len(key) + 1:]))
    if not candidates:
        return None
    _, rule, rest = max(candidates, key=lambda c: c[0])
    upstream_prefix = _key(rule.get("upstreamRepositoryPrefix") or ROOT)
    return rule, rest if upstream_prefix == ROOT else f"{upstream_prefix}/{rest}"


def _missing(db: sqlite3.Connection, repository: str,
             image_ids: list[Json]) -> list[Json]:
    """The ids BatchGetImage would not find in ``repository`` (all if it does not exist)."""
    if db.execute("SELECT 1 FROM repositories WHERE name = ?", (repository,)).fetchone() is None:
        return image_ids
    out = []
    for image_id in image_ids:
        found = image_store.resolve(db, repository, image_id)
        if isinstance(found, Failure) and found.code == "ImageNotFound":
            out.append(image_id)
    return out


def id_key(image_id: Json) -> tuple[Any, Any]:
    return image_id.get("imageDigest"), image_id.get("imageTag")


def _stale_tags(db: sqlite3.Connection, repository: str, image_ids: list[Json],
                checked_before: float) -> list[str]:
    """The tags ``image_ids`` ask for alone that ``repository`` holds and last checked
    against its upstream before ``checked_before`` (one never checked: since it was set)."""
    tags = sorted({str(i["imageTag"]) for i in image_ids
                   if i.get("imageTag") and not i.get("imageDigest")})
    return [row[0] for row in rows_in(
        db, "SELECT t.tag FROM image_tags t LEFT JOIN pull_through_checks c"
        " ON c.repository = t.repository AND c.tag = t.tag WHERE t.repository = ?"
        " AND COALESCE(c.checked_at, t.tagged_at) < ? AND t.tag IN ({marks})",
        tags, repository, checked_before)]


def _record_check(db: sqlite3.Connection, repository: str, tag: str, now: float) -> None:
    db.execute("INSERT OR REPLACE INTO pull_through_checks (repository, tag, checked_at)"
               " VALUES (?, ?, ?)", (repository, tag, now))


def _cached_tag(db: sqlite3.Connection, repository: str, registry_id: str,
                tag: str) -> tuple[str | None, bool]:
    """The digest ``tag`` names in ``repository`` (None if none) and whether it may move."""
    tagged = image_store.find_by_tag(db, repository, tag)
    repo = store.get_repository(db, repository, registry_id)
    return (None if tagged is None else tagged.digest), image_store.tag_is_immutable(repo, tag)


def _digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


async def import_images(state: EmulatorState, repository: str, image_ids: list[Json],
                        registry_id: str) -> dict[tuple[Any, Any], Failure]:
    """Fetch from the upstream the images of ``image_ids`` that ``repository`` lacks, and
    the current image of each cached tag they ask for whose last check is too old; the
    BatchGetImage failures of those that could not be fetched, by (digest, tag)."""
    found = await state.db.read(matching_rule, repository)
    if found is None:
        return {}
    rule, upstream_repository = found
    missing = await state.db.read(_missing, repository, image_ids)
    stale = await state.db.read(_stale_tags, repository, image_ids,
                                time.time() - state.settings.pull_through_refresh_seconds)
    failures: dict[tuple[Any, Any], Failure] = {}
    if not missing and not stale:
        return failures
    try:
        credential = load_credential(state, rule.get("credentialArn"),
                                     "UnableToGetUpstreamImageException")
    except AwsError as exc:
        if missing:
            raise
        log.info("tags of %s not checked against their upstream: %s", repository, exc)
        return failures  # what is cached is served
    upstream = Upstream(rule["upstreamRegistryUrl"], credential)
    for tag in stale:
        await _refresh_tag(state, upstream, repository, upstream_repository, tag, registry_id)
    for image_id in missing:
        if not image_id.get("imageTag"):
            failures[id_key(image_id)] = Failure(
                "ImageNotFound", "Requested image not found: an image not yet cached in a "
                "pull through cache repository is first pulled by tag")
            continue
        try:
            imported = await _import_image(state, upstream, repository, upstream_repository,
                                           image_id, registry_id)
        except UpstreamError as exc:
            if exc.kind == "invalid":
                raise AwsError("UnableToGetUpstreamImageException", str(exc)) from None
            failures[id_key(image_id)] = Failure(_FAILURE_CODES[exc.kind], str(exc))
            continue
        if imported is not None:
            await _try_referrers(state, upstream, repository, upstream_repository, imported,
                                 registry_id)
    return failures


async def _try_referrers(state: EmulatorState, upstream: Upstream, repository: str,
                         upstream_repository: str, subject: str, registry_id: str) -> None:
    try:  # the image is served whether or not its referrers can be had now
        await _import_referrers(state, upstream, repository, upstream_repository, subject,
                                registry_id)
    except UpstreamError as exc:
        log.info("referrers of %s@%s not imported: %s", repository, subject, exc)


async def _refresh_tag(state: EmulatorState, upstream: Upstream, repository: str,
                       upstream_repository: str, tag: str, registry_id: str) -> None:
    """Ask the upstream which image ``tag`` names now and cache that image if it is another;
    the cached one stays served when the upstream cannot tell (asked again later)."""
    try:
        text, media_type = await upstream.manifest(upstream_repository, tag)
        cached, immutable = await state.db.read(_cached_tag, repository, registry_id, tag)
        if cached == _digest_of(text) or immutable:
            await state.db.write(_record_check, repository, tag, time.time())
            return
        imported = await _import_image(state, upstream, repository, upstream_repository,
                                       {"imageTag": tag}, registry_id,
                                       fetched=(text, media_type))
    except (AwsError, UpstreamError) as exc:
        log.info("%s:%s not checked against its upstream, the cached image is served: %s",
                 repository, tag, exc)
        # Asked again after a while, not on every pull: each would wait on the upstream.
        refresh = state.settings.pull_through_refresh_seconds
        await state.db.write(_record_check, repository, tag,
                             time.time() - refresh + min(refresh, FAILED_CHECK_RETRY_SECONDS))
        return
    if imported is not None:
        await _try_referrers(state, upstream, repository, upstream_repository, imported,
                             registry_id)


async def import_referrers(state: EmulatorState, repository: str, subject: str,
                           registry_id: str) -> None:
    """ListImageReferrers' first step in a pull through cache repository: fetch the
    referrers of ``subject`` it lacks from the upstream."""
    found = await state.db.read(matching_rule, repository)
    if found is None:
        return
    rule, upstream_repository = found
    try:
        credential = load_credential(state, rule.get("credentialArn"),
                                     "UnableToListUpstreamImageReferrersException")
        await _import_referrers(state, Upstream(rule["upstreamRegistryUrl"], credential),
                                repository, upstream_repository, subject, registry_id)
    except (AwsError, UpstreamError) as exc:
        raise AwsError("UnableToListUpstreamImageReferrersException",
                       f"The referrers of '{subject}' could not be listed using the pull "
                       f"through cache rule: {exc}") from None


async def _import_referrers(state: EmulatorState, upstream: Upstream, repository: str,
                            upstream_repository: str, subject: str, registry_id: str) -> None:
    descriptors = await upstream.referrers(upstream_repository, subject)
    wanted = [{"imageDigest": str(d["digest"])} for d in descriptors]
    for image_id in await state.db.read(_missing, repository, wanted):
        await _import_image(state, upstream, repository, upstream_repository, image_id,
                            registry_id)


async def _import_image(state: EmulatorState, upstream: Upstream, repository: str,
                        upstream_repository: str, image_id: Json, registry_id: str,
                        fetched: tuple[str, str] | None = None) -> str | None:
    """Fetch (unless ``fetched`` is its manifest and media type already) and store one
    image (and an index's children); its digest."""
    tag, digest = image_id.get("imageTag"), image_id.get("imageDigest")
    reference = digest or tag
    if not reference:
        return None
    text, media_type = fetched or await upstream.manifest(upstream_repository, reference)
    manifest = _parse(text, media_type)
    documents = [(text, manifest)]
    for child in manifest.children:
        child_text, child_type = await upstream.manifest(upstream_repository, child)
        documents.insert(0, (child_text, _parse(child_text, child_type)))
    await state.db.write(_store_images, repository, documents, tag,
                         registry_id=registry_id, now=time.time(),
                         max_repositories=state.settings.max_repositories,
                         max_images=state.settings.max_images_per_repository)
    return _digest_of(text)


def _parse(text: str, media_type: str) -> manifests.Manifest:
    try:
        # A registry may label a manifest application/json: the document says what it is.
        return manifests.parse(text, media_type if media_type in MANIFEST_TYPES else None)
    except AwsError as exc:
        raise UpstreamError("invalid", f"the upstream manifest is not valid: {exc.message}"
                            ) from None


def _store_images(db: sqlite3.Connection, repository: str,
                  fetched: list[tuple[str, manifests.Manifest]], tag: str | None, *,
                  registry_id: str, now: float, max_repositories: int, max_images: int) -> None:
    """Store fetched manifests (children first), the last one tagged; their layers are
    recorded as referenced and fetched on first use."""
    if db.execute("SELECT 1 FROM repositories WHERE name = ?", (repository,)).fetchone() is None:
        templates.create_from_template(db, repository, "PULL_THROUGH_CACHE",
                                       registry_id=registry_id,
                                       max_repositories=max_repositories, now=now)
    image: Image | None = None
    for text, manifest in fetched:
        digest = _digest_of(text)
        image = image_store.find_by_digest(db, repository, digest)
        if image is None:
            layers = {d.digest: store.Layer(d.digest, d.size or 0, d.media_type)
                      for d in manifest.blobs}
            children = image_store._images_by_digest(db, repository, list(manifest.children))
            image_store._insert_image(db, repository, digest, text, manifest, layers, children,
                                      now, max_images)
            image = image_store.find_by_digest(db, repository, digest)
    if tag and image is not None:
        db.execute("INSERT OR REPLACE INTO image_tags (repository, tag, image_id, tagged_at)"
                   " VALUES (?, ?, ?, ?)", (repository, tag, image.id, now))
        _record_check(db, repository, tag, now)


def _pending_blob(db: sqlite3.Connection, repository: str,
                  digest: str) -> tuple[int | None, str | None] | None:
    """(size, media type) from a manifest of ``repository`` naming blob ``digest`` that is
    not a layer of it yet; None if there is none."""
    if db.execute("SELECT 1 FROM layers WHERE repository = ? AND digest = ?",
                  (repository, digest)).fetchone():
        return None
    row = db.execute(
        "SELECT i.manifest, i.media_type FROM image_refs r JOIN images i ON i.id = r.image_id"
        " WHERE r.target = ? AND r.kind = 'blob' AND i.repository = ? LIMIT 1",
        (digest, repository)).fetchone()
    if row is None:
        return None
    manifest = manifests.parse(row[0], row[1])
    for descriptor in manifest.blobs:
        if descriptor.digest == digest:
            return descriptor.size, descriptor.media_type
    return None, None


def _add_layer(db: sqlite3.Connection, repository: str, digest: str, size: int,
               media_type: str | None, now: float) -> None:
    db.execute("INSERT OR IGNORE INTO layers (repository, digest, size, media_type, created_at)"
               " VALUES (?, ?, ?, ?, ?)", (repository, digest, size, media_type, now))


async def import_layer(state: EmulatorState, repository: str, digest: str) -> bool:
    """Fetch blob ``digest`` that an image of pull through ``repository`` references but the
    repository does not hold yet; False if there is no such blob (or no rule covers the
    repository). A failed fetch raises UnableToGetUpstreamLayerException."""
    found = await state.db.read(matching_rule, repository)
    if found is None:  # not (or no longer) a pull through cache repository
        return False
    rule, upstream_repository = found
    pending = await state.db.read(_pending_blob, repository, digest)
    if pending is None:
        return False
    size, media_type = pending
    async with state.digest_lock(digest):
        if await asyncio.to_thread(state.blobs.has_blob, digest):  # another repository's
            length = (await asyncio.to_thread(state.blobs.blob_path(digest).stat)).st_size
        else:
            length = await _fetch_blob(state, rule, upstream_repository, digest, size)
        await state.db.write(_add_layer, repository, digest, length, media_type, time.time())
    return True


async def _fetch_blob(state: EmulatorState, rule: Json, upstream_repository: str, digest: str,
                      size: int | None) -> int:
    # An upload file that no upload row names: removed at start-up if the process dies here.
    temp_id = f"upstream-{uuid.uuid4()}"
    path = state.blobs.upload_path(temp_id)
    try:
        credential = load_credential(state, rule.get("credentialArn"),
                                     "UnableToGetUpstreamLayerException")
        upstream = Upstream(rule["upstreamRegistryUrl"], credential)
        length = await upstream.blob_to_file(upstream_repository, digest, path,
                                             expected_size=size,
                                             max_size=state.settings.max_layer_size,
                                             fsync=state.blobs.durable)
        await asyncio.to_thread(state.blobs.publish, temp_id, digest, length)
        return length
    except UpstreamError as exc:
        raise AwsError("UnableToGetUpstreamLayerException",
                       f"The layer '{digest}' could not be fetched from the upstream registry: "
                       f"{exc}") from None
    finally:
        await asyncio.to_thread(state.blobs.discard_upload, temp_id)
