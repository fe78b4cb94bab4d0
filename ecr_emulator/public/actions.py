"""The 23 actions of the ECR Public API (service ``ecr-public``, target prefix
``SpencerFrontendService``), on the ECR Public registry's own state.

The layer and image plane (BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, PutImage, DescribeImages, BatchDeleteImage), repository policies and
resource tags run the ECR handlers on that state; repositories, DescribeImageTags, registries,
catalog data and GetAuthorizationToken are ECR Public's own. Every answer is cut down to the
members ECR Public's model declares (its ImageDetail has no imageStatus, its Repository no
imageTagMutability...). What differs from ECR:

* the API exists in us-east-1 only: a request signed for another region gets
  UnsupportedCommandException ("The action isn't supported in this Region.");
* the actions whose model types ``registryId`` as RegistryIdOrAlias (the layer plane,
  PutImage, BatchDeleteImage) take the registry's id or its alias; another one is
  RegistryNotFoundException where the action declares it, else RepositoryNotFoundException;
* repository ARNs are ``arn:aws:ecr-public::<account>:repository/<name>`` and URIs
  ``public.ecr.aws/<alias>/<name>``; tags are always mutable;
* every repository has catalog data, empty until some is put: CreateRepository answers
  ``catalogData: {}`` without any (the AWS CLI's example), and GetRepositoryCatalogData
  answers a repository created without any with ``{}`` (Terraform's aws_ecrpublic_repository
  reads it after every create and fails on any error). When AWS raises the model's
  RepositoryCatalogDataNotFoundException is not published: the emulator never does.
  ``marketplaceCertified`` is left out, as AWS's answers for repositories not certified;
* GetAuthorizationToken answers one authorizationData (no proxyEndpoint); its password is
  what the public registry endpoint's ``/token`` accepts (registry.py).
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.model import ListShape, MapShape, Shape, StructureShape

from ecr_emulator import documents, paging, store, validation
from ecr_emulator.actions import images, layers, policies, repositories, resource_tags
from ecr_emulator.actions.common import existing_repository
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Handler, Json, action
from ecr_emulator.state import EmulatorState

SERVICE = "ecr-public"
REGION = "us-east-1"
HOST = "public.ecr.aws"
REGISTRY_NAME_KEY = "registry_display_name"
CATALOG_MEMBERS = ("description", "architectures", "operatingSystems", "aboutText",
                   "usageText")


def alias(state: EmulatorState) -> str:
    return state.settings.public_registry_alias


def repository_arn(state: EmulatorState, name: str) -> str:
    return f"arn:aws:ecr-public::{state.account_id}:repository/{name}"


def repository_json(state: EmulatorState, name: str, created_at: Any) -> Json:
    return {"repositoryArn": repository_arn(state, name), "registryId": state.account_id,
            "repositoryName": name, "repositoryUri": f"{HOST}/{alias(state)}/{name}",
            "createdAt": created_at}


def prune(shape: Shape | None, value: Any) -> Any:
    """``value`` with only the members ``shape`` declares (recursively)."""
    if shape is None:
        return value
    if isinstance(shape, StructureShape) and isinstance(value, dict):
        return {k: prune(shape.members[k], v) for k, v in value.items() if k in shape.members}
    if isinstance(shape, ListShape) and isinstance(value, list):
        return [prune(shape.member, v) for v in value]
    if isinstance(shape, MapShape) and isinstance(value, dict):
        return {k: prune(shape.value, v) for k, v in value.items()}
    return value


def _takes_alias(name: str) -> bool:
    """Whether the model types the action's ``registryId`` as RegistryIdOrAlias."""
    shape = validation.service_model(SERVICE).operation_model(name).input_shape
    member = shape.members.get("registryId") if shape is not None else None
    return member is not None and member.name == "RegistryIdOrAlias"


def _declares(name: str, error: str) -> bool:
    operation = validation.service_model(SERVICE).operation_model(name)
    return any(shape.name == error for shape in operation.error_shapes)


def _by_alias(state: EmulatorState, name: str, params: Json) -> Json:
    """``params`` with the registry's id for the alias (or its id) as ``registryId``."""
    registry = params.get("registryId")
    if registry is not None and registry not in (state.account_id, alias(state)):
        if _declares(name, "RegistryNotFoundException"):
            raise AwsError("RegistryNotFoundException",
                           f"The registry with id '{registry}' does not exist")
        raise store.repository_not_found(params["repositoryName"], registry)
    return {**params, "registryId": state.account_id}


