"""Settings, pagination tokens, injected faults, tag mutability."""

from __future__ import annotations

import pytest

from ecr_emulator import paging
from ecr_emulator.errors import AwsError
from ecr_emulator.faults import Faults
from ecr_emulator.image_store import tag_is_immutable
from ecr_emulator.settings import Settings
from ecr_emulator.store import Repository


def test_settings_from_env() -> None:
    settings = Settings.from_env({"ECR_EMULATOR_PART_SIZE": "123",
                                  "ECR_EMULATOR_DOWNLOAD_URL_EXPIRES": "1", "OTHER": "x"})
    assert settings.part_size == 123 and settings.download_url_expires == 1
    assert settings.min_part_size == 5 * 1024 * 1024
    with pytest.raises(ValueError):
        Settings.from_env({"ECR_EMULATOR_MAX_PARTS": "many"})


def test_tokens_round_trip_and_refuse_strangers() -> None:
    token = paging.encode("ListImages", [3, "v1"])
    assert paging.decode("ListImages", token, [0, ""]) == [3, "v1"]
    assert paging.decode("ListImages", None, [0, ""]) == [0, ""]
    # Strangers, and positions of another shape than the action's (a forged token was a
    # ServerException where the action used the position).
    forged = [paging.encode("ListImages", position)
              for position in ({"a": 1}, [1, 2, 3], "x", 1.5, True, -5, [-1, "v1"], ["a", "b"])]
    for bad in ("garbage", paging.encode("DescribeImages", 3), token[:-3], *forged):
        with pytest.raises(AwsError) as info:
            paging.decode("ListImages", bad, [0, ""])
        assert info.value.name == "InvalidParameterException"
    assert paging.decode("DescribeImages", paging.encode("DescribeImages", 7), 0) == 7
    with pytest.raises(AwsError):
        paging.decode("DescribeImages", paging.encode("DescribeImages", "7"), 0)


def test_faults_fire_the_given_number_of_times() -> None:
    faults = Faults()
    faults.add_from_json({"action": "PutImage", "error": "ThrottlingException", "count": 2})
    faults.add_from_json({"error": "ServerException"})
    assert faults.take("BatchGetImage").name == "ServerException"  # type: ignore[union-attr]
    first = faults.take("PutImage")
    assert first is not None and (first.name, first.status) == ("ThrottlingException", 400)
    assert faults.take("PutImage") is not None
    assert faults.take("PutImage") is None
    with pytest.raises(ValueError):
        faults.add_from_json({"action": "PutImage"})


@pytest.mark.parametrize(("mode", "tag", "immutable"), [
    ("MUTABLE", "v1", False),
    ("IMMUTABLE", "v1", True),
    ("IMMUTABLE_WITH_EXCLUSION", "latest", False),
    ("IMMUTABLE_WITH_EXCLUSION", "dev-3", False),
    ("IMMUTABLE_WITH_EXCLUSION", "v1", True),
    ("MUTABLE_WITH_EXCLUSION", "dev-3", True),
    ("MUTABLE_WITH_EXCLUSION", "v1", False),
])
def test_tag_mutability(mode: str, tag: str, immutable: bool) -> None:
    filters = [{"filterType": "WILDCARD", "filter": "latest"},
               {"filterType": "WILDCARD", "filter": "dev-*"}]
    repo = Repository(name="a/b", created_at=0, tag_mutability=mode,
                      mutability_filters=filters if "EXCLUSION" in mode else None)
    assert tag_is_immutable(repo, tag) is immutable
