"""Deprecated ``PolicyCache``: the old store's thread-safe LRU of PolicyRecords.

Contract (../shared/reference/metta_policy_api.md section 1, commit 8ceb8571c2): an
``OrderedDict`` under an ``RLock``; ``get`` marks a key most recently used and answers None
for a miss; ``put`` inserts or replaces and evicts the least recently used key beyond
``max_size``. ckptcompat's own stores do not use it (the manager keeps its own agent
cache); it is kept so that code holding one keeps working.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from ckptcompat.policy._deprecation import warn_deprecated

__all__ = ["PolicyCache"]


class PolicyCache:
    """Deprecated: a thread-safe LRU cache of PolicyRecords (or anything) by key.

    Args:
        max_size: how many entries to keep (>= 1).

    Raises:
        ValueError: ``max_size`` < 1 ("Cache size must be positive", as before).
    """

    def __init__(self, max_size: int = 10) -> None:
        warn_deprecated("PolicyCache", "SimpleCheckpointManager(cache_size=...)")
        if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size <= 0:
            raise ValueError(f"Cache size must be positive; got max_size={max_size!r}")
        self.max_size = max_size
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.RLock()

    def get(self, key: str) -> Any:
        """The entry for ``key`` (now the most recently used), or None."""
        with self._lock:
            if key not in self._cache:
                return None
            self._cache.move_to_end(key)
            return self._cache[key]

    def put(self, key: str, record: Any) -> None:
        """Insert or replace ``key``; evict the least recently used beyond ``max_size``."""
        with self._lock:
            self._cache[key] = record
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_size:
                self._cache.popitem(last=False)

    def remove(self, key: str) -> bool:
        """Drop ``key``; True if it was cached."""
        with self._lock:
            return self._cache.pop(key, None) is not None

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._cache)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._cache
