"""Every exception the registry-wide actions declare, each raised by a named trigger.

As tests/emulator/api/test_errors.py does for the image and layer planes: ``NATURAL``
gives, per (action, exception), a scenario in which the emulator raises it; ``INJECTED`` the
ones with no natural cause here (internal failures, organization policies, and the
InvalidParameterException or LimitExceededException of actions that never refuse input that
way), raised by the fault injector. A last test checks that together they cover every error
the model declares for these actions. One emulator of its own, since some triggers fill a
registry quota.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import botocore.session
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import ClientError

from ecr_emulator import actions
from ecr_emulator.protocol import ACTIONS
from tests.emulator.api.helpers import index_manifest, push_image
from tests.emulator.api.triggers import snake
from tests.support.emulator import REGION, EmulatorProcess, ecr_client

REGISTRY_MODULES = {"account", "pull_through", "pull_time", "registry_policy", "replication",
                    "scanning", "signing", "storage_class", "tag_mutability", "templates"}
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:ecr-pullthroughcache/errors-x"
BAD_DIGEST = {"imageDigest": "sha256:xyz"}
IPE, VE = "InvalidParameterException", "ValidationException"
ROLE = "arn:aws:iam::123456789012:role/ecr-pull-through"
RNF, INF = "RepositoryNotFoundException", "ImageNotFoundException"
OTHER_REGISTRY = "210987654321"


@dataclass
class Ctx:
    ecr: Any
    raw: Any  # no client-side validation
    emulator: EmulatorProcess
    repo: str

    async def image(self, tag: str = "v1") -> str:
        await self.ecr.create_repository(repositoryName=self.repo)
        digest, _ = await push_image(self.ecr, self.repo, tag)
        return digest

    def secrets(self, text: str) -> None:
        (self.emulator.data_dir / "pull-through-secrets.json").write_text(text)

    async def rule(self) -> str:
        prefix = f"e{uuid.uuid4().hex[:10]}"
        self.secrets(json.dumps({SECRET: {"username": "u", "accessToken": "t"}}))
        await self.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                                      upstreamRegistryUrl="http://127.0.0.1:9")
        return prefix

    async def post(self, action: str, body: bytes) -> None:
        """A signed request with ``body`` as it is; its error raised as a ClientError."""
        credentials = await self.ecr._request_signer._credentials.get_frozen_credentials()
        request = AWSRequest("POST", self.emulator.url + "/", data=body, headers={
            "X-Amz-Target": f"AmazonEC2ContainerRegistry_V20150921.{action}",
            "Content-Type": "application/x-amz-json-1.1"})
        SigV4Auth(credentials, "ecr", REGION).add_auth(request)
        async with aiohttp.ClientSession() as session, session.post(
                request.url, data=body, headers=dict(request.headers)) as response:
            answer = json.loads(await response.read())
        raise ClientError({"Error": {"Code": answer.get("__type"),
                                     "Message": answer.get("message")},
                           "ResponseMetadata": {"HTTPStatusCode": response.status}}, action)


Trigger = Callable[[Ctx], Awaitable[Any]]


async def fill(create: Callable[[int], Awaitable[Any]], delete: Callable[[int], Awaitable[Any]],
               limit: int) -> None:
    """Create until the quota refuses (the refusal is what the trigger raises), then delete
    what was created so that the registry's other triggers are not refused too."""
    created = 0
    try:
        for n in range(limit + 1):
            await create(n)
            created += 1
    finally:
        for n in range(created):
            try:
                await delete(n)
            except ClientError:
                pass  # created before this trigger ran (another item of the same name)


async def second_scan(c: Ctx) -> Any:
    digest = await c.image()
    await c.ecr.start_image_scan(repositoryName=c.repo, imageId={"imageDigest": digest})
    return await c.ecr.start_image_scan(repositoryName=c.repo, imageId={"imageDigest": digest})


async def scan_index(c: Ctx) -> Any:
    await c.ecr.create_repository(repositoryName=c.repo)
    _, child = await push_image(c.ecr, c.repo, None)
    await c.ecr.put_image(repositoryName=c.repo, imageManifest=index_manifest([child]),
                          imageTag="multi")
    return await c.ecr.start_image_scan(repositoryName=c.repo, imageId={"imageTag": "multi"})


