"""distribution-spec 1.1, workflow 3 "Content Discovery": tags list (end-8a/8b with n, last and
Link) and the referrers API (end-12a/12b)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.integration.spec.conftest import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    OciClient,
    Pushed,
    assert_error,
    config_blob,
    empty_config,
    encode,
    image_manifest,
    random_blob,
    sha256,
)

TAGS = ["v1", "latest", "B-side", "a10", "a2", "1.0", "test0", "test3", "test1", "test2"]


async def _tag_all(oci: OciClient, repo: str, tags: list[str]) -> Pushed:
    image = await oci.push_image(repo, tags[0])
    for tag in tags[1:]:
        answer = await oci.put_manifest(repo, tag, image.body)
        assert answer.status == 201, answer
    return image


def _in_order(tags: list[str]) -> bool:
    """"the tags MUST be sorted in lexical (case-insensitive alphanumeric) or ASCIIbetical
    order (as defined by Go's sort.Strings)"."""
    return tags in (sorted(tags), sorted(tags, key=str.lower))


async def _list(oci: OciClient, repo: str, **params: str) -> tuple[list[str], str | None]:
    answer = await oci.get(f"/v2/{repo}/tags/list", params=params or None)
    assert answer.status == 200, answer
    body = answer.json()
    assert body["name"] == repo
    assert isinstance(body["tags"], list), body
    return body["tags"], answer.headers.get("Link")


# -- tags ---------------------------------------------------------------------------------------


async def test_tags_list(oci: OciClient, repo: str) -> None:
    """end-8a: "If the repository exists, the registry MUST return 200 OK"; the body is
    {"name": "<name>", "tags": [...]} with every tag, in lexical order."""
    await _tag_all(oci, repo, TAGS)
    answer = await oci.get(f"/v2/{repo}/tags/list")
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"].startswith("application/json")
    tags, link = await _list(oci, repo)
    assert sorted(tags) == sorted(TAGS)
    assert _in_order(tags), tags
    assert link is None


async def test_tags_list_n(oci: OciClient, repo: str) -> None:
    """end-8b with n: "It returns up to <int> tags"; it "may return fewer than <int> tags" only
    when the repository has fewer or a Link header says more exist; "If more tags are available,
    the registry may include a Link header (RFC5988) with rel="next"". Conformance: "GET number
    of tags should be limitable by `n` query parameter"."""
    await _tag_all(oci, repo, TAGS)
    everything, _ = await _list(oci, repo)
    page, link = await _list(oci, repo, n="4")
    assert page == everything[:4]
    if link is not None:
        assert 'rel="next"' in link
    page, link = await _list(oci, repo, n=str(len(TAGS) + 5))
    assert page == everything
    assert link is None


async def test_tags_list_n_zero(oci: OciClient, repo: str) -> None:
    """end-8b: "If n=0, the registry must return an empty list and must not include a Link
    header"."""
    await _tag_all(oci, repo, TAGS[:3])
    page, link = await _list(oci, repo, n="0")
    assert page == []
    assert link is None


async def test_tags_list_last(oci: OciClient, repo: str) -> None:
    """end-8b with last: "The registry returns up to <int> tags that appear after <tagname>";
    "<tagname> itself is not included in the results"; "When using last, the n parameter is
    optional". Conformance: "GET start of tag is set by `last` query parameter"."""
    await _tag_all(oci, repo, TAGS)
    everything, _ = await _list(oci, repo)
    half = len(everything) // 2
    first, _ = await _list(oci, repo, n=str(half))
    second, _ = await _list(oci, repo, n=str(half), last=first[-1])
    assert second == everything[half:2 * half]
    assert first[-1] not in second
    rest, link = await _list(oci, repo, last=everything[2])
    assert rest == everything[3:]
    assert link is None
    after_all, _ = await _list(oci, repo, last=everything[-1])
    assert after_all == []
    between = everything[4] + "0"  # no such tag: the list resumes after where it would be
    resumed, _ = await _list(oci, repo, last=between)
    assert resumed == [t for t in everything if t > between]


async def test_tags_list_follow_link(oci: OciClient, repo: str) -> None:
    """Paging by the Link header ("When available, clients should prefer the Link header over
    the last parameter for pagination"): following rel="next" from n=3 visits every tag once, in
    order, and the last page has no Link."""
    await _tag_all(oci, repo, TAGS)
    everything, _ = await _list(oci, repo)
    seen: list[str] = []
    answer = await oci.get(f"/v2/{repo}/tags/list", params={"n": "3"})
    for _ in range(len(TAGS) + 1):
        assert answer.status == 200, answer
        page = answer.json()["tags"]
        assert 0 < len(page) <= 3
        seen += page
        link = answer.headers.get("Link")
        if link is None:
            break
        assert link.startswith("<") and link.endswith('>; rel="next"'), link
        answer = await oci.get(link[1:link.index(">")])
    assert seen == everything


async def test_tags_list_of_untagged_repository(oci: OciClient, repo: str) -> None:
    """end-8a: "The list of tags MAY be empty" — a repository holding only an untagged (pushed by
    digest) manifest answers 200 with an empty list."""
    await oci.push_image(repo, None)
    tags, link = await _list(oci, repo)
    assert tags == []
    assert link is None


async def test_tags_list_of_unknown_repository(oci: OciClient) -> None:
    """end-8a failure: 404 for a repository that does not exist (code-9 NAME_UNKNOWN)."""
    name = "test/never-pushed-" + random_blob(4).data.hex()
    assert_error(await oci.get(f"/v2/{name}/tags/list"), 404, "NAME_UNKNOWN")


async def test_tags_list_bad_n(oci: OciClient, repo: str) -> None:
    """end-8b: <int> is an integer; anything else is a 400 with an error body."""
    await _tag_all(oci, repo, TAGS[:2])
    for bad in ("abc", "-1", "1.5"):
        assert_error(await oci.get(f"/v2/{repo}/tags/list", params={"n": bad}), 400)


async def test_tags_list_reflects_retag(oci: OciClient, repo: str) -> None:
    """Tags appear in the list as soon as they are pushed, whichever manifest they name."""
    await oci.push_image(repo, "one")
    await oci.push_image(repo, "two")
    tags, _ = await _list(oci, repo)
    assert tags == ["one", "two"]


# -- referrers ----------------------------------------------------------------------------------

TYPE_A = "application/vnd.nhl.peanut.butter.bagel"
TYPE_B = "application/vnd.nba.strawberry.jam.croissant"
TYPE_INDEX = "application/vnd.food.stand"
NOTE = "org.opencontainers.conformance.test"


@dataclass
class Referrers:
    subject: Pushed
    referrers: dict[str, tuple[Pushed, str | None, str]]  # digest: (pushed, artifactType, note)
    orphan: Pushed  # refers to a subject that was never pushed
    orphan_subject: str


async def _referrers_setup(oci: OciClient, repo: str) -> Referrers:
    """The conformance suite's referrers fixture: five referrers of one image (config-typed and
    artifactType-typed manifests, two pushed before the subject exists, and an index), each
    pushed by digest with one annotation, plus one referrer of a manifest that never exists."""
    empty = empty_config()
    blob_a = Blob(b"NHL Peanut Butter on my NHL bagel", TYPE_A)
    blob_b = Blob(b"NBA Strawberry Jam on my NBA croissant", TYPE_B)
    config, layer = config_blob(), random_blob()
    subject_doc = image_manifest(config, [layer])
    subject_body = encode(subject_doc)
    subject_ref = {"mediaType": OCI_MANIFEST, "digest": sha256(subject_body),
                   "size": len(subject_body)}
    await oci.upload_all(repo, empty, blob_a)
    found: dict[str, tuple[Pushed, str | None, str]] = {}

    async def refer(doc: dict[str, Any], artifact_type: str | None, note: str,
                    subject: dict[str, Any] = subject_ref) -> Pushed:
        doc["annotations"] = {NOTE: note}
        pushed = await oci.push(repo, None, doc)
        assert pushed.answer.headers.get("OCI-Subject") == subject["digest"], pushed.answer
        return pushed

    # Before the subject exists: "A registry MUST accept a manifest that includes a subject
    # field referencing another manifest that does not exist in the repository".
    a_config = await refer(image_manifest(blob_a, [empty], subject=subject_ref),
                           TYPE_A, "test config a")
    a_layer = await refer(image_manifest(empty, [blob_a], artifact_type=TYPE_A,
                                         subject=subject_ref), TYPE_A, "test layer a")
    index_doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "artifactType": TYPE_INDEX,
                 "manifests": [a_config.descriptor(), a_layer.descriptor()],
                 "subject": subject_ref}
    an_index = await refer(index_doc, TYPE_INDEX, "test index")
    await oci.upload_all(repo, config, layer)
    subject = await oci.push(repo, "tagtest0", subject_doc)
    await oci.upload(repo, blob_b)
    b_config = await refer(image_manifest(blob_b, [empty], subject=subject_ref),
                           TYPE_B, "test config b")
    b_layer = await refer(image_manifest(empty, [blob_b], artifact_type=TYPE_B,
                                         subject=subject_ref), TYPE_B, "test layer b")
    for pushed, artifact_type, note in ((a_config, TYPE_A, "test config a"),
                                        (a_layer, TYPE_A, "test layer a"),
                                        (an_index, TYPE_INDEX, "test index"),
                                        (b_config, TYPE_B, "test config b"),
                                        (b_layer, TYPE_B, "test layer b")):
        found[pushed.digest] = (pushed, artifact_type, note)
    never = random_blob().digest
    orphan_ref = {"mediaType": OCI_MANIFEST, "digest": never, "size": 321}
    orphan = await refer(image_manifest(empty, [blob_b], artifact_type=TYPE_B,
                                        subject=orphan_ref), TYPE_B, "orphan", orphan_ref)
    return Referrers(subject, found, orphan, never)


