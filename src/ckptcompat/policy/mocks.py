"""Deprecated ``MockPolicyRecord`` and ``MockPolicy``: the old mocks for tests and play.

``MockPolicyRecord.from_key_and_version(policy_key, policy_version)`` keys the stats DB as
``(policy_key, policy_version)`` -- exactly the pair given. (A real migration's stub
changed the mock's URI to ``mock://<key>`` and, because the key was taken from the URI,
every DB query for ``policy_key='test_policy'`` matched nothing and returned NaN.) Here
the URI is ``mock://<key>:v<version>`` and the key comes from
:func:`ckptcompat.checkpoint.uri.key_and_version`, which maps it back to the same pair.

``MockPolicy`` is the old mocks' small policy (``fc`` = Linear(10, 10), ``components`` =
``_core_`` LSTM(10, 10), ``_value_`` Linear(10, 1), ``_action_`` Linear(10, 5);
``forward(x) = fc(x)``), made a saveable agent (``config`` ``{}``), so old
``PolicyStore.save`` / ``load_from_uri`` tests that use it run on the safe format.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ckptcompat.policy._deprecation import warn_deprecated
from ckptcompat.policy.policy_metadata import PolicyMetadata
from ckptcompat.policy.policy_record import PolicyRecord, _quiet_metadata

__all__ = ["MockPolicy", "MockPolicyRecord"]

_REPLACEMENT = "ckptcompat.agents.MockAgent with an explicit (policy_key, policy_version)"


class MockPolicyRecord(PolicyRecord):
    """Deprecated: a record whose policy is a :class:`~ckptcompat.agents.MockAgent`.

    Args:
        policy_store: optional store (unused for loading: the mock builds its own agent).
        run_name: defaults to ``"mock_run"``.
        uri: defaults to ``"mock://policy"``; None is allowed (policy-less play).
        metadata: PolicyMetadata or dict; a fresh one per record (the old singleton
            default was shared and mutable).
    """

    def __init__(
        self,
        policy_store: Any = None,
        run_name: str | None = "mock_run",
        uri: str | None = "mock://policy",
        metadata: PolicyMetadata | Mapping[str, Any] | None = None,
    ) -> None:
        warn_deprecated("MockPolicyRecord", _REPLACEMENT)
        self._init(policy_store, run_name, uri, metadata)

    @classmethod
    def from_key_and_version(
        cls,
        policy_key: str,
        policy_version: int,
        policy_store: Any = None,
        run_name: str = "test_run",
    ) -> MockPolicyRecord:
        """A mock keyed exactly ``(policy_key, policy_version)`` in the stats DB.

        Raises:
            ValueError: ``policy_version`` is None or negative (epoch 0 is valid).
        """
        if policy_version is None or int(policy_version) < 0:
            raise ValueError(f"policy_version must be an int >= 0; got {policy_version!r}")
        warn_deprecated("MockPolicyRecord.from_key_and_version", _REPLACEMENT)
        metadata = _quiet_metadata({"epoch": int(policy_version)})
        return cls._quiet(
            policy_store, run_name, f"mock://{policy_key}:v{int(policy_version)}", metadata
        )

    @property
    def policy(self) -> nn.Module:
        """A cached :class:`~ckptcompat.agents.MockAgent` (built on first access)."""
        if self._cached_policy is None:
            from ckptcompat.agents.mock import MockAgent

            self._cached_policy = MockAgent()
        return self._cached_policy

    @policy.setter
    def policy(self, value: nn.Module) -> None:
        self._cached_policy = value


class MockPolicy(nn.Module):
    """Deprecated: the old mocks' ``MockPolicy``; ``forward(x)`` maps (N, 10) to (N, 10).

    Not an RL agent (no actions, no values): only for old tests of saving and loading.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(10, 10)
        self.components = nn.ModuleDict(
            {"_core_": nn.LSTM(10, 10), "_value_": nn.Linear(10, 1), "_action_": nn.Linear(10, 5)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``fc(x)``: x (N, 10) -> (N, 10)."""
        return self.fc(x)

    def initial_state(self, batch_size: int) -> tuple[()]:
        """``()``: no recurrent state is carried between calls."""
        return ()

    @property
    def config(self) -> dict[str, Any]:
        """``{}``: the architecture is fixed."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MockPolicy:
        """``cls(**config)`` (the config is empty)."""
        return cls(**config)