async def archive_index_child(c: Ctx) -> Any:
    await c.ecr.create_repository(repositoryName=c.repo)
    child_digest, child = await push_image(c.ecr, c.repo, None)
    await c.ecr.put_image(repositoryName=c.repo, imageManifest=index_manifest([child]))
    return await c.ecr.update_image_storage_class(
        repositoryName=c.repo, imageId={"imageDigest": child_digest},
        targetStorageClass="ARCHIVE")


async def scan_archived(c: Ctx) -> Any:
    digest = await c.image()
    await c.ecr.update_image_storage_class(repositoryName=c.repo,
                                           imageId={"imageDigest": digest},
                                           targetStorageClass="ARCHIVE")
    return await c.ecr.start_image_scan(repositoryName=c.repo, imageId={"imageDigest": digest})


async def no_registry_policy(c: Ctx, call: str) -> Any:
    await c.ecr.put_registry_policy(policyText=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "ecr:ReplicateImage"}]}))
    await c.ecr.delete_registry_policy()
    return await getattr(c.ecr, call)()


async def no_signing(c: Ctx, call: str) -> Any:
    await c.ecr.put_signing_configuration(signingConfiguration={"rules": []})
    await c.ecr.delete_signing_configuration()
    return await getattr(c.ecr, call)()


async def rule_then(c: Ctx, **update: Any) -> Any:
    prefix = await c.rule()
    return await c.ecr.update_pull_through_cache_rule(ecrRepositoryPrefix=prefix, **update)


async def create_rule_with(c: Ctx, secrets: str) -> Any:
    c.secrets(secrets)
    return await c.ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix=f"e{uuid.uuid4().hex[:10]}", upstreamRegistryUrl="http://127.0.0.1:9",
        credentialArn=SECRET)


async def update_rule_with(c: Ctx, secrets: str) -> Any:
    prefix = await c.rule()
    c.secrets(secrets)
    return await c.ecr.update_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                                      credentialArn=SECRET)


def lacking(secret_value: Any) -> str:
    return json.dumps({SECRET: secret_value})


async def template_twice(c: Ctx) -> Any:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await c.ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    return await c.ecr.create_repository_creation_template(prefix=prefix,
                                                           appliedFor=["REPLICATION"])


async def rule_twice(c: Ctx) -> Any:
    prefix = await c.rule()
    return await c.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix=prefix,
                                                      upstreamRegistryUrl="http://127.0.0.1:9")


async def exclusion_twice(c: Ctx) -> Any:
    arn = f"arn:aws:iam::123456789012:user/u{uuid.uuid4().hex[:8]}"
    await c.ecr.register_pull_time_update_exclusion(principalArn=arn)
    return await c.ecr.register_pull_time_update_exclusion(principalArn=arn)


async def too_many_rules(c: Ctx) -> Any:
    existing = len((await c.ecr.describe_pull_through_cache_rules())["pullThroughCacheRules"])
    return await fill(lambda n: c.ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix=f"quota{n}", upstreamRegistryUrl="http://127.0.0.1:9"),
        lambda n: c.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix=f"quota{n}"),
        50 - existing)


async def too_many_templates(c: Ctx) -> Any:
    existing = len((await c.ecr.describe_repository_creation_templates())[
        "repositoryCreationTemplates"])
    return await fill(lambda n: c.ecr.create_repository_creation_template(
        prefix=f"quota{n}", appliedFor=["REPLICATION"]),
        lambda n: c.ecr.delete_repository_creation_template(prefix=f"quota{n}"),
        50 - existing)


async def too_many_exclusions(c: Ctx) -> Any:
    existing = len((await c.ecr.list_pull_time_update_exclusions())["pullTimeUpdateExclusions"])
    return await fill(lambda n: c.ecr.register_pull_time_update_exclusion(
        principalArn=f"arn:aws:iam::123456789012:role/quota{n}"),
        lambda n: c.ecr.deregister_pull_time_update_exclusion(
            principalArn=f"arn:aws:iam::123456789012:role/quota{n}"), 100 - existing)