def public_action(name: str) -> Callable[[Handler], Handler]:
    """Register ``handler`` as ECR Public's ``name``, behind the region and registry checks."""
    output = validation.service_model(SERVICE).operation_model(name).output_shape
    by_alias = _takes_alias(name)

    def register(handler: Handler) -> Handler:
        async def checked(call: Call, params: Json) -> Json:
            if call.identity.region != REGION:
                raise AwsError("UnsupportedCommandException",
                               "The action isn't supported in this Region.")
            if by_alias:
                params = _by_alias(call.state, name, params)
            result: Json = prune(output, await handler(call, params))
            return result

        action(name, SERVICE)(checked)
        return handler

    return register


# The layer and image plane, repository policies and resource tags: ECR's handlers.

_SHARED: dict[str, Callable[[Call, Json], Awaitable[Json]]] = {
    "BatchCheckLayerAvailability": layers.batch_check_layer_availability,
    "InitiateLayerUpload": layers.initiate_layer_upload,
    "UploadLayerPart": layers.upload_layer_part,
    "CompleteLayerUpload": layers.complete_layer_upload,
    "PutImage": images.put_image,
    "DescribeImages": images.describe_images,
    "BatchDeleteImage": images.batch_delete_image,
    "SetRepositoryPolicy": policies.set_repository_policy,
    "GetRepositoryPolicy": policies.get_repository_policy,
    "DeleteRepositoryPolicy": policies.delete_repository_policy,
    "ListTagsForResource": resource_tags.list_tags_for_resource,
    "TagResource": resource_tags.tag_resource,
    "UntagResource": resource_tags.untag_resource,
}
for _name, _handler in _SHARED.items():
    public_action(_name)(_handler)


# Repositories


def _catalog_document(given: Json | None, previous: Json | None = None) -> Json | None:
    """Catalog data as stored: the given members replace the previous ones."""
    if given is None:
        return previous
    stored = dict(previous or {})
    for key in CATALOG_MEMBERS:
        if key in given:
            stored[key] = given[key]
    if "logoImageBlob" in given:
        logo = given["logoImageBlob"]
        raw = logo if isinstance(logo, bytes | bytearray) else base64.b64decode(logo)
        stored["logo"] = base64.b64encode(raw).decode() if raw else None
    return stored


def catalog_json(call: Call, repository: str, stored: Json | None) -> Json:
    """RepositoryCatalogData of what is stored (None: nothing yet, ``{}``)."""
    data: Json = {k: stored[k] for k in CATALOG_MEMBERS if k in stored} if stored else {}
    if stored and stored.get("logo"):
        data["logoUrl"] = f"{call.base_url}/_emulator/public/logos/{repository}"
    return data


@public_action("CreateRepository")
async def create_repository(call: Call, params: Json) -> Json:
    state = call.state
    name = params["repositoryName"]
    tags = repositories._check_tags(resource_tags._normalised(params.get("tags") or []))
    catalog = _catalog_document(params.get("catalogData"))
    now = time.time()

    def create(db: sqlite3.Connection) -> None:
        store.create_repository(db, store.Repository(name=name, created_at=now,
                                                     tags=tuple(tags)),
                                registry_id=state.account_id,
                                max_repositories=state.settings.max_repositories)
        if catalog is not None:
            documents.put(db, name, documents.CATALOG, catalog, now,
                          registry_id=state.account_id)

    await state.db.write(create)
    return {"repository": repository_json(state, name, now),
            "catalogData": catalog_json(call, name, catalog)}


@public_action("DescribeRepositories")
async def describe_repositories(call: Call, params: Json) -> Json:
    result = await repositories.describe_repositories(call, params)
    answer: Json = {"repositories": [
        repository_json(call.state, r["repositoryName"], r["createdAt"])
        for r in result["repositories"]]}
    if "nextToken" in result:
        answer["nextToken"] = result["nextToken"]
    return answer


@public_action("DeleteRepository")
async def delete_repository(call: Call, params: Json) -> Json:
    deleted = (await repositories.delete_repository(call, params))["repository"]
    return {"repository": repository_json(call.state, deleted["repositoryName"],
                                          deleted["createdAt"])}


# Images


