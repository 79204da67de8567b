"""Deprecated PolicyCache: the old store's thread-safe LRU, as old code used it."""

from __future__ import annotations

import threading

import pytest

from ckptcompat.policy import PolicyCache


def _cache(size: int) -> PolicyCache:
    with pytest.deprecated_call():
        return PolicyCache(max_size=size)


def test_lru_order_replacement_and_misses() -> None:
    """Guards the missing PolicyCache (issue 15: the old API of the period had it): get
    refreshes recency, put replaces and evicts the least recently used, a miss is None."""
    cache = _cache(3)
    for key in ("a", "b", "c"):
        cache.put(key, key.upper())
    assert cache.get("a") == "A"  # a is now the most recent
    cache.put("d", "D")
    assert cache.get("b") is None and len(cache) == 3
    cache.put("c", "C2")
    assert cache.get("c") == "C2" and "a" in cache and cache.remove("a") and "a" not in cache
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("size", [0, -1, True, 2.5])
def test_invalid_size_is_value_error(size: object) -> None:
    """Guards the old message callers matched: 'Cache size must be positive'."""
    with pytest.raises(ValueError, match="Cache size must be positive"), pytest.deprecated_call():
        PolicyCache(max_size=size)  # type: ignore[arg-type]


def test_concurrent_puts_and_gets_stay_bounded() -> None:
    """Guards the RLock: concurrent writers and readers never exceed max_size or raise."""
    cache = _cache(16)
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for i in range(200):
                cache.put(f"{worker}-{i}", i)
                cache.get(f"{worker}-{i // 2}")
        except BaseException as exc:  # collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(cache) == 16