def image_call(action: str, image_id: dict[str, str], **extra: Any) -> Trigger:
    async def trigger(c: Ctx) -> Any:
        await c.image()
        return await getattr(c.ecr, snake(action))(repositoryName=c.repo, imageId=image_id,
                                                    **extra)
    return trigger


def named_call(action: str, repository: str, extra: dict[str, str]) -> Trigger:
    """``action`` on image v1 of ``repository``, which need not exist."""
    async def trigger(c: Ctx) -> Any:
        return await getattr(c.ecr, snake(action))(repositoryName=repository,
                                                    imageId={"imageTag": "v1"}, **extra)
    return trigger


STORAGE = {"targetStorageClass": "ARCHIVE"}
IMAGE_ACTIONS = {"DescribeImageReplicationStatus": {}, "DescribeImageScanFindings": {},
                 "DescribeImageSigningStatus": {}, "StartImageScan": {},
                 "UpdateImageStorageClass": STORAGE}

NATURAL: list[tuple[str, str, str, Trigger]] = [
    ("BatchGetRepositoryScanningConfiguration", IPE, "an empty list of names",
     lambda c: c.raw.batch_get_repository_scanning_configuration(repositoryNames=[])),
    ("CreatePullThroughCacheRule", IPE, "Docker Hub without a credential",
     lambda c: c.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="hub",
                                                    upstreamRegistryUrl="registry-1.docker.io")),
    ("CreatePullThroughCacheRule", IPE, "a prefix outside the model's pattern",
     lambda c: c.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="Hub!",
                                                    upstreamRegistryUrl="http://127.0.0.1:9")),
    ("CreatePullThroughCacheRule", "PullThroughCacheRuleAlreadyExistsException",
     "the same prefix twice", rule_twice),
    ("CreatePullThroughCacheRule", "UnsupportedUpstreamRegistryException", "an ftp URL",
     lambda c: c.ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="ftp",
                                                    upstreamRegistryUrl="ftp://127.0.0.1")),
    ("CreatePullThroughCacheRule", "LimitExceededException", "a 51st rule", too_many_rules),
    ("CreatePullThroughCacheRule", "UnableToAccessSecretException", "an unreadable secret store",
     lambda c: create_rule_with(c, "{not json")),
    ("CreatePullThroughCacheRule", "SecretNotFoundException", "a secret nobody stored",
     lambda c: create_rule_with(c, "{}")),
    ("CreatePullThroughCacheRule", "UnableToDecryptSecretValueException",
     "a secret without accessToken", lambda c: create_rule_with(c, lacking({"username": "u"}))),
    ("CreateRepositoryCreationTemplate", IPE, "appliedFor outside the enum",
     lambda c: c.ecr.create_repository_creation_template(prefix="t1", appliedFor=["PUSH"])),
    ("CreateRepositoryCreationTemplate", IPE, "exclusion filters with MUTABLE",
     lambda c: c.ecr.create_repository_creation_template(
         prefix="t1", appliedFor=["REPLICATION"], imageTagMutability="MUTABLE",
         imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "x"}])),
    ("CreateRepositoryCreationTemplate", "LimitExceededException", "a 51st template",
     too_many_templates),
    ("CreateRepositoryCreationTemplate", "TemplateAlreadyExistsException", "the same prefix",
     template_twice),
    ("DeletePullThroughCacheRule", IPE, "another registry",
     lambda c: c.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="hub",
                                                    registryId=OTHER_REGISTRY)),
    ("DeletePullThroughCacheRule", IPE, "a prefix outside the pattern",
     lambda c: c.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="Hub!")),
    ("DeletePullThroughCacheRule", "PullThroughCacheRuleNotFoundException", "no such rule",
     lambda c: c.ecr.delete_pull_through_cache_rule(ecrRepositoryPrefix="absent")),
    ("DeleteRegistryPolicy", "RegistryPolicyNotFoundException", "no policy",
     lambda c: no_registry_policy(c, "delete_registry_policy")),
    ("DeleteRepositoryCreationTemplate", IPE, "a prefix outside the pattern",
     lambda c: c.ecr.delete_repository_creation_template(prefix="T!")),
    ("DeleteRepositoryCreationTemplate", "TemplateNotFoundException", "no such template",
     lambda c: c.ecr.delete_repository_creation_template(prefix="absent")),
    ("DeleteSigningConfiguration", "SigningConfigurationNotFoundException", "none stored",
     lambda c: no_signing(c, "delete_signing_configuration")),
    ("DeregisterPullTimeUpdateExclusion", "ExclusionNotFoundException", "never registered",
     lambda c: c.ecr.deregister_pull_time_update_exclusion(
         principalArn="arn:aws:iam::123456789012:user/absent")),
    ("DeregisterPullTimeUpdateExclusion", IPE, "not an IAM principal ARN",
     lambda c: c.ecr.deregister_pull_time_update_exclusion(principalArn="arn:aws:s3:::b")),
    ("DescribePullThroughCacheRules", IPE, "a nextToken of another action",
     lambda c: c.ecr.describe_pull_through_cache_rules(nextToken="WyJMaXN0SW1hZ2VzIiwwXQ==")),
    ("DescribePullThroughCacheRules", IPE, "maxResults 0",
     lambda c: c.raw.describe_pull_through_cache_rules(maxResults=0)),
    ("DescribePullThroughCacheRules", "PullThroughCacheRuleNotFoundException", "unknown prefix",
     lambda c: c.ecr.describe_pull_through_cache_rules(ecrRepositoryPrefixes=["absent"])),
    ("DescribeRepositoryCreationTemplates", IPE, "maxResults 0",
     lambda c: c.raw.describe_repository_creation_templates(maxResults=0)),
    ("DescribeRepositoryCreationTemplates", IPE, "a nextToken that is not one",
     lambda c: c.ecr.describe_repository_creation_templates(nextToken="!!")),
    ("GetAccountSetting", VE, "an unknown setting",
     lambda c: c.ecr.get_account_setting(name="NO_SUCH_SETTING")),
    ("GetRegistryPolicy", "RegistryPolicyNotFoundException", "no policy",
     lambda c: no_registry_policy(c, "get_registry_policy")),
    ("GetSigningConfiguration", "SigningConfigurationNotFoundException", "none stored",
     lambda c: no_signing(c, "get_signing_configuration")),
    ("ListPullTimeUpdateExclusions", IPE, "a nextToken that is not one",
     lambda c: c.ecr.list_pull_time_update_exclusions(nextToken="!!")),
    ("ListPullTimeUpdateExclusions", IPE, "maxResults 0",
     lambda c: c.raw.list_pull_time_update_exclusions(maxResults=0)),
    ("PutAccountSetting", VE, "a value outside the setting's values",
     lambda c: c.ecr.put_account_setting(name="BLOB_MOUNTING", value="MAYBE")),
    ("PutImageScanningConfiguration", RNF, "no such repository",
     lambda c: c.ecr.put_image_scanning_configuration(
         repositoryName="absent", imageScanningConfiguration={"scanOnPush": True})),
    ("PutImageScanningConfiguration", IPE, "a repository name outside the pattern",
     lambda c: c.ecr.put_image_scanning_configuration(
         repositoryName="Absent!", imageScanningConfiguration={"scanOnPush": True})),
    ("PutImageTagMutability", IPE, "exclusion filters with IMMUTABLE",
     lambda c: c.ecr.put_image_tag_mutability(
         repositoryName="absent", imageTagMutability="IMMUTABLE",
         imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "x"}])),
    ("PutImageTagMutability", RNF, "no such repository",
     lambda c: c.ecr.put_image_tag_mutability(repositoryName="absent",
                                              imageTagMutability="IMMUTABLE")),
    ("PutRegistryPolicy", IPE, "a policy without statements",
     lambda c: c.ecr.put_registry_policy(policyText='{"Version": "2012-10-17"}')),
    ("PutRegistryPolicy", IPE, "a policy over 10,240 characters",
     lambda c: c.ecr.put_registry_policy(policyText=" " * 10241)),
    ("PutRegistryScanningConfiguration", IPE, "CONTINUOUS_SCAN with BASIC",
     lambda c: c.ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[
         {"scanFrequency": "CONTINUOUS_SCAN",
          "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}]}])),
    ("PutRegistryScanningConfiguration", IPE, "a scan type outside the enum",
     lambda c: c.ecr.put_registry_scanning_configuration(scanType="DEEP")),
    ("PutReplicationConfiguration", IPE, "this registry and region as destination",
     lambda c: c.ecr.put_replication_configuration(replicationConfiguration={"rules": [
         {"destinations": [{"region": REGION, "registryId": c.emulator.account_id}]}]})),
    ("PutReplicationConfiguration", IPE, "a region outside the pattern",
     lambda c: c.ecr.put_replication_configuration(replicationConfiguration={"rules": [
         {"destinations": [{"region": "EU WEST", "registryId": "123456789012"}]}]})),
    ("PutSigningConfiguration", IPE, "a signing profile that is not an ARN",
     lambda c: c.ecr.put_signing_configuration(signingConfiguration={"rules": [
         {"signingProfileArn": "profile", "repositoryFilters": [
             {"filter": "x", "filterType": "WILDCARD_MATCH"}]}]})),
    ("RegisterPullTimeUpdateExclusion", "ExclusionAlreadyExistsException", "the same ARN twice",
     exclusion_twice),
    ("RegisterPullTimeUpdateExclusion", "LimitExceededException", "a 101st exclusion",
     too_many_exclusions),
    ("RegisterPullTimeUpdateExclusion", IPE, "not an IAM principal ARN",
     lambda c: c.ecr.register_pull_time_update_exclusion(principalArn="arn:aws:s3:::b")),
    ("StartImageScan", "UnsupportedImageTypeException", "an image index", scan_index),
    ("StartImageScan", "LimitExceededException", "a second scan the same day", second_scan),
    ("StartImageScan", "ImageArchivedException", "an archived image", scan_archived),
    ("DescribeImageScanFindings", "ScanNotFoundException", "never scanned",
     image_call("DescribeImageScanFindings", {"imageTag": "v1"})),
    ("UpdateImageStorageClass", "ImageStorageClassUpdateNotSupportedException",
     "an index's child alone", archive_index_child),
    ("UpdatePullThroughCacheRule", IPE, "neither credentialArn nor customRoleArn", rule_then),
    ("UpdatePullThroughCacheRule", IPE, "a prefix outside the pattern",
     lambda c: c.ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="Hub!",
                                                    customRoleArn=ROLE)),
    ("UpdatePullThroughCacheRule", "PullThroughCacheRuleNotFoundException", "no such rule",
     lambda c: c.ecr.update_pull_through_cache_rule(ecrRepositoryPrefix="absent",
                                                    customRoleArn=ROLE)),
    ("UpdatePullThroughCacheRule", "UnableToAccessSecretException", "an unreadable store",
     lambda c: update_rule_with(c, "{not json")),
    ("UpdatePullThroughCacheRule", "SecretNotFoundException", "a secret nobody stored",
     lambda c: update_rule_with(c, "{}")),
    ("UpdatePullThroughCacheRule", "UnableToDecryptSecretValueException", "no accessToken",
     lambda c: update_rule_with(c, lacking({"username": "u"}))),
    ("UpdateRepositoryCreationTemplate", IPE, "a prefix outside the pattern",
     lambda c: c.ecr.update_repository_creation_template(prefix="T!")),
    ("UpdateRepositoryCreationTemplate", IPE, "an invalid lifecycle policy",
     lambda c: template_then_update(c, lifecyclePolicy='{"rules": []}')),
    ("UpdateRepositoryCreationTemplate", "TemplateNotFoundException", "no such template",
     lambda c: c.ecr.update_repository_creation_template(prefix="absent", description="x")),
    ("ValidatePullThroughCacheRule", IPE, "another registry",
     lambda c: c.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="hub",
                                                      registryId=OTHER_REGISTRY)),
    ("ValidatePullThroughCacheRule", IPE, "a prefix outside the pattern",
     lambda c: c.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="Hub!")),
    ("ValidatePullThroughCacheRule", "PullThroughCacheRuleNotFoundException", "no such rule",
     lambda c: c.ecr.validate_pull_through_cache_rule(ecrRepositoryPrefix="absent")),
] + [row for action, extra in IMAGE_ACTIONS.items() for row in [
    (action, IPE, "a digest that is not one", image_call(action, BAD_DIGEST, **extra)),
    (action, INF, "no such image", image_call(action, {"imageTag": "absent"}, **extra)),
    (action, RNF, "no such repository", named_call(action, "absent", extra)),
    (action, IPE, "a repository name outside the pattern", named_call(action, "Absent!", extra)),
]]


