"""The manager's cache of loaded agents: LRU, private copies, keyed by the file's identity.

A file is cached from its second load on: the first load returns the loaded agent itself
and only remembers that it happened (keeping a copy would cost about as much as the load,
and resumes and one-off evaluations never load the file again); later loads answer a
private deep copy of the cached agent, so training a returned agent never changes the
cache. A hit trusts the check made when the file was loaded only while the file on disk is
still that file: its ``(st_ino, st_size, st_mtime_ns)`` is part of the key, so replacing
or rewriting it makes the next load read and verify it again.

Not thread-safe, like the manager that owns it.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ckptcompat.errors import InvalidArgumentError

if TYPE_CHECKING:
    from torch import nn

    from ckptcompat.checkpoint.index import CheckpointEntry
    from ckptcompat.checkpoint.loading import Device, VerifyMode

__all__ = ["AgentCache", "CacheKey", "cache_key"]

#: ``(file name, digest, device, verify mode, (st_ino, st_size, st_mtime_ns))``.
CacheKey = tuple[Any, ...]


def cache_key(
    path: Path, entry: CheckpointEntry, device: Device, verify: VerifyMode
) -> CacheKey | None:
    """The cache key of a load: the entry, device and verify mode, and the file's identity.

    The file's ``(st_ino, st_size, st_mtime_ns)`` is part of the key, so a file replaced
    or rewritten since it was cached is loaded (and verified) again instead of being
    answered from memory. None: the file cannot be stat'ed (the load reports why).
    """
    try:
        st = path.stat()
    except OSError:
        return None
    identity = (st.st_ino, st.st_size, st.st_mtime_ns)
    return (entry.file, entry.digest, str(torch.device(device)), verify, identity)


class AgentCache:
    """Up to ``size`` loaded agents, least recently used evicted first; 0 disables it.

    Raises:
        InvalidArgumentError: (a ValueError) a negative or non-int ``size``.
    """

    def __init__(self, size: int) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidArgumentError(
                f"cache_size must be an int >= 0, not {size!r}", fix="pass cache_size=0 or more"
            )
        self.size = size
        self._agents: OrderedDict[CacheKey, nn.Module] = OrderedDict()
        self._loaded_once: OrderedDict[CacheKey, None] = OrderedDict()

    def __len__(self) -> int:
        """How many agents are cached (files loaded only once are not counted)."""
        return len(self._agents)

    def agents(self) -> list[nn.Module]:
        """The cached agents themselves, least recently used first (tests look inside)."""
        return list(self._agents.values())

    def get(self, key: CacheKey | None) -> nn.Module | None:
        """A private deep copy of the agent cached under ``key``, or None on a miss."""
        if key is None or key not in self._agents:
            return None
        self._agents.move_to_end(key)
        return copy.deepcopy(self._agents[key])

    def admit(self, key: CacheKey | None, agent: nn.Module) -> nn.Module:
        """Offer a freshly loaded ``agent``; return what the caller should hand out.

        The first load of ``key`` is only remembered and ``agent`` itself returned (it
        owns the loaded tensors and nobody else holds them); the second caches ``agent``
        and returns a deep copy.
        """
        if not self.size or key is None:
            return agent
        if key not in self._loaded_once:
            self._loaded_once[key] = None
            while len(self._loaded_once) > self.size:
                self._loaded_once.popitem(last=False)
            return agent
        del self._loaded_once[key]
        self._agents[key] = agent
        while len(self._agents) > self.size:
            self._agents.popitem(last=False)
        return copy.deepcopy(agent)

    def forget(self, files: Iterable[str]) -> None:
        """Drop everything known about the checkpoint files named ``files``."""
        names = set(files)
        for memo in (self._agents, self._loaded_once):
            for key in [k for k in memo if k[0] in names]:
                del memo[key]

    def clear(self) -> None:
        """Drop every cached agent and every remembered first load."""
        self._agents.clear()
        self._loaded_once.clear()
