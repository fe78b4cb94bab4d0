"""ByteLRU, the manifest cache's store: bounded by the sizes its values were given, least
recently used entries dropped first."""

from __future__ import annotations

from gateway.ecr.caches import ByteLRU


def test_entries_are_dropped_least_recently_used_first_to_stay_under_the_bound() -> None:
    cache: ByteLRU[str, str] = ByteLRU(10)
    cache.put("a", "A", 4)
    cache.put("b", "B", 4)
    assert cache.get("a") == "A"  # "b" is now the least recently used
    cache.put("c", "C", 4)
    assert cache.get("b") is None
    assert (cache.get("a"), cache.get("c")) == ("A", "C")
    assert (len(cache), cache.bytes, cache.max_bytes) == (2, 8, 10)
    assert sorted(cache.keys()) == ["a", "c"]


def test_a_value_larger_than_the_bound_is_not_kept() -> None:
    cache: ByteLRU[str, str] = ByteLRU(10)
    cache.put("a", "A", 4)
    cache.put("big", "B", 11)
    assert cache.get("big") is None
    assert (cache.get("a"), cache.bytes) == ("A", 4)
    nothing: ByteLRU[str, str] = ByteLRU(0)  # manifest_max_bytes 0: caching off
    nothing.put("a", "A", 1)
    assert len(nothing) == 0


def test_put_replaces_and_pop_forgets_with_their_sizes() -> None:
    cache: ByteLRU[str, str] = ByteLRU(10)
    cache.put("a", "A", 4)
    cache.put("a", "A2", 6)
    assert (cache.get("a"), cache.bytes, len(cache)) == ("A2", 6, 1)
    cache.put("a", "A3", 11)  # too large now: the old value goes too
    assert (cache.get("a"), cache.bytes) == (None, 0)
    cache.put("b", "B", 3)
    cache.pop("b")
    cache.pop("missing")
    assert (len(cache), cache.bytes, cache.keys()) == (0, 0, [])