async def template_then_update(c: Ctx, **update: Any) -> Any:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    await c.ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    return await c.ecr.update_repository_creation_template(prefix=prefix, **update)


# No natural cause: internal failures, organizations, and refusals these actions never make.
INJECTED_ALWAYS = {"ServerException", "BlockedByOrganizationPolicyException"}
INJECTED = {
    ("BatchGetRepositoryScanningConfiguration", IPE), ("BatchGetRepositoryScanningConfiguration",
                                                       RNF),  # unknown names are failures
    ("DeleteRegistryPolicy", IPE), ("DeleteRepositoryCreationTemplate", IPE),
    ("DeregisterPullTimeUpdateExclusion", IPE),
    ("DeregisterPullTimeUpdateExclusion", "LimitExceededException"),
    ("DescribeRegistry", IPE), ("GetAccountSetting", IPE), ("GetRegistryPolicy", IPE),
    ("GetRegistryScanningConfiguration", IPE), ("GetSigningConfiguration", IPE),
    ("ListPullTimeUpdateExclusions", "LimitExceededException"), ("PutAccountSetting", IPE),
    ("PutAccountSetting", "LimitExceededException"), ("PutImageScanningConfiguration", IPE),
    ("PutSigningConfiguration", IPE), ("RegisterPullTimeUpdateExclusion", IPE),
}
# ValidationException is declared by 37 actions, but ECR answers a broken constraint of the
# model with InvalidParameterException (validation.constraint_error): only the account
# settings' own checks raise it here; the others' is injected.
NATURAL_VE = {action for action, error, _, _ in NATURAL if error == VE}

