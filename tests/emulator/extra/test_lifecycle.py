"""Lifecycle policies: the rules' evaluation (ECR's evaluation rules, case by case), previews
that list exactly what a run expires, and runs on demand and on the emulator's schedule."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from ecr_model.lifecycle_policy import DAY, Candidate, PolicyError, evaluate, parse
from tests.emulator.api.helpers import (
    OCI_INDEX,
    image_manifest,
    index_manifest,
    push_image,
    push_layer,
)
from tests.emulator.extra.helpers import keep_last, lifecycle, run_lifecycle
from tests.support.emulator import EmulatorProcess, ecr_client

NOW = 1_700_000_000.0


def expired(rules: list[dict[str, Any]], images: list[tuple[str, tuple[str, ...], float]],
            referenced: frozenset[str] = frozenset()) -> dict[str, int]:
    """name -> priority of the rule that expires it, for images (name, tags, age in days)."""
    candidates = [Candidate(name, tags, NOW - age * DAY, i, name in referenced)
                  for i, (name, tags, age) in enumerate(images)]
    return {str(e.key): e.rule_priority
            for e in evaluate(parse(lifecycle(*rules)), candidates, NOW)}


def since(days: int, *, tag_status: str = "any", priority: int = 1,
          **selection: Any) -> dict[str, Any]:
    return {"rulePriority": priority,
            "selection": {"tagStatus": tag_status, "countType": "sinceImagePushed",
                          "countUnit": "days", "countNumber": days, **selection},
            "action": {"type": "expire"}}


def test_a_higher_rule_protects_what_it_matched() -> None:
    """"An image that matches the tagging requirements of a rule cannot be expired by a rule
    with a lower priority": B matched the prod rule (and was kept), so the beta rule, which
    would expire everything but C, may not take it; A is expired by the prod rule."""
    images = [("A", ("beta-1", "prod-1"), 10), ("B", ("beta-2", "prod-2"), 9),
              ("C", ("beta-3",), 8)]
    rules = [keep_last(1, tag_status="tagged", tagPrefixList=["prod"]),
             keep_last(1, tag_status="tagged", tagPrefixList=["beta"], priority=2)]
    assert expired(rules, images) == {"A": 1}


def test_lower_rules_still_count_what_higher_rules_matched() -> None:
    """The any rule keeps only the newest image (T3) and would expire all the others; U2
    matched the untagged rule (too young for it to expire), so it survives; U1 is the
    untagged rule's; T1 and T2 the any rule's."""
    images = [("U1", (), 3), ("T1", ("v1",), 2), ("T2", ("v2",), 1.5), ("U2", (), 0.5),
              ("T3", ("v3",), 0)]
    rules = [since(1, tag_status="untagged"), keep_last(1, priority=2)]
    assert expired(rules, images) == {"U1": 1, "T1": 2, "T2": 2}


def test_prefixes_and_patterns_must_all_match() -> None:
    """Several prefixes (or patterns) select only images having a tag for each of them."""
    images = [("both", ("alpha-1", "beta-1"), 5), ("alpha", ("alpha-2",), 4),
              ("newest", ("alpha-3", "beta-3"), 1)]
    by_prefix = [keep_last(1, tag_status="tagged", tagPrefixList=["alpha", "beta"])]
    assert expired(by_prefix, images) == {"both": 1}
    by_pattern = [keep_last(1, tag_status="tagged", tagPatternList=["alpha-*", "*ta-*"])]
    assert expired(by_pattern, images) == {"both": 1}
    assert expired([keep_last(1, tag_status="tagged", tagPatternList=["*-2"])], images) == {}


def test_since_image_pushed_and_untagged() -> None:
    images = [("old", (), 40), ("tagged-old", ("v1",), 40), ("young", (), 5)]
    assert expired([since(30, tag_status="untagged")], images) == {"old": 1}
    assert expired([since(30)], images) == {"old": 1, "tagged-old": 1}


def test_images_an_index_references_are_kept() -> None:
    images = [("child", (), 9), ("index", ("multi",), 8), ("new", ("v2",), 1)]
    assert expired([keep_last(1)], images, frozenset({"child"})) == {"index": 1}


ARCHIVE = {"type": "transition", "targetStorageClass": "archive"}


def acted(rules: list[dict[str, Any]], images: list[Candidate]) -> dict[str, tuple[int, str]]:
    return {str(e.key): (e.rule_priority, e.action)
            for e in evaluate(parse(lifecycle(*rules)), images, NOW)}


def test_transition_archives_and_archived_images_have_rules_of_their_own() -> None:
    """A transition rule archives what it selects; rules select one storage class (standard
    unless they say archive), so archived images are neither counted nor expired by the
    standard rules, and sinceImageTransitioned measures from the archiving."""
    images = [Candidate("A", ("v1",), NOW - 9 * DAY, 0),
              Candidate("B", ("v2",), NOW - 8 * DAY, 1),
              Candidate("C", ("v3",), NOW - 7 * DAY, 2),
              Candidate("old", ("v0",), NOW - 400 * DAY, 3, storage_class="archive",
                        archived_at=NOW - 120 * DAY),
              Candidate("recent", ("v00",), NOW - 300 * DAY, 4, storage_class="archive",
                        archived_at=NOW - 30 * DAY)]
    transition = {**keep_last(1, tag_status="tagged", tagPrefixList=["v"]), "action": ARCHIVE}
    assert acted([transition], images) == {"A": (1, "transition"), "B": (1, "transition")}
    purge = since(90, tag_status="any", priority=2, countType="sinceImageTransitioned",
                  storageClass="archive")
    assert acted([transition, purge], images) == {
        "A": (1, "transition"), "B": (1, "transition"), "old": (2, "expire")}
    # A standard rule never reaches archived images, however old.
    assert acted([since(1)], images) == {k: (1, "expire") for k in ("A", "B", "C")}
    # sinceImagePulled: the last pull, else the push.
    pulled = [Candidate("P", ("v1",), NOW - 50 * DAY, 0, pulled_at=NOW - 2 * DAY),
              Candidate("N", ("v2",), NOW - 50 * DAY, 1)]
    assert acted([{**since(10, countType="sinceImagePulled"), "action": ARCHIVE}], pulled) == {
        "N": (1, "transition")}


@pytest.mark.parametrize(("rules", "fragment"), [
    ([], "non-empty"),
    ([keep_last(1), keep_last(2)], "rulePriority must be unique"),
    ([keep_last(1), keep_last(1, tag_status="tagged", tagPrefixList=["v"], priority=2)],
     "highest rulePriority"),
    ([keep_last(1, tag_status="untagged"), since(3, tag_status="untagged", priority=2)],
     "only one rule can select untagged"),
    ([keep_last(1, tag_status="tagged")], "tagPrefixList or tagPatternList is required"),
    ([keep_last(1, tag_status="untagged", tagPrefixList=["v"])], "only be used when"),
    ([keep_last(1, tag_status="tagged", tagPrefixList=["v"], tagPatternList=["v*"])],
     "cannot be used together"),
    ([keep_last(1, tag_status="tagged", tagPatternList=["*a*b*c*d*e"])], "more than 4"),
    ([keep_last(1, tag_status="tagged", tagPatternList=["v[0-9]"])], "and * only"),
    ([keep_last(0)], "minimum: 1"),
    ([keep_last(1, countUnit="days")], "countUnit can only be used"),
    ([{**since(3), "selection": {"tagStatus": "any", "countType": "sinceImagePushed",
                                 "countNumber": 3}}], "countUnit must be days"),
    ([{**keep_last(1), "action": {"type": "delete"}}], "not found in enum"),
    ([{**keep_last(1), "action": {"type": "transition"}}], "targetStorageClass must be archive"),
    ([{**keep_last(1), "action": {"type": "expire", "targetStorageClass": "archive"}}],
     "only be used when the action type is transition"),
    ([keep_last(1, storageClass="archive")], "goes with countType sinceImageTransitioned"),
    ([since(100, countType="sinceImageTransitioned")],
     "goes with countType sinceImageTransitioned"),
    ([since(89, countType="sinceImageTransitioned", storageClass="archive")], "at least 90 days"),
    ([{**since(100, countType="sinceImageTransitioned", storageClass="archive"),
       "action": ARCHIVE}], "selects images of the standard storage class"),
    ([keep_last(1, storageClass="glacier")], "not found in enum"),
    ([{**keep_last(1), "colour": "red"}], "not allowed by the schema"),
    ([{"rulePriority": 1, "action": {"type": "expire"}}], "missing required properties"),
    # JSON integers of ECR's schema, a 32-bit bound: past it they used to be taken.
    ([keep_last(1, priority=2**63)], "rulePriority: numeric instance is greater than the "
                                     "required maximum (maximum: 2147483647"),
    ([keep_last(1, priority=2**31)], "maximum: 2147483647, found: 2147483648"),
    ([keep_last(2**63)], "countNumber: numeric instance is greater than the required maximum"),
    ([keep_last(2**64 - 1)], "countNumber: numeric instance is greater"),
    ([keep_last(1, priority=True)], 'rulePriority: instance type (boolean) does not match any '
                                    'allowed primitive type (allowed: ["integer"])'),
    ([{**keep_last(1), "rulePriority": 1.0}], "rulePriority: instance type (number)"),
    ([{**keep_last(1), "rulePriority": "1"}], "rulePriority: instance type (string)"),
    ([keep_last(1, countNumber=True)], "countNumber: instance type (boolean)"),
    ([keep_last(1, countNumber=2.0)], "countNumber: instance type (number)"),
])
def test_policies_ecr_refuses(rules: list[dict[str, Any]], fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse(lifecycle(*rules))
    assert fragment in str(info.value)
    assert str(info.value).startswith("Lifecycle policy validation failure: ")


def test_a_property_beside_rules_is_refused() -> None:
    with pytest.raises(PolicyError) as info:
        parse(json.dumps({"rules": [keep_last(1)], "colour": "red"}))
    assert 'not allowed by the schema: (["colour"])' in str(info.value)


async def _push_tagged(ecr: Any, repo: str, tags: list[str | None]) -> dict[str | None, str]:
    digests: dict[str | None, str] = {}
    for index, tag in enumerate(tags):
        digest, _ = await push_image(ecr, repo, tag)
        digests[tag or f"untagged-{index}"] = digest
        await asyncio.sleep(0.01)  # distinct push times, as in real life
    return digests


async def test_preview_lists_exactly_what_a_run_expires(ecr: Any, repo: str,
                                                        extra_emulator: EmulatorProcess) -> None:
    await ecr.create_repository(repositoryName=repo)
    pushed = await _push_tagged(ecr, repo, [None, "v1", "v2", None, "v3", "v4", "v5"])
    text = lifecycle(keep_last(1, tag_status="untagged"),
                     keep_last(2, tag_status="tagged", tagPrefixList=["v"], priority=2))
    started = await ecr.start_lifecycle_policy_preview(repositoryName=repo,
                                                       lifecyclePolicyText=text)
    assert started["status"] == "IN_PROGRESS" and started["lifecyclePolicyText"] == text
    preview = await ecr.get_lifecycle_policy_preview(repositoryName=repo)
    assert preview["status"] == "COMPLETE"
    expected = {pushed["untagged-0"]: 1, pushed["v1"]: 2, pushed["v2"]: 2, pushed["v3"]: 2}
    assert {r["imageDigest"]: r["appliedRulePriority"] for r in preview["previewResults"]} == \
        expected
    assert all(r["action"] == {"type": "EXPIRE"} for r in preview["previewResults"])
    assert preview["summary"] == {"expiringImageTotalCount": 4}
    assert [r.get("imageTags") for r in preview["previewResults"]] == [None, ["v1"], ["v2"],
                                                                       ["v3"]]
    first = await ecr.get_lifecycle_policy_preview(repositoryName=repo, maxResults=3)
    rest = await ecr.get_lifecycle_policy_preview(repositoryName=repo,
                                                  nextToken=first["nextToken"])
    assert [r["imageDigest"] for r in first["previewResults"] + rest["previewResults"]] == \
        list(expected)
    tagged = await ecr.get_lifecycle_policy_preview(repositoryName=repo,
                                                    filter={"tagStatus": "TAGGED"})
    assert len(tagged["previewResults"]) == 3
    one = await ecr.get_lifecycle_policy_preview(repositoryName=repo,
                                                 imageIds=[{"imageTag": "v2"}])
    assert [r["imageDigest"] for r in one["previewResults"]] == [pushed["v2"]]

    # A preview changes nothing; applying the same policy expires exactly the same images.
    assert len((await ecr.list_images(repositoryName=repo))["imageIds"]) == 7
    await ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    assert "lastEvaluatedAt" not in await ecr.get_lifecycle_policy(repositoryName=repo)
    ran = await run_lifecycle(extra_emulator.url, repo)
    assert {e["imageDigest"]: e["appliedRulePriority"] for e in ran[repo]} == expected
    left = (await ecr.list_images(repositoryName=repo))["imageIds"]
    assert sorted(i["imageDigest"] for i in left) == sorted(
        pushed[k] for k in ("untagged-3", "v4", "v5"))
    evaluated = (await ecr.get_lifecycle_policy(repositoryName=repo))["lastEvaluatedAt"]
    assert abs(evaluated.timestamp() - time.time()) < 60
    assert (await run_lifecycle(extra_emulator.url, repo))[repo] == []  # nothing more
    deleted = await ecr.delete_lifecycle_policy(repositoryName=repo)
    assert deleted["lifecyclePolicyText"] == text
    assert repo not in await run_lifecycle(extra_emulator.url)


async def test_transition_rule_archives_on_preview_and_run(
        ecr: Any, repo: str, extra_emulator: EmulatorProcess) -> None:
    """A transition rule: the preview lists TRANSITION to ARCHIVE (and counts it apart from
    expiries), the run archives those images (described as ARCHIVED, refused on pull as
    UpdateImageStorageClass archives them) and leaves them alone on the next run."""
    await ecr.create_repository(repositoryName=repo)
    pushed = await _push_tagged(ecr, repo, ["v1", "v2", "v3", None])
    text = lifecycle({**keep_last(1, tag_status="tagged", tagPrefixList=["v"]),
                      "action": ARCHIVE},
                     keep_last(1, tag_status="untagged", priority=2))
    await ecr.start_lifecycle_policy_preview(repositoryName=repo, lifecyclePolicyText=text)
    preview = await ecr.get_lifecycle_policy_preview(repositoryName=repo)
    results = {r["imageDigest"]: r for r in preview["previewResults"]}
    assert set(results) == {pushed["v1"], pushed["v2"]}
    assert all(r["action"] == {"type": "TRANSITION", "targetStorageClass": "ARCHIVE"}
               and r["storageClass"] == "STANDARD" for r in results.values())
    assert preview["summary"] == {"expiringImageTotalCount": 0, "transitioningImageTotalCounts":
                                  [{"targetStorageClass": "ARCHIVE", "imageTotalCount": 2}]}

    await ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=text)
    ran = await run_lifecycle(extra_emulator.url, repo)
    assert {e["imageDigest"]: e["action"] for e in ran[repo]} == {
        pushed["v1"]: "TRANSITION", pushed["v2"]: "TRANSITION"}
    archived = await ecr.describe_images(repositoryName=repo,
                                         filter={"imageStatus": "ARCHIVED"})
    assert {d["imageDigest"] for d in archived["imageDetails"]} == {pushed["v1"], pushed["v2"]}
    assert all(d["imageStatus"] == "ARCHIVED" for d in archived["imageDetails"])
    active = await ecr.list_images(repositoryName=repo)
    assert {i["imageDigest"] for i in active["imageIds"]} == {pushed["v3"],
                                                              pushed["untagged-3"]}
    pulled = await ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert pulled["images"] == [] and pulled["failures"][0]["failureCode"] == "ImageNotFound"
    assert (await run_lifecycle(extra_emulator.url, repo))[repo] == []  # archived: not again
    # Archived a moment ago: not yet 90 days in the archive.
    await ecr.start_lifecycle_policy_preview(repositoryName=repo, lifecyclePolicyText=lifecycle(
        since(90, countType="sinceImageTransitioned", storageClass="archive")))
    assert (await ecr.get_lifecycle_policy_preview(repositoryName=repo))["previewResults"] == []


async def test_children_go_after_their_index(ecr: Any, repo: str,
                                             extra_emulator: EmulatorProcess) -> None:
    """An index's children are kept while it exists: the run that expires the index keeps
    them, the next one expires them."""
    await ecr.create_repository(repositoryName=repo)
    children = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux"}).encode()
        layer = arch.encode() * 10
        for blob in (config, layer):
            await push_layer(ecr, repo, blob)
        text = image_manifest(config, [layer])
        await ecr.put_image(repositoryName=repo, imageManifest=text)
        children.append(text)
    await ecr.put_image(repositoryName=repo, imageManifest=index_manifest(children),
                        imageTag="multi", imageManifestMediaType=OCI_INDEX)
    await _push_tagged(ecr, repo, ["newest"])
    await ecr.put_lifecycle_policy(repositoryName=repo, lifecyclePolicyText=lifecycle(
        keep_last(1)))
    first = await run_lifecycle(extra_emulator.url, repo)
    assert [e["imageTags"] for e in first[repo]] == [["multi"]]
    second = await run_lifecycle(extra_emulator.url, repo)
    assert [e["imageTags"] for e in second[repo]] == [[], []]
    left = (await ecr.list_images(repositoryName=repo))["imageIds"]
    assert [i.get("imageTag") for i in left] == ["newest"]


async def test_policies_are_applied_on_a_schedule(tmp_path: Path) -> None:
    """With ECR_EMULATOR_LIFECYCLE_INTERVAL=1 nobody needs to ask: within seconds of being
    set, a policy has expired what it selects."""
    with EmulatorProcess(tmp_path / "ecr", env={"ECR_EMULATOR_LIFECYCLE_INTERVAL": "1"}) as emu:
        async with ecr_client(emu.url) as ecr:
            await ecr.create_repository(repositoryName="scheduled")
            await _push_tagged(ecr, "scheduled", ["a", "b", "c"])
            await ecr.put_lifecycle_policy(repositoryName="scheduled",
                                           lifecyclePolicyText=lifecycle(keep_last(1)))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                left = (await ecr.list_images(repositoryName="scheduled"))["imageIds"]
                if len(left) == 1:
                    break
                await asyncio.sleep(0.2)
            assert [i["imageTag"] for i in left] == ["c"]
            assert "lastEvaluatedAt" in await ecr.get_lifecycle_policy(repositoryName="scheduled")
        assert [e["repository"] for e in emu.requests("LifecycleExpire")] == ["scheduled"] * 2
