"""One contract, several registries: each scenario of scenarios.py runs against every target
and its facts are compared with what the AWS API reference says (``REFERENCE``).

A target's known departures are data (``DIFFERENCES``): the fact, the value the target
gives instead, and the reference sentence (verbatim from botocore's model documentation,
checked below) that decides what ECR does. A listed difference must still be observed, so a
target that comes into line makes the table shrink. At the end the terminal summary prints,
per target, the facts that matched and the ones that differ. Real ECR runs only when
``ECR_CONTRACT_AWS_PROFILE`` is set, and must match the reference with no difference.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.contract.scenarios import CROSS_ACCOUNT, SCENARIOS, cross_account
from tests.contract.targets import TARGETS, Target, started
from tests.emulator.api.differential import model_documentation

# What ECR answers, per the API reference.
REFERENCE: dict[str, dict[str, Any]] = {
    "layer in parts": {"lastByteReceived after part 1": 5 * 1024 * 1024 - 1,
                       "completed digest is the content's": True,
                       "availability": "AVAILABLE", "layerSize": 5 * 1024 * 1024 + 1000},
    "resume after InvalidLayerPartException": {
        "repeated part": "InvalidLayerPartException",
        "lastValidByteReceived": 5 * 1024 * 1024 - 1, "completes": "none"},
    "PutImage by tag and digest": {
        "digest is the manifest's sha256": True, "manifest byte-exact": [True],
        "tags": ["v1", "v2"], "wrong digest": "ImageDigestDoesNotMatchException",
        "same manifest and tag again": "ImageAlreadyExistsException"},
    "referrers": {"referrers": ["application/vnd.example.signature.v1+json"]},
    "delete": {"deleted": [[True, "gone"]], "left": [],
               "second delete failure": ["ImageNotFound"]},
    "lifecycle preview": {"preview": "COMPLETE", "expiring": 2},
    "error cases": {"unknown repository": "RepositoryNotFoundException",
                    "wrong layer digest": "InvalidLayerException",
                    "manifest naming missing layers": "LayersNotFoundException",
                    "absent image": ["ImageNotFound"],
                    "unknown upload": "UploadNotFoundException"},
    "tag mutability and scanning": {"mutability": "IMMUTABLE",
                                    "moving an immutable tag": "ImageTagAlreadyExistsException",
                                    "scanOnPush": True,
                                    "findings before a scan": "ImageNotFoundException"},
    "registry policy": {"stored as given": True, "read back": True,
                        "after delete": "RegistryPolicyNotFoundException"},
    "pages": {"ListImages pages": [2, 1], "ListImages tags across pages": ["p1", "p2", "p3"],
              "DescribeImages pages": [2, 1],
              "ListImages maxResults 1001": "InvalidParameterException",
              "DescribeImages imageIds with maxResults": "InvalidParameterException",
              "DescribeRepositories repositoryNames with maxResults":
                  "InvalidParameterException"},
    "tags and digests": {"tag with another image's digest": ["ImageTagDoesNotMatchDigest"],
                         "DeleteRepository with images": "RepositoryNotEmptyException",
                         "delete by tag": ["a"], "tags left": [["b"]],
                         "delete by digest": [[True, "b"]],
                         "tag of a deleted image": "ImageNotFoundException"},
    "lifecycle and repository policies": {
        "lifecycle before put": "LifecyclePolicyNotFoundException",
        "lifecycle tagged without a tag filter": "InvalidParameterException",
        "policy before set": "RepositoryPolicyNotFoundException",
        "lifecycle read back": True, "lifecycle after delete": "LifecyclePolicyNotFoundException",
        "policy read back": True, "policy after delete": "RepositoryPolicyNotFoundException"},
    "pull through cache rule": {
        "created": [True, "public.ecr.aws"], "described": [[True, "public.ecr.aws"]],
        "same prefix again": "PullThroughCacheRuleAlreadyExistsException",
        "after delete": "PullThroughCacheRuleNotFoundException"},
    "archive and push again": {"archived pull": ["ImageNotFound"],
                               "archived image": ["ARCHIVED", True],
                               "same tag pushed again": "none",
                               "untagged pushed again": "none", "pulled after the push": 2,
                               "status after the push": ["ACTIVE", "ACTIVE"],
                               "restored after archived": [True, True]},
    "last pull time": {"before a pull": None, "after a pull": True},
    "registry scan on push": {"scanFrequency": "SCAN_ON_PUSH", "findings after a push": "none"},
    "custom role of another account": {"creation template": "InvalidParameterException",
                                       "pull through cache rule": "InvalidParameterException"},
    "repeated references and list limits": {
        "BatchGetImage images of a repeated tag": 2,
        "BatchGetImage failures of a repeated absent tag": ["ImageNotFound", "ImageNotFound"],
        "BatchDeleteImage repeated tag": [1, ["ImageNotFound"]],
        "BatchDeleteImage 101 imageIds": "InvalidParameterException",
        "GetAuthorizationToken registryId of 11 digits": "InvalidParameterException",
        "GetAuthorizationToken 11 registryIds": "InvalidParameterException"},
    # ECR's answers on record (ecr_emulator/validation.py, constraint_error) for actions that
    # declare ValidationException too.
    "broken constraints": {
        "CreatePullThroughCacheRule prefix off its pattern": ["InvalidParameterException", True],
        "GetLifecyclePolicy repository name off its pattern": "InvalidParameterException",
        "ListImageReferrers maxResults 51": "InvalidParameterException",
        "DescribeImages maxResults 1001": "InvalidParameterException"},
    # The user guide's conversions when an image is pulled by tag, none by digest.
    "accepted media types": {
        "by tag": [["application/vnd.docker.distribution.manifest.v2+json", True]],
        "by digest": ["ImageNotFound"], "as pushed when accepted": [True]},
    CROSS_ACCOUNT: {"without a policy": "AccessDeniedException", "pull granted": True,
                    "push with a pull grant": "AccessDeniedException",
                    "explicit deny over ecr:*": "AccessDeniedException",
                    "ecr:* grants listing": "none", "push granted": "none",
                    "after the policy is deleted": "AccessDeniedException"},
}


@dataclass(frozen=True)
class Difference:
    observed: Any
    what: str   # what the target does
    where: str  # the model documentation that decides ("Shape.member", a shape or operation)
    quote: str  # the deciding sentence, verbatim


DIGEST = ("ImageIdentifier.imageDigest", "The sha256 digest of the image manifest.")
DIFFERENCES: dict[tuple[str, str, str], Difference] = {
    ("moto", "PutImage by tag and digest", "digest is the manifest's sha256"): Difference(
        False, "the digest is not the manifest's sha256", *DIGEST),
    ("moto", "PutImage by tag and digest", "wrong digest"): Difference(
        "none", "a wrong imageDigest is accepted", "ImageDigestDoesNotMatchException",
        "The specified image digest does not match the digest that Amazon ECR calculated "
        "for the image."),
    ("moto", "delete", "deleted"): Difference(
        [[False, "gone"]], "the deleted id carries moto's own digest", *DIGEST),
    ("moto", "referrers", "referrers"): Difference(
        "500", "ListImageReferrers is not implemented", "ListImageReferrers",
        "Lists the artifacts associated with a specified subject image."),
    ("moto", "lifecycle preview", "preview"): Difference(
        "500", "StartLifecyclePolicyPreview is not implemented", "StartLifecyclePolicyPreview",
        "Starts a preview of a lifecycle policy for the specified repository."),
    ("moto", "lifecycle preview", "expiring"): Difference(
        None, "no preview at all", "StartLifecyclePolicyPreview",
        "This allows you to see the results before associating the lifecycle policy with the "
        "repository."),
    ("moto", "tag mutability and scanning", "moving an immutable tag"): Difference(
        "ImageAlreadyExistsException", "an immutable tag moved to a new image is refused as "
        "an image pushed twice", "ImageTagAlreadyExistsException",
        "The specified image is tagged with a tag that already exists. The repository is "
        "configured for tag immutability."),
    ("moto", "error cases", "wrong layer digest"): Difference(
        "none", "the layer digest is not checked", "InvalidLayerException",
        "The layer digest calculation performed by Amazon ECR upon receipt of the image layer "
        "does not match the digest specified."),
    ("moto", "error cases", "manifest naming missing layers"): Difference(
        "none", "a manifest's layers need not exist", "LayersNotFoundException",
        "The specified layers could not be found, or the specified layer is not valid for "
        "this repository."),
}
# moto keeps each account's repositories apart and looks a registryId up only among the
# caller's own: another account's repository is never found, whatever its policy says.
POLICY = ("SetRepositoryPolicy", "Applies a repository policy to the specified repository to "
          "control access permissions.")
NOT_FOUND = "RepositoryNotFoundException"
ACROSS = "another account's repository is not found (no policy is evaluated)"
DIFFERENCES.update({
    ("moto", CROSS_ACCOUNT, "without a policy"): Difference(NOT_FOUND, ACROSS, *POLICY),
    ("moto", CROSS_ACCOUNT, "pull granted"): Difference(
        NOT_FOUND, ACROSS, "BatchGetImageRequest.registryId", "The Amazon Web Services "
        "account ID associated with the registry that contains the images to describe."),
    ("moto", CROSS_ACCOUNT, "push with a pull grant"): Difference(NOT_FOUND, ACROSS, *POLICY),
    ("moto", CROSS_ACCOUNT, "explicit deny over ecr:*"): Difference(NOT_FOUND, ACROSS, *POLICY),
    ("moto", CROSS_ACCOUNT, "ecr:* grants listing"): Difference(
        NOT_FOUND, ACROSS, "ListImagesRequest.registryId", "The Amazon Web Services account ID "
        "associated with the registry that contains the repository in which to list images."),
    ("moto", CROSS_ACCOUNT, "push granted"): Difference(
        NOT_FOUND, ACROSS, "InitiateLayerUploadRequest.registryId", "The Amazon Web Services "
        "account ID associated with the registry to which you intend to upload layers."),
    ("moto", CROSS_ACCOUNT, "after the policy is deleted"): Difference(
        NOT_FOUND, ACROSS, "DeleteRepositoryPolicy",
        "Deletes the repository policy associated with the specified repository."),
})

LIST_PAGE = ("ListImagesRequest.maxResults", "When this parameter is used, ListImages only "
             "returns maxResults results in a single page along with a nextToken response "
             "element.")
DESCRIBE_PAGE = ("DescribeImagesRequest.maxResults", "When this parameter is used, "
                 "DescribeImages only returns maxResults results in a single page along with a "
                 "nextToken response element.")
DIFFERENCES.update({
    ("moto", "pages", "ListImages pages"): Difference(
        [3], "maxResults is ignored: one page of every image", *LIST_PAGE),
    ("moto", "pages", "DescribeImages pages"): Difference(
        [3], "maxResults is ignored: one page of every image", *DESCRIBE_PAGE),
    ("moto", "pages", "ListImages maxResults 1001"): Difference(
        "none", "maxResults past the model's range is accepted", "ListImagesRequest.maxResults",
        "This value can be between 1 and 1000."),
    ("moto", "pages", "DescribeImages imageIds with maxResults"): Difference(
        "none", "maxResults is accepted beside imageIds", "DescribeImagesRequest.maxResults",
        "This option cannot be used when you specify images with imageIds."),
    ("moto", "pages", "DescribeRepositories repositoryNames with maxResults"): Difference(
        "none", "maxResults is accepted beside repositoryNames",
        "DescribeRepositoriesRequest.maxResults",
        "This option cannot be used when you specify repositories with repositoryNames."),
    ("moto", "tags and digests", "tag with another image's digest"): Difference(
        [], "an image id whose tag names another image than its digest is served",
        "BatchGetImage", "Images are specified with either an imageTag or imageDigest."),
    ("moto", "lifecycle and repository policies", "lifecycle tagged without a tag filter"):
        Difference("none", "a lifecycle policy is stored without checking its rules",
                   "PutLifecyclePolicy", "For more information, see Lifecycle policy template."),
    ("moto", "pull through cache rule", "created"): Difference(
        "500", "CreatePullThroughCacheRule is not implemented", "CreatePullThroughCacheRule",
        "Creates a pull through cache rule."),
})
NO_RULE = ("CreatePullThroughCacheRule", "A pull through cache rule provides a way to cache "
           "images from an upstream registry source in your Amazon ECR private registry.")
for fact in ("described", "same prefix again", "after delete"):
    DIFFERENCES[("moto", "pull through cache rule", fact)] = Difference(
        None, "no rule was created", *NO_RULE)

STORAGE_CLASS = ("UpdateImageStorageClass", "Transitions an image between storage classes.")
DIFFERENCES[("moto", "archive and push again", "archived pull")] = Difference(
    "500", "UpdateImageStorageClass is not implemented", *STORAGE_CLASS)
for fact in ("archived image", "same tag pushed again", "untagged pushed again",
             "pulled after the push", "status after the push", "restored after archived"):
    DIFFERENCES[("moto", "archive and push again", fact)] = Difference(
        None, "nothing was archived", *STORAGE_CLASS)

DIFFERENCES[("moto", "last pull time", "after a pull")] = Difference(
    None, "pulls are not recorded", "ImageDetail.lastRecordedPullTime",
    "The date and time, expressed in standard JavaScript date format, when Amazon ECR "
    "recorded the last image pull.")

DIFFERENCES[("moto", "registry scan on push", "findings after a push")] = Difference(
    "ScanNotFoundException", "a registry rule's SCAN_ON_PUSH does not scan a push",
    "PutRegistryScanningConfigurationRequest.rules", "A scanning rule is used to determine "
    "which repository filters are used and at what frequency scanning will occur.")

DIFFERENCES[("moto", "custom role of another account", "creation template")] = Difference(
    "500", "CreateRepositoryCreationTemplate is not implemented",
    "CreateRepositoryCreationTemplateRequest.customRoleArn",
    "This role must be in the same account as the registry that you are configuring.")
DIFFERENCES[("moto", "custom role of another account", "pull through cache rule")] = Difference(
    "500", "CreatePullThroughCacheRule is not implemented",
    "CreatePullThroughCacheRuleRequest.customRoleArn",
    "This role must be in the same account as the registry that you are configuring.")

# The limits themselves are the model's (ImageIdentifierList max 100,
# GetAuthorizationTokenRegistryIdList max 10, RegistryId pattern [0-9]{12}); its
# documentation gives the error they are broken with.
UNCHECKED = ("InvalidParameterException", "The specified parameter is invalid. Review the "
             "available parameters for the API request.")
REPEATED = "repeated references and list limits"
DIFFERENCES[("moto", REPEATED, "BatchDeleteImage 101 imageIds")] = Difference(
    "none", "a list past the model's 100 image ids is accepted", *UNCHECKED)
DIFFERENCES[("moto", REPEATED, "GetAuthorizationToken registryId of 11 digits")] = Difference(
    "none", "a registry id is not held to [0-9]{12}", *UNCHECKED)
DIFFERENCES[("moto", REPEATED, "GetAuthorizationToken 11 registryIds")] = Difference(
    "none", "a list past the model's 10 registry ids is accepted", *UNCHECKED)

BROKEN = "broken constraints"
DIFFERENCES[("moto", BROKEN, "CreatePullThroughCacheRule prefix off its pattern")] = Difference(
    ["500", False], "CreatePullThroughCacheRule is not implemented", "CreatePullThroughCacheRule",
    "Creates a pull through cache rule.")
DIFFERENCES[("moto", BROKEN, "GetLifecyclePolicy repository name off its pattern")] = (
    Difference("RepositoryNotFoundException", "a repository name off the model's pattern is "
               "looked up", *UNCHECKED))
DIFFERENCES[("moto", BROKEN, "ListImageReferrers maxResults 51")] = Difference(
    "500", "ListImageReferrers is not implemented", "ListImageReferrers",
    "Lists the artifacts associated with a specified subject image.")
DIFFERENCES[("moto", BROKEN, "DescribeImages maxResults 1001")] = Difference(
    "none", "maxResults past the model's range is accepted", "DescribeImagesRequest.maxResults",
    "This value can be between 1 and 1000.")
ACCEPTED = ("BatchGetImageRequest.acceptedMediaTypes", "The accepted media types for the request.")
DIFFERENCES[("moto", "accepted media types", "by tag")] = Difference(
    [["application/vnd.oci.image.manifest.v1+json", False]],
    "acceptedMediaTypes is ignored: the image is answered as pushed", *ACCEPTED)
DIFFERENCES[("moto", "accepted media types", "by digest")] = Difference(
    [], "acceptedMediaTypes is ignored: the image is answered as pushed", *ACCEPTED)

REPORT: dict[str, dict[str, list[str]]] = {}


@pytest.fixture(scope="module", params=TARGETS)
def target(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    name = request.param
    with started(name, tmp_path_factory.mktemp(f"contract-{name}")) as running:
        yield running


@pytest.fixture
async def client(target: Target) -> AsyncIterator[Any]:
    async with target.client() as ecr:
        yield ecr


def test_every_quote_is_in_the_reference() -> None:
    for key, difference in DIFFERENCES.items():
        assert difference.quote in model_documentation(difference.where), key
        assert key[1] in REFERENCE and key[2] in REFERENCE[key[1]], key
        assert key[0] != "aws", "real ECR is the reference: it has no differences"


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_scenario(target: Target, client: Any, scenario: str) -> None:
    repo = f"contract/{uuid.uuid4().hex[:10]}"
    await client.create_repository(repositoryName=repo)
    try:
        facts = await SCENARIOS[scenario](client, repo)
    finally:
        await client.delete_repository(repositoryName=repo, force=True)
    _compare(target.name, scenario, facts)


async def test_cross_account(target: Target, client: Any) -> None:
    repo = f"contract/{uuid.uuid4().hex[:10]}"
    await client.create_repository(repositoryName=repo)
    try:
        async with target.other() as (other, other_account):
            facts = await cross_account(client, repo, other, other_account)
    finally:
        await client.delete_repository(repositoryName=repo, force=True)
    _compare(target.name, CROSS_ACCOUNT, facts)


def _compare(target: str, scenario: str, facts: dict[str, Any]) -> None:
    """Record each fact as matched or as a known difference; fail on any other value."""
    report = REPORT.setdefault(target, {"matched": [], "differs": []})
    wrong = {}
    for fact, expected in REFERENCE[scenario].items():
        observed = facts.get(fact)
        known = DIFFERENCES.get((target, scenario, fact))
        if known is None and observed == expected:
            report["matched"].append(f"{scenario}: {fact}")
        elif known is not None and observed == known.observed:
            report["differs"].append(f"{scenario}: {fact}: {known.what} "
                                     f"(AWS, {known.where}: \"{known.quote}\")")
        else:
            wrong[fact] = {"observed": observed,
                           "expected": known.observed if known else expected}
    assert not wrong, f"{target} / {scenario}: {wrong}"
