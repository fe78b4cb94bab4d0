"""Input validation against botocore's ECR model, and ECR's name, tag and digest grammars."""

from __future__ import annotations

from typing import Any

import pytest

from ecr_emulator import validation
from ecr_emulator.errors import AwsError

DIGEST = "sha256:" + "a" * 64
UPLOAD_ID = "00000000-0000-0000-0000-000000000000"


def error_of(action: str, params: dict[str, Any]) -> AwsError:
    with pytest.raises(AwsError) as info:
        validation.validate_input(action, params)
    return info.value


@pytest.mark.parametrize(("action", "params"), [
    ("CreateRepository", {"repositoryName": "team/app-1"}),
    ("CreateRepository", {"repositoryName": "a__b/c--d/e.f", "imageTagMutability": "IMMUTABLE",
                          "tags": [{"Key": "k", "Value": ""}]}),
    ("UploadLayerPart", {"repositoryName": "ab", "uploadId": UPLOAD_ID, "partFirstByte": 0,
                         "partLastByte": 0, "layerPartBlob": b"x"}),
    ("ListImages", {"repositoryName": "ab", "maxResults": 1000, "filter": {"tagStatus": "ANY"}}),
    ("DescribeRepositories", {}),
    ("GetAuthorizationToken", {"registryIds": ["123456789012"]}),
])
def test_valid_input_passes(action: str, params: dict[str, Any]) -> None:
    validation.validate_input(action, params)


@pytest.mark.parametrize(("action", "params", "fragment"), [
    ("CreateRepository", {},
     "'repositoryName' failed to satisfy constraint: 'Member must not be null'"),
    ("CreateRepository", {"repositoryName": "Upper"}, "regular expression"),
    ("CreateRepository", {"repositoryName": "a" * 257}, "length less than or equal to 256"),
    ("CreateRepository", {"repositoryName": "ab", "imageTagMutability": "SOMETIMES"},
     "enum value set"),
    ("CreateRepository", {"repositoryName": "ab", "tags": [{"Key": "k"}]},
     "'tags.1.member.Value'"),
    ("ListImages", {"repositoryName": "ab", "maxResults": 0}, "greater than or equal to 1"),
    ("BatchGetImage", {"repositoryName": "ab", "imageIds": []}, "length greater than or equal"),
    ("UploadLayerPart", {"repositoryName": "ab", "uploadId": "x", "partFirstByte": 0,
                         "partLastByte": 0, "layerPartBlob": b"x"}, "'uploadId'"),
    ("UploadLayerPart", {"repositoryName": "ab", "uploadId": UPLOAD_ID, "partFirstByte": 0,
                         "partLastByte": 0, "layerPartBlob": b"x" * 20_971_521}, "20971520"),
    ("PutImage", {"repositoryName": "ab", "imageManifest": "x" * 4_194_305}, "4194304"),
])
def test_invalid_input_is_invalid_parameter(action: str, params: dict[str, Any],
                                            fragment: str) -> None:
    error = error_of(action, params)
    assert error.name == "InvalidParameterException" and error.status == 400
    assert fragment in error.message


@pytest.mark.parametrize(("action", "params", "fragment"), [
    ("CreateRepository", {"repositoryName": 5}, "'repositoryName' must be a string"),
    ("DeleteRepository", {"repositoryName": "ab", "force": "yes"}, "'force' must be a boolean"),
    ("ListImages", {"repositoryName": "ab", "maxResults": True}, "must be a number"),
    ("ListImages", {"repositoryName": "ab", "maxResults": "5"}, "must be a number"),
    ("BatchGetImage", {"repositoryName": "ab", "imageIds": {"imageTag": "v1"}}, "be a list"),
    ("ListImageReferrers", {"repositoryName": "ab", "subjectId": "x"}, "be an object"),
    # What a Java long holds (the model gives partFirstByte a minimum only).
    ("UploadLayerPart", {"repositoryName": "ab", "uploadId": UPLOAD_ID, "partFirstByte": 2**63,
                         "partLastByte": 0, "layerPartBlob": b"x"},
     "'partFirstByte' must be a 64-bit integer"),
])
def test_a_value_of_the_wrong_kind_is_a_serialization_error(action: str, params: dict[str, Any],
                                                            fragment: str) -> None:
    """A JSON service cannot read such a body into its input at all: SerializationException,
    whatever the action declares for broken constraints."""
    error = error_of(action, params)
    assert error.name == "SerializationException" and error.status == 400
    assert fragment in error.message