def _index(answer: Any) -> list[dict[str, Any]]:
    """"A successful response MUST return an OCI image index as JSON, with Content-Type:
    application/vnd.oci.image.index.v1+json"."""
    assert answer.status == 200, answer
    assert answer.headers["Content-Type"] == OCI_INDEX, answer
    body = answer.json()
    assert body["schemaVersion"] == 2
    assert body["mediaType"] == OCI_INDEX
    assert isinstance(body["manifests"], list)
    return list(body["manifests"])


async def test_referrers_list(oci: OciClient, repo: str) -> None:
    """end-12a: "If the repository exists, the registry MUST return 200 OK"; the manifests list
    has a descriptor for every manifest or index whose subject is <digest>; each "MUST include
    artifactType if the referenced manifest or index defines one", else (a manifest) the config
    descriptor's mediaType; each "MUST include all annotations from the referenced manifest or
    index"."""
    setup = await _referrers_setup(oci, repo)
    entries = _index(await oci.get(f"/v2/{repo}/referrers/{setup.subject.digest}"))
    assert len(entries) == 5, entries
    assert {e["digest"] for e in entries} == set(setup.referrers)
    for entry in entries:
        pushed, artifact_type, note = setup.referrers[entry["digest"]]
        assert entry["mediaType"] == pushed.media_type
        assert entry["size"] == len(pushed.body)
        assert entry.get("artifactType") == artifact_type, entry
        assert entry.get("annotations") == {NOTE: note}, entry