# Minimal valid input per action: an injected fault fires after validation.
VALID: dict[str, dict[str, Any]] = {
    "BatchGetRepositoryScanningConfiguration": {"repositoryNames": ["a1"]},
    "CreatePullThroughCacheRule": {"ecrRepositoryPrefix": "inj",
                                   "upstreamRegistryUrl": "http://127.0.0.1:9"},
    "CreateRepositoryCreationTemplate": {"prefix": "inj", "appliedFor": ["REPLICATION"]},
    "DeletePullThroughCacheRule": {"ecrRepositoryPrefix": "inj"},
    "DeleteRepositoryCreationTemplate": {"prefix": "inj"},
    "DeregisterPullTimeUpdateExclusion": {"principalArn": "arn:aws:iam::123456789012:user/u"},
    "DescribeImageReplicationStatus": {"repositoryName": "a1", "imageId": {"imageTag": "a"}},
    "DescribeImageScanFindings": {"repositoryName": "a1", "imageId": {"imageTag": "a"}},
    "DescribeImageSigningStatus": {"repositoryName": "a1", "imageId": {"imageTag": "a"}},
    "GetAccountSetting": {"name": "BLOB_MOUNTING"},
    "PutAccountSetting": {"name": "BLOB_MOUNTING", "value": "ENABLED"},
    "PutImageScanningConfiguration": {"repositoryName": "a1",
                                      "imageScanningConfiguration": {"scanOnPush": True}},
    "PutImageTagMutability": {"repositoryName": "a1", "imageTagMutability": "MUTABLE"},
    "PutRegistryPolicy": {"policyText": "{}"},
    "PutReplicationConfiguration": {"replicationConfiguration": {"rules": []}},
    "PutSigningConfiguration": {"signingConfiguration": {"rules": []}},
    "RegisterPullTimeUpdateExclusion": {"principalArn": "arn:aws:iam::123456789012:user/u"},
    "StartImageScan": {"repositoryName": "a1", "imageId": {"imageTag": "a"}},
    "UpdateImageStorageClass": {"repositoryName": "a1", "imageId": {"imageTag": "a"},
                                "targetStorageClass": "ARCHIVE"},
    "UpdatePullThroughCacheRule": {"ecrRepositoryPrefix": "inj", "customRoleArn": ROLE},
    "UpdateRepositoryCreationTemplate": {"prefix": "inj"},
    "ValidatePullThroughCacheRule": {"ecrRepositoryPrefix": "inj"},
}