def test_a_list_of_strings_is_reported_whole() -> None:
    """Once, naming the list, with every constraint of its member nested whichever broke (as
    AWS lists them: "[Member must have length less than or equal to 140, Member must have
    length greater than or equal to 1, Member must satisfy regular expression pattern: ...]"
    for Lambda's layers)."""
    error = error_of("BatchCheckLayerAvailability", {
        "repositoryName": "ab", "layerDigests": ["sha256:" + "a" * 64, "x" * 1001, "y" * 1001]})
    assert error.message == (
        "Invalid parameter at 'layerDigests' failed to satisfy constraint: 'Member must "
        "satisfy constraint: [Member must have length less than or equal to 1000, Member must "
        "have length greater than or equal to 0]'")
    error = error_of("DescribeRepositories", {"repositoryNames": ["ok-name", "Upper"]})
    assert error.message == (
        "Invalid parameter at 'repositoryNames' failed to satisfy constraint: 'Member must "
        "satisfy constraint: [Member must have length less than or equal to 256, Member must "
        "have length greater than or equal to 2, Member must satisfy regular expression "
        "pattern: [a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*)*]'")
    # A value of the wrong kind keeps the item's own path: the body does not parse.
    error = error_of("GetAuthorizationToken", {"registryIds": ["123456789012", 5]})
    assert error.name == "SerializationException"
    assert error.message == "'registryIds.2.member' must be a string"


def test_patterns_read_word_classes_as_java_does() -> None:
    """The model's patterns are Java's: \\w is [a-zA-Z0-9_] there, not any letter."""
    validation.validate_input("RegisterPullTimeUpdateExclusion",
                              {"principalArn": "arn:aws:iam::123456789012:role/ci_Role-1"})
    error = error_of("RegisterPullTimeUpdateExclusion",
                     {"principalArn": "arn:aws:iam::123456789012:role/caf\u00e9"})
    assert "at 'principalArn' failed to satisfy constraint" in error.message


@pytest.mark.parametrize(("action", "params", "message"), [
    # As ECR answered them: both rule actions declare ValidationException too.
    ("CreatePullThroughCacheRule", {"ecrRepositoryPrefix": "Bad!", "upstreamRegistryUrl": "x"},
     "Invalid parameter at 'ecrRepositoryPrefix' failed to satisfy constraint: 'Member must "
     "satisfy regular expression pattern: ^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+"
     "((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$'"),
    ("DeletePullThroughCacheRule", {"ecrRepositoryPrefix": "Bad!"},
     "Invalid parameter at 'ecrRepositoryPrefix' failed to satisfy constraint: 'Member must "
     "satisfy regular expression pattern: ^([a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(\\/[a-z0-9]+"
     "((\\.|_|__|-+)[a-z0-9]+)*)*\\/?|ROOT)$'"),
    ("PutLifecyclePolicy", {"repositoryName": "ab", "lifecyclePolicyText": ""},
     "Invalid parameter at 'lifecyclePolicyText' failed to satisfy constraint: 'Member must "
     "have length greater than or equal to 100'"),
    ("ListImageReferrers", {"repositoryName": "ab", "subjectId": {"imageDigest": DIGEST},
                            "maxResults": 51},
     "Invalid parameter at 'maxResults' failed to satisfy constraint: 'Member must have value "
     "less than or equal to 50'"),
    ("ListImageReferrers", {"repositoryName": "ab"},
     "Invalid parameter at 'subjectId' failed to satisfy constraint: 'Member must not be "
     "null'"),
])
def test_a_broken_constraint_is_invalid_parameter_for_every_action(
        action: str, params: dict[str, Any], message: str) -> None:
    """ECR answers the model's constraints with InvalidParameterException, also in the
    actions whose model declares ValidationException: the rule actions and PutLifecyclePolicy
    answered so where users met them (the captures are in validation.constraint_error)."""
    error = error_of(action, params)
    assert (error.name, error.status, error.message) == ("InvalidParameterException", 400,
                                                        message)


def test_every_broken_constraint_is_found_in_the_models_order() -> None:
    """Each member's constraints, members in the model's order (registryId, repositoryName,
    imageIds, acceptedMediaTypes); the InvalidParameterException names the first."""
    params = {"registryId": "1", "repositoryName": "", "imageIds": [
        {"imageTag": "t" * 301}, {"imageDigest": "d" * 2000}], "acceptedMediaTypes": []}
    found: list[validation.Violation] = []
    validation._check(validation._operation("BatchGetImage").input_shape, params, "", found)
    assert [(v.path, v.constraint) for v in found] == [
        ("registryId", "Member must satisfy regular expression pattern: [0-9]{12}"),
        ("repositoryName", "Member must have length greater than or equal to 2"),
        ("repositoryName", "Member must satisfy regular expression pattern: "
                           + validation._operation("BatchGetImage").input_shape
                           .members["repositoryName"].metadata["pattern"]),
        ("imageIds.1.member.imageTag", "Member must have length less than or equal to 300"),
        ("acceptedMediaTypes", "Member must have length greater than or equal to 1"),
    ]
    assert error_of("BatchGetImage", params).message == (
        "Invalid parameter at 'registryId' failed to satisfy constraint: 'Member must satisfy "
        "regular expression pattern: [0-9]{12}'")