async def test_referrers_filtered_by_artifact_type(oci: OciClient, repo: str) -> None:
    """end-12b: "Registries SHOULD support filtering referrers by artifactType"; "If the registry
    applies the filter: The response MUST include OCI-Filters-Applied: artifactType" and only the
    matching descriptors."""
    setup = await _referrers_setup(oci, repo)
    answer = await oci.get(f"/v2/{repo}/referrers/{setup.subject.digest}",
                           params={"artifactType": TYPE_A})
    entries = _index(answer)
    assert answer.headers.get("OCI-Filters-Applied") == "artifactType"
    assert len(entries) == 2, entries
    assert {e["artifactType"] for e in entries} == {TYPE_A}
    for entry in entries:
        assert entry["annotations"] == {NOTE: setup.referrers[entry["digest"]][2]}
    answer = await oci.get(f"/v2/{repo}/referrers/{setup.subject.digest}",
                           params={"artifactType": TYPE_INDEX})
    entries = _index(answer)
    assert [e["mediaType"] for e in entries] == [OCI_INDEX]
    answer = await oci.get(f"/v2/{repo}/referrers/{setup.subject.digest}",
                           params={"artifactType": "application/vnd.nothing"})
    assert _index(answer) == []
    assert answer.headers.get("OCI-Filters-Applied") == "artifactType"


