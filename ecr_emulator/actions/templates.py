"""Repository creation templates: Create/Describe/Update/DeleteRepositoryCreationTemplate,
and ``create_from_template``, which creates a repository the way a template says.

A template applies to the repositories whose name is its prefix or starts with prefix + "/";
the longest matching prefix wins and ``ROOT`` matches every name. Only templates whose
``appliedFor`` names the creation path are consulted (CreateRepository never uses them):
PULL_THROUGH_CACHE when a pull creates the repository, CREATE_ON_PUSH when InitiateLayerUpload
or PutImage names a repository that does not exist. What a template carries — encryption, tag
mutability and its exclusion filters, resource tags, repository policy, lifecycle policy —
becomes the new repository's, and its policies are stored as SetRepositoryPolicy and
PutLifecyclePolicy store them.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from ecr_emulator import documents, paging, repository_policy, store
from ecr_emulator import registry_documents as registry
from ecr_emulator.actions.repositories import EXCLUSION_MODES, _check_tags
from ecr_emulator.errors import AwsError
from ecr_emulator.protocol import Call, Json, action
from ecr_emulator.role_arns import check_custom_role
from ecr_emulator.state import EmulatorState
from ecr_model import lifecycle_policy

MAX_TEMPLATES = 50  # a registry's quota of repository creation templates
ROOT = "ROOT"
_FIELDS = ("description", "encryptionConfiguration", "resourceTags", "imageTagMutability",
           "imageTagMutabilityExclusionFilters", "repositoryPolicy", "lifecyclePolicy",
           "appliedFor", "customRoleArn")


def _key(prefix: str) -> str:
    return prefix if prefix == ROOT else prefix.rstrip("/")


def matches(prefix: str, name: str) -> bool:
    key = _key(prefix)
    return key == ROOT or name == key or name.startswith(key + "/")


def _not_found(prefix: str, registry_id: str) -> AwsError:
    return AwsError("TemplateNotFoundException",
                    f"The repository creation template with prefix '{prefix}' does not exist "
                    f"in the registry with id '{registry_id}'")


def _checked(template: Json) -> Json:
    """``template`` once its members are consistent, as CreateRepository checks them."""
    if not template.get("appliedFor"):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'appliedFor' failed to satisfy constraint: "
                       "'must name at least one of REPLICATION, PULL_THROUGH_CACHE, "
                       "CREATE_ON_PUSH'")
    mutability = template.get("imageTagMutability", "MUTABLE")
    if (mutability in EXCLUSION_MODES) != bool(template.get("imageTagMutabilityExclusionFilters")):
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to "
                       "satisfy constraint: 'exclusion filters are required with, and only "
                       f"allowed with, {' or '.join(EXCLUSION_MODES)}'")
    encryption = template.get("encryptionConfiguration") or {}
    if encryption.get("kmsKey") and encryption.get("encryptionType") == "AES256":
        raise AwsError("InvalidParameterException",
                       "Invalid parameter at 'encryptionConfiguration' failed to satisfy "
                       "constraint: 'kmsKey can only be given with a KMS encryption type'")
    try:
        _check_tags(template.get("resourceTags") or [])
    except AwsError as exc:
        # CreateRepository's own errors (TooManyTagsException, InvalidTagParameterException)
        # are not among these actions' errors: botocore would not know them.
        raise AwsError("InvalidParameterException",
                       f"Invalid parameter at 'resourceTags' failed to satisfy constraint: "
                       f"'{exc.message}'") from None
    if template.get("repositoryPolicy"):
        repository_policy.parse(template["repositoryPolicy"])
    if template.get("lifecyclePolicy"):
        try:
            lifecycle_policy.parse(template["lifecyclePolicy"])
        except lifecycle_policy.PolicyError as exc:
            raise AwsError("InvalidParameterException",
                           f"Invalid parameter at 'lifecyclePolicy' failed to satisfy "
                           f"constraint: '{exc}'") from None
    template["appliedFor"] = list(dict.fromkeys(template["appliedFor"]))
    return template


def _answer(template: Json) -> Json:
    shown: Json = {
        "prefix": template["prefix"],
        "encryptionConfiguration": {"encryptionType": "AES256"},
        "resourceTags": [],
        "imageTagMutability": "MUTABLE",
    }
    shown.update({k: v for k, v in template.items() if v is not None})
    return shown


@action("CreateRepositoryCreationTemplate")
async def create_template(call: Call, params: Json) -> Json:
    state = call.state
    now = time.time()
    check_custom_role(params.get("customRoleArn"), state.account_id)
    template = _checked({"prefix": params["prefix"],
                         **{k: params[k] for k in _FIELDS if k in params},
                         "createdAt": now, "updatedAt": now})

    def create(db: sqlite3.Connection) -> None:
        if registry.get(db, registry.TEMPLATE, _key(params["prefix"])) is not None:
            raise AwsError("TemplateAlreadyExistsException",
                           f"The repository creation template with prefix "
                           f"'{params['prefix']}' already exists in the registry with id "
                           f"'{state.account_id}'")
        if registry.count(db, registry.TEMPLATE) >= MAX_TEMPLATES:
            raise AwsError("LimitExceededException",
                           f"A registry has at most {MAX_TEMPLATES} repository creation "
                           "templates")
        registry.put(db, registry.TEMPLATE, _key(params["prefix"]), template, now)

    await state.db.write(create)
    return {"registryId": state.account_id, "repositoryCreationTemplate": _answer(template)}


@action("UpdateRepositoryCreationTemplate")
async def update_template(call: Call, params: Json) -> Json:
    state = call.state
    now = time.time()
    check_custom_role(params.get("customRoleArn"), state.account_id)

    def update(db: sqlite3.Connection) -> Json:
        stored = registry.get(db, registry.TEMPLATE, _key(params["prefix"]))
        if stored is None:
            raise _not_found(params["prefix"], state.account_id)
        merged = {**stored, **{k: params[k] for k in _FIELDS if k in params}, "updatedAt": now}
        if params.get("imageTagMutability") in ("MUTABLE", "IMMUTABLE") and (
                "imageTagMutabilityExclusionFilters" not in params):
            merged.pop("imageTagMutabilityExclusionFilters", None)  # the new mode has none
        _checked(merged)
        registry.put(db, registry.TEMPLATE, _key(params["prefix"]), merged, now)
        return merged

    template = await state.db.write(update)
    return {"registryId": state.account_id, "repositoryCreationTemplate": _answer(template)}


@action("DeleteRepositoryCreationTemplate")
async def delete_template(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.write(registry.delete, registry.TEMPLATE, _key(params["prefix"]))
    if stored is None:
        raise _not_found(params["prefix"], state.account_id)
    return {"registryId": state.account_id, "repositoryCreationTemplate": _answer(stored)}


@action("DescribeRepositoryCreationTemplates")
async def describe_templates(call: Call, params: Json) -> Json:
    state = call.state
    stored = await state.db.read(registry.all_of, registry.TEMPLATE)
    wanted = params.get("prefixes")
    if wanted is not None:
        keys = {_key(p) for p in wanted}
        stored = [(k, t) for k, t in stored if k in keys]
    after = paging.decode("DescribeRepositoryCreationTemplates", params.get("nextToken"), "")
    if after:
        stored = [(k, t) for k, t in stored if k > after]
    limit = paging.page_size(params, 100)
    result: Json = {"registryId": state.account_id,
                    "repositoryCreationTemplates": [_answer(t) for _, t in stored[:limit]]}
    if len(stored) > limit:
        result["nextToken"] = paging.encode("DescribeRepositoryCreationTemplates",
                                            stored[limit - 1][0])
    return result


def best_template(db: sqlite3.Connection, name: str, applied_for: str) -> Json | None:
    """The template a new repository ``name`` created through ``applied_for`` follows."""
    found = [t for k, t in registry.all_of(db, registry.TEMPLATE)
             if applied_for in t.get("appliedFor", []) and matches(k, name)]
    found.sort(key=lambda t: (t["prefix"] != ROOT, len(_key(t["prefix"]))), reverse=True)
    return found[0] if found else None


def create_from_template(db: sqlite3.Connection, name: str, applied_for: str, *,
                         registry_id: str, max_repositories: int, now: float) -> store.Repository:
    """Create repository ``name`` with the matching template's settings (ECR's defaults
    without one), in the caller's transaction."""
    template: dict[str, Any] = best_template(db, name, applied_for) or {}
    encryption = template.get("encryptionConfiguration") or {"encryptionType": "AES256"}
    repo = store.create_repository(db, store.Repository(
        name=name, created_at=now,
        tag_mutability=template.get("imageTagMutability", "MUTABLE"),
        mutability_filters=template.get("imageTagMutabilityExclusionFilters"),
        encryption_type=encryption["encryptionType"], kms_key=encryption.get("kmsKey"),
        tags=tuple(template.get("resourceTags") or ()),
    ), registry_id=registry_id, max_repositories=max_repositories)
    if template.get("repositoryPolicy"):
        documents.put(db, name, documents.POLICY, {"text": template["repositoryPolicy"]}, now,
                      registry_id=registry_id)
    if template.get("lifecyclePolicy"):
        documents.put(db, name, documents.LIFECYCLE, {"text": template["lifecyclePolicy"]},
                      now, registry_id=registry_id)
    return repo


async def create_on_push(state: EmulatorState, repository: str, registry_id: str) -> None:
    """A push to a missing repository creates it when a CREATE_ON_PUSH template matches its
    name (else the push gets RepositoryNotFoundException as before)."""
    if registry_id != state.account_id or await state.db.read(store.repository_exists,
                                                              repository):
        return  # the common case stays a read

    def create(db: sqlite3.Connection) -> None:
        if store.repository_exists(db, repository) or best_template(
                db, repository, "CREATE_ON_PUSH") is None:
            return
        create_from_template(db, repository, "CREATE_ON_PUSH", registry_id=registry_id,
                             max_repositories=state.settings.max_repositories, now=time.time())

    await state.db.write(create)