def test_a_validation_exception_lists_every_broken_constraint() -> None:
    """AWS's generic form: every constraint, values quoted as AWS prints them (numbers
    too: "Value '100' at 'maxResults'"), null unquoted, a list as '[a, b]', no value for a
    structure."""
    found: list[validation.Violation] = []
    validation._check(validation._operation("ListImageReferrers").input_shape,
                      {"repositoryName": "ab", "maxResults": 51,
                       "filter": {"artifactTypes": ["", "x"]}}, "", found)
    error = validation.validation_exception(found)
    assert (error.name, error.status) == ("ValidationException", 400)
    assert error.message == (
        "3 validation errors detected: "
        "Value null at 'subjectId' failed to satisfy constraint: Member must not be null; "
        "Value '[, x]' at 'filter.artifactTypes' failed to satisfy constraint: Member must "
        "satisfy constraint: [Member must have length less than or equal to 255, Member must "
        "have length greater than or equal to 1]; "
        "Value '51' at 'maxResults' failed to satisfy constraint: Member must have value less "
        "than or equal to 50")


def test_create_repository_words_a_bad_name_as_ecr_does() -> None:
    """ECR's own check of CreateRepository's name ('must ...', no "Member", the pattern's
    "/" unescaped), as users quote it; once the model's other constraints hold."""
    def message(name: str) -> str:
        return error_of("CreateRepository", {"repositoryName": name}).message
    assert message("Bad_Name!") == (
        "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'must satisfy "
        "regular expression '[a-z0-9]+((\\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\\.|_|__|-+)"
        "[a-z0-9]+)*)*''")
    assert message("a") == ("Invalid parameter at 'repositoryName' failed to satisfy "
                            "constraint: 'must have length greater than or equal to 2'")
    assert "'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum" in (
        error_of("CreateRepository", {"repositoryName": "Bad!", "imageTagMutability": "X"})
        .message)
    assert error_of("CreateRepository", {}).message == (
        "Invalid parameter at 'repositoryName' failed to satisfy constraint: 'Member must not "
        "be null'")


def test_blob_members_come_from_the_model() -> None:
    assert validation.blob_members("UploadLayerPart") == ("layerPartBlob",)
    assert validation.blob_members("PutImage") == ()
    assert validation.blob_members("NoSuchAction") == ()


@pytest.mark.parametrize(("value", "ok"), [
    (DIGEST, True), ("sha256:" + "A" * 64, True), ("sha256:abc", False),
    ("sha512:" + "a" * 128, True),
    ("md5:zz", False), ("nodigest", False), ("", False), ("sha256:" + "a" * 65, False),
])
def test_image_digests(value: str, ok: bool) -> None:
    assert validation.is_image_digest(value) is ok


@pytest.mark.parametrize(("value", "ok"), [
    ("latest", True), ("v1.2.3-rc_1", True), ("_hidden", True), ("a" * 300, True),
    ("a" * 301, False), (".dot", True), ("-dash", True), ("-", True), ("has space", False),
    ("", False), ("a:b", False), ("a/b", False), ("a+b", False),
])
def test_tags(value: str, ok: bool) -> None:
    assert validation.is_tag(value) is ok


def test_sha256_digests_are_lowercase_hex() -> None:
    assert validation.is_sha256_digest(DIGEST)
    assert not validation.is_sha256_digest(DIGEST.upper())
    assert not validation.is_sha256_digest("sha512:" + "a" * 64)


def test_members_the_model_does_not_declare_are_dropped_at_every_level() -> None:
    """As AWS reads a body into the input shape: what no shape declares is never stored or
    answered back (a member nested past the JSON encoder's depth was a ServerException)."""
    deep: Any = []
    for _ in range(300):
        deep = [deep]
    params = {"replicationConfiguration": {"rules": [{"destinations": [
        {"region": "eu-west-1", "registryId": "123456789012", "x": deep}], "y": 1}],
        "z": 2**64 - 1}, "extra": deep}
    assert validation.validate_input("PutReplicationConfiguration", params) == {
        "replicationConfiguration": {"rules": [{"destinations": [
            {"region": "eu-west-1", "registryId": "123456789012"}]}]}}