async def test_referrers_without_filter_has_no_filter_header(oci: OciClient, repo: str) -> None:
    """OCI-Filters-Applied names the filters applied: none asked, none named."""
    image = await oci.push_image(repo, "v1")
    answer = await oci.get(f"/v2/{repo}/referrers/{image.digest}")
    assert _index(answer) == []
    assert "OCI-Filters-Applied" not in answer.headers


async def test_referrers_of_unknown_manifest(oci: OciClient, repo: str) -> None:
    """"If no referrers exist, the registry MUST return an image index with an empty manifests
    list" (conformance: "GET request to nonexistent blob should result in empty 200
    response")."""
    await oci.push_image(repo, "v1")
    entries = _index(await oci.get(f"/v2/{repo}/referrers/{sha256(b'hello world')}"))
    assert entries == []


async def test_referrers_of_missing_subject(oci: OciClient, repo: str) -> None:
    """Conformance "GET request to missing manifest should yield 200": the referrers of a
    subject that was never pushed list the referrer that names it."""
    setup = await _referrers_setup(oci, repo)
    entries = _index(await oci.get(f"/v2/{repo}/referrers/{setup.orphan_subject}"))
    assert [e["digest"] for e in entries] == [setup.orphan.digest]
    assert entries[0]["artifactType"] == TYPE_B


async def test_referrers_invalid_digest(oci: OciClient, repo: str) -> None:
    """end-12a: "If the request is invalid (for example, <digest> has invalid syntax), the
    registry MUST return 400 Bad Request"."""
    await oci.push_image(repo, "v1")
    assert_error(await oci.get(f"/v2/{repo}/referrers/sha256:nothex"), 400, "DIGEST_INVALID")


async def test_referrers_never_404(oci: OciClient) -> None:
    """end-12a: "A registry that supports the referrers API MUST NOT return 404 Not Found for
    referrers requests" (a 404 makes clients fall back to the tag schema) — not even for a
    repository that holds nothing yet."""
    name = "test/never-pushed-" + random_blob(4).data.hex()
    answer = await oci.get(f"/v2/{name}/referrers/{sha256(b'hello world')}")
    assert _index(answer) == []


async def test_referrer_with_empty_config_and_no_artifact_type(oci: OciClient,
                                                               repo: str) -> None:
    """"If the referenced manifest has no artifactType, the descriptor's artifactType MUST be set
    to the config descriptor's mediaType" — also when that is the empty descriptor's type."""
    image = await oci.push_image(repo, "v1")
    empty = await oci.upload(repo, empty_config())
    payload = await oci.upload(repo, random_blob(10, "application/vnd.example.note"))
    doc = image_manifest(empty, [payload], subject=image.descriptor())
    pushed = await oci.push(repo, None, doc)
    entries = _index(await oci.get(f"/v2/{repo}/referrers/{image.digest}"))
    assert [(e["digest"], e.get("artifactType")) for e in entries] == [(pushed.digest, OCI_EMPTY)]
    assert "annotations" not in entries[0] or entries[0]["annotations"] == {}