def declared_errors() -> dict[str, set[str]]:
    assert actions  # imported to register the handlers in ACTIONS
    model = botocore.session.get_session().get_service_model("ecr")
    return {name: {e.name for e in model.operation_model(name).error_shapes}
            for name, spec in ACTIONS.items()
            if spec.handler.__module__.rsplit(".", 1)[-1] in REGISTRY_MODULES}


def injected_rows() -> list[tuple[str, str]]:
    return sorted((action, error) for action, errors in declared_errors().items()
                  for error in errors if error in INJECTED_ALWAYS or (action, error) in INJECTED
                  or (error == VE and action not in NATURAL_VE))


@pytest.fixture(scope="module")
def errors_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    with EmulatorProcess(tmp_path_factory.mktemp("model-errors")) as emu:
        yield emu


@pytest.fixture
async def ctx(errors_emulator: EmulatorProcess) -> AsyncIterator[Ctx]:
    async with ecr_client(errors_emulator.url, retries={"total_max_attempts": 1}) as ecr, \
            ecr_client(errors_emulator.url, retries={"total_max_attempts": 1},
                       parameter_validation=False) as raw:
        yield Ctx(ecr, raw, errors_emulator, f"err/{uuid.uuid4().hex[:10]}")


def assert_raised(ctx: Ctx, info: pytest.ExceptionInfo[ClientError], action: str,
                  exception: str) -> None:
    assert info.value.response["Error"]["Code"] == exception, info.value
    assert info.value.operation_name == action
    status = info.value.response["ResponseMetadata"]["HTTPStatusCode"]
    assert status == (500 if exception == "ServerException" else 400)


