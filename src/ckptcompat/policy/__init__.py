"""Deprecated policy API (PolicyStore, PolicyRecord, PolicyMetadata, PolicyCache, mocks).

Importable at these module paths for good, so old callers keep working; every public
constructor and function warns once (DeprecationWarning) naming its replacement.
Importing alone does not warn. New code uses :mod:`ckptcompat.checkpoint`.
"""

from __future__ import annotations

from ckptcompat.policy.mocks import MockPolicy, MockPolicyRecord
from ckptcompat.policy.policy_cache import PolicyCache
from ckptcompat.policy.policy_metadata import PolicyMetadata
from ckptcompat.policy.policy_record import PolicyRecord
from ckptcompat.policy.policy_store import PolicyMissingError, PolicyStore

__all__ = [
    "MockPolicy",
    "MockPolicyRecord",
    "PolicyCache",
    "PolicyMetadata",
    "PolicyMissingError",
    "PolicyRecord",
    "PolicyStore",
]
