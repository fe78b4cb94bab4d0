"""Registry-wide actions: creation templates, account settings, registry policy, scanning,
replication and signing configurations, pull-time update exclusions. Each is answered as
the model says, refuses bad input, and what it stores survives a restart."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from botocore.exceptions import ClientError

from tests.support.emulator import EmulatorProcess, ecr_client

POLICY = json.dumps({"Version": "2012-10-17", "Statement": [{
    "Sid": "replicate", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::210987654321:root"},
    "Action": ["ecr:CreateRepository", "ecr:ReplicateImage"]}]})
SIGNER = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/team_profile"


def code(info: pytest.ExceptionInfo[ClientError]) -> str:
    return str(info.value.response["Error"]["Code"])


async def test_repository_creation_templates(ecr: Any) -> None:
    prefix = f"tpl{uuid.uuid4().hex[:8]}"
    created = await ecr.create_repository_creation_template(
        prefix=prefix, description="team", appliedFor=["PULL_THROUGH_CACHE", "REPLICATION"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest"}])
    template = created["repositoryCreationTemplate"]
    assert created["registryId"] == "123456789012"
    assert template["prefix"] == prefix and template["description"] == "team"
    assert template["encryptionConfiguration"] == {"encryptionType": "AES256"}
    with pytest.raises(ecr.exceptions.TemplateAlreadyExistsException):
        await ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    updated = await ecr.update_repository_creation_template(prefix=prefix,
                                                            imageTagMutability="MUTABLE")
    assert updated["repositoryCreationTemplate"]["imageTagMutability"] == "MUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in updated["repositoryCreationTemplate"]
    listed = await ecr.describe_repository_creation_templates(prefixes=[prefix])
    assert [t["prefix"] for t in listed["repositoryCreationTemplates"]] == [prefix]
    deleted = await ecr.delete_repository_creation_template(prefix=prefix)
    assert deleted["repositoryCreationTemplate"]["description"] == "team"
    with pytest.raises(ecr.exceptions.TemplateNotFoundException):
        await ecr.delete_repository_creation_template(prefix=prefix)
    with pytest.raises(ecr.exceptions.TemplateNotFoundException):
        await ecr.update_repository_creation_template(prefix=prefix, description="x")


async def test_repository_creation_template_validation(ecr: Any) -> None:
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # appliedFor enum
        await ecr.create_repository_creation_template(prefix="tplbad", appliedFor=["PUSH"])
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # prefix pattern
        await ecr.create_repository_creation_template(prefix="Upper/Case",
                                                      appliedFor=["REPLICATION"])
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # filters need the mode
        await ecr.create_repository_creation_template(
            prefix="tplbad", appliedFor=["REPLICATION"], imageTagMutability="MUTABLE",
            imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "x"}])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.create_repository_creation_template(prefix="tplbad",
                                                      appliedFor=["REPLICATION"],
                                                      lifecyclePolicy='{"rules": []}')
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.create_repository_creation_template(prefix="tplbad", appliedFor=[])


async def test_account_settings(ecr: Any) -> None:
    got = await ecr.get_account_setting(name="BLOB_MOUNTING")
    assert got == {"name": "BLOB_MOUNTING", "value": "DISABLED",
                   "ResponseMetadata": got["ResponseMetadata"]}
    put = await ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="CLAIR")
    assert put["value"] == "CLAIR"
    assert (await ecr.get_account_setting(name="BASIC_SCAN_TYPE_VERSION"))["value"] == "CLAIR"
    await ecr.put_account_setting(name="BASIC_SCAN_TYPE_VERSION", value="AWS_NATIVE")
    with pytest.raises(ecr.exceptions.ValidationException):
        await ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V3")
    with pytest.raises(ecr.exceptions.ValidationException):
        await ecr.get_account_setting(name="NO_SUCH_SETTING")


async def test_registry_policy(ecr: Any) -> None:
    put = await ecr.put_registry_policy(policyText=POLICY)
    assert put == {"registryId": "123456789012", "policyText": POLICY,
                   "ResponseMetadata": put["ResponseMetadata"]}
    assert (await ecr.get_registry_policy())["policyText"] == POLICY
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_registry_policy(policyText='{"Statement": 5}')
    assert (await ecr.delete_registry_policy())["policyText"] == POLICY
    with pytest.raises(ecr.exceptions.RegistryPolicyNotFoundException):
        await ecr.get_registry_policy()
    with pytest.raises(ecr.exceptions.RegistryPolicyNotFoundException):
        await ecr.delete_registry_policy()


async def test_registry_scanning_configuration(ecr: Any, repo: str) -> None:
    rules = [{"scanFrequency": "SCAN_ON_PUSH",
              "repositoryFilters": [{"filter": repo.split("/")[0] + "/*",
                                     "filterType": "WILDCARD"}]}]
    put = await ecr.put_registry_scanning_configuration(scanType="BASIC", rules=rules)
    assert put["registryScanningConfiguration"] == {"scanType": "BASIC", "rules": rules}
    got = await ecr.get_registry_scanning_configuration()
    assert got["scanningConfiguration"] == {"scanType": "BASIC", "rules": rules}
    await ecr.create_repository(repositoryName=repo)
    batch = await ecr.batch_get_repository_scanning_configuration(
        repositoryNames=[repo, "model/absent"])
    (config,) = batch["scanningConfigurations"]
    assert config["scanFrequency"] == "SCAN_ON_PUSH" and config["appliedScanFilters"]
    assert batch["failures"][0]["failureCode"] == "REPOSITORY_NOT_FOUND"
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_registry_scanning_configuration(
            scanType="BASIC", rules=[{"scanFrequency": "CONTINUOUS_SCAN", "repositoryFilters":
                                      [{"filter": "*", "filterType": "WILDCARD"}]}])
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_registry_scanning_configuration(scanType="DEEP")
    await ecr.put_registry_scanning_configuration(scanType="BASIC", rules=[])


async def test_replication_configuration(ecr: Any) -> None:
    configuration = {"rules": [{"destinations": [{"region": "eu-west-1",
                                                  "registryId": "123456789012"}],
                                "repositoryFilters": [{"filter": "prod",
                                                       "filterType": "PREFIX_MATCH"}]}]}
    put = await ecr.put_replication_configuration(replicationConfiguration=configuration)
    assert put["replicationConfiguration"] == configuration
    described = await ecr.describe_registry()
    assert described["registryId"] == "123456789012"
    assert described["replicationConfiguration"] == configuration
    with pytest.raises(ecr.exceptions.InvalidParameterException):  # itself as destination
        await ecr.put_replication_configuration(replicationConfiguration={"rules": [
            {"destinations": [{"region": "us-east-1", "registryId": "123456789012"}]}]})
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_replication_configuration(replicationConfiguration={"rules": [
            {"destinations": [{"region": "EU WEST", "registryId": "123456789012"}]}]})
    await ecr.put_replication_configuration(replicationConfiguration={"rules": []})


async def test_signing_configuration(ecr: Any) -> None:
    with pytest.raises(ecr.exceptions.SigningConfigurationNotFoundException):
        await ecr.get_signing_configuration()
    configuration = {"rules": [{"signingProfileArn": SIGNER, "repositoryFilters": [
        {"filter": "prod/*", "filterType": "WILDCARD_MATCH"}]}]}
    put = await ecr.put_signing_configuration(signingConfiguration=configuration)
    assert put["signingConfiguration"] == configuration
    assert (await ecr.get_signing_configuration())["signingConfiguration"] == configuration
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.put_signing_configuration(signingConfiguration={"rules": [
            {"signingProfileArn": "not-an-arn", "repositoryFilters": [
                {"filter": "x", "filterType": "WILDCARD_MATCH"}]}]})
    deleted = await ecr.delete_signing_configuration()
    assert deleted["signingConfiguration"] == configuration
    with pytest.raises(ecr.exceptions.SigningConfigurationNotFoundException):
        await ecr.delete_signing_configuration()


async def test_pull_time_update_exclusions(ecr: Any) -> None:
    arn = f"arn:aws:iam::123456789012:role/scanner-{uuid.uuid4().hex[:6]}"
    registered = await ecr.register_pull_time_update_exclusion(principalArn=arn)
    assert registered["principalArn"] == arn and registered["createdAt"]
    with pytest.raises(ecr.exceptions.ExclusionAlreadyExistsException):
        await ecr.register_pull_time_update_exclusion(principalArn=arn)
    assert arn in (await ecr.list_pull_time_update_exclusions())["pullTimeUpdateExclusions"]
    assert (await ecr.deregister_pull_time_update_exclusion(principalArn=arn))[
        "principalArn"] == arn
    with pytest.raises(ecr.exceptions.ExclusionNotFoundException):
        await ecr.deregister_pull_time_update_exclusion(principalArn=arn)
    with pytest.raises(ecr.exceptions.InvalidParameterException):
        await ecr.register_pull_time_update_exclusion(principalArn="arn:aws:s3:::bucket")


async def test_registry_documents_survive_a_restart(ecr: Any,
                                                    model_emulator: EmulatorProcess) -> None:
    prefix = f"tpl{uuid.uuid4().hex[:8]}"
    await ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    await ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V1")
    model_emulator.kill9()
    model_emulator.start()
    async with ecr_client(model_emulator.url) as fresh:
        listed = await fresh.describe_repository_creation_templates(prefixes=[prefix])
        setting = await fresh.get_account_setting(name="REGISTRY_POLICY_SCOPE")
        await fresh.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V2")
    assert [t["prefix"] for t in listed["repositoryCreationTemplates"]] == [prefix]
    assert setting["value"] == "V1"


async def test_create_on_push_template(ecr: Any) -> None:
    pushed, pulled = f"cop{uuid.uuid4().hex[:8]}", f"cop{uuid.uuid4().hex[:8]}"
    await ecr.create_repository_creation_template(
        prefix=pushed, appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE",
        resourceTags=[{"Key": "origin", "Value": "push"}])
    await ecr.create_repository_creation_template(prefix=pulled,
                                                  appliedFor=["PULL_THROUGH_CACHE"])
    upload = await ecr.initiate_layer_upload(repositoryName=f"{pushed}/app")
    assert upload["uploadId"]
    (repo,) = (await ecr.describe_repositories(repositoryNames=[f"{pushed}/app"]))[
        "repositories"]
    assert repo["imageTagMutability"] == "IMMUTABLE"
    tags = await ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])
    assert tags["tags"] == [{"Key": "origin", "Value": "push"}]
    # PutImage is a push too (here refused for its missing layers, after the creation).
    with pytest.raises(ecr.exceptions.LayersNotFoundException):
        await ecr.put_image(repositoryName=f"{pushed}/other", imageTag="v1", imageManifest=(
            json.dumps({"schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": "sha256:" + "a" * 64, "size": 2},
                        "layers": []})))
    await ecr.describe_repositories(repositoryNames=[f"{pushed}/other"])
    # A template for another creation path, or none at all: the push is refused.
    for name in (f"{pulled}/app", f"nothing{uuid.uuid4().hex[:6]}/app"):
        with pytest.raises(ecr.exceptions.RepositoryNotFoundException):
            await ecr.initiate_layer_upload(repositoryName=name)