@pytest.mark.parametrize(("action", "exception", "trigger"), [
    pytest.param(action, exception, trigger, id=f"{action}-{exception}-{why}")
    for action, exception, why, trigger in NATURAL])
async def test_natural(ctx: Ctx, action: str, exception: str, trigger: Trigger) -> None:
    with pytest.raises(ClientError) as info:
        await trigger(ctx)
    assert_raised(ctx, info, action, exception)


@pytest.mark.parametrize(("action", "exception"), [
    pytest.param(action, exception, id=f"{action}-{exception}")
    for action, exception in injected_rows()])
async def test_injected(ctx: Ctx, action: str, exception: str) -> None:
    ctx.emulator.inject_fault(action, exception)
    with pytest.raises(ClientError) as info:
        await getattr(ctx.ecr, snake(action))(**VALID.get(action, {}))
    assert_raised(ctx, info, action, exception)
    # botocore knows it as the modelled exception of this client.
    assert isinstance(info.value, getattr(ctx.ecr.exceptions, exception))


def test_every_declared_error_is_covered() -> None:
    covered = {(a, e) for a, e, _, _ in NATURAL} | set(injected_rows())
    missing = {(action, error) for action, errors in declared_errors().items()
               for error in errors} - covered
    assert not missing, f"no trigger for {sorted(missing)}"


def test_natural_rows_name_declared_errors() -> None:
    declared = declared_errors()
    undeclared = [(a, e) for a, e, _, _ in NATURAL if e not in declared.get(a, set())]
    assert not undeclared