@public_action("DescribeImageTags")
async def describe_image_tags(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]
    after = paging.decode("DescribeImageTags", params.get("nextToken"), "")
    limit = paging.page_size(params, 100)
    await state.db.read(store.get_repository, repository, registry_id)
    rows = await state.db.read(_tag_rows, repository, str(after), limit + 1)
    answer: Json = {"imageTagDetails": [{
        "imageTag": row["tag"], "createdAt": row["tagged_at"],
        "imageDetail": {"imageDigest": row["digest"], "imageSizeInBytes": row["size"],
                        "imagePushedAt": row["pushed_at"],
                        "imageManifestMediaType": row["media_type"],
                        **({"artifactMediaType": row["artifact_media_type"]}
                           if row["artifact_media_type"] else {})},
    } for row in rows[:limit]]}
    if len(rows) > limit:
        answer["nextToken"] = paging.encode("DescribeImageTags", rows[limit - 1]["tag"])
    return answer


def _tag_rows(db: sqlite3.Connection, repository: str, after: str,
              limit: int) -> list[sqlite3.Row]:
    return db.execute(
        "SELECT t.tag, t.tagged_at, i.digest, i.size, i.pushed_at, i.media_type,"
        " i.artifact_media_type FROM image_tags t JOIN images i ON i.id = t.image_id"
        " WHERE t.repository = ? AND t.tag > ? ORDER BY t.tag LIMIT ?",
        (repository, after, limit)).fetchall()


# The registry


@public_action("DescribeRegistries")
async def describe_registries(call: Call, params: Json) -> Json:
    state = call.state
    if params.get("nextToken") is not None:
        paging.decode("DescribeRegistries", params["nextToken"], 0)  # a forged one is refused
        return {"registries": []}  # there is one registry, on the first page
    name = alias(state)
    return {"registries": [{
        "registryId": state.account_id,
        "registryArn": f"arn:aws:ecr-public::{state.account_id}:registry/{state.account_id}",
        "registryUri": f"{HOST}/{name}",
        "verified": False,
        "aliases": [{"name": name, "status": "ACTIVE", "primaryRegistryAlias": True,
                     "defaultRegistryAlias": True}],
    }]}


@public_action("GetAuthorizationToken")
async def get_authorization_token(call: Call, params: Json) -> Json:
    state = call.state
    now = time.time()
    expires_at = now + state.settings.auth_token_lifetime
    password = secrets.token_urlsafe(96)
    await state.db.write(store.save_token, password, access_key_id=call.identity.access_key_id,
                         region=call.identity.region, registry_id=state.account_id,
                         expires_at=expires_at, now=now)
    token = base64.b64encode(f"AWS:{password}".encode()).decode()
    return {"authorizationData": {"authorizationToken": token, "expiresAt": expires_at}}


@public_action("GetRegistryCatalogData")
async def get_registry_catalog_data(call: Call, params: Json) -> Json:
    name = await call.state.db.read(documents.get_meta, REGISTRY_NAME_KEY)
    return {"registryCatalogData": {"displayName": name or ""}}


@public_action("PutRegistryCatalogData")
async def put_registry_catalog_data(call: Call, params: Json) -> Json:
    state = call.state
    name = params.get("displayName")
    if name is not None:
        await state.db.write(documents.set_meta, REGISTRY_NAME_KEY, name)
    else:
        name = await state.db.read(documents.get_meta, REGISTRY_NAME_KEY) or ""
    return {"registryCatalogData": {"displayName": name}}


# Repository catalog data


@public_action("GetRepositoryCatalogData")
async def get_repository_catalog_data(call: Call, params: Json) -> Json:
    _, repository = await existing_repository(call, params)
    stored = await call.state.db.read(documents.get, repository, documents.CATALOG)
    return {"catalogData": catalog_json(call, repository, stored)}


@public_action("PutRepositoryCatalogData")
async def put_repository_catalog_data(call: Call, params: Json) -> Json:
    state = call.state
    registry_id = state.registry_id(params)
    repository = params["repositoryName"]

    def put(db: sqlite3.Connection) -> Json:
        store.get_repository(db, repository, registry_id)
        previous = documents.get(db, repository, documents.CATALOG)
        stored = _catalog_document(params["catalogData"], previous) or {}
        documents.put(db, repository, documents.CATALOG, stored, time.time(),
                      registry_id=registry_id)
        return stored

    stored = await state.db.write(put)
    return {"catalogData": catalog_json(call, repository, stored)}
