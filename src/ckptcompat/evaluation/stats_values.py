"""The values the stats DB accepts: policy keys, and checks run before any SQL.

- A policy is named by ``(policy_key, policy_version)`` (docs/design.md section 6): the run name and
  the epoch, with epoch 0 a version like any other and ``None`` never a version.
- A metric value is a finite number; NaN and infinities are refused at write time.
- Every check here runs before SQL, so a refused write leaves the DB untouched and a refused
  query never renders a bad value into SQL.

No torch, numpy or pandas here: the evaluator and the analysis use the DB without them.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from ckptcompat.errors import StatsDBError

__all__ = [
    "INT32_MAX",
    "INT64_RANGE",
    "EpisodeRows",
    "HasKeyAndVersion",
    "PolicyKey",
    "PolicyLike",
    "check_int",
    "check_metric_value",
    "check_policy_key",
    "check_policy_version",
    "check_text",
    "episode_rows",
    "utc_naive",
]

INT64_RANGE = (-(2**63), 2**63 - 1)
INT32_MAX = 2**31 - 1


# --------------------------------------------------------------------------- policy keys


@runtime_checkable
class HasKeyAndVersion(Protocol):
    """Anything that names its policy itself: PolicyRecord, MockPolicyRecord."""

    def key_and_version(self) -> tuple[str, int]: ...


def check_policy_key(policy_key: object) -> str:
    """Return ``policy_key`` if it is a run name: a non-empty string that is not a URI.

    Raises:
        StatsDBError: anything else.
    """
    if not isinstance(policy_key, str) or not policy_key:
        raise StatsDBError(
            "policy_key must be a non-empty string",
            expected="the run name, e.g. 'my_run'",
            found=repr(policy_key),
            fix="compute keys with ckptcompat.checkpoint.uri.key_and_version",
        )
    if "://" in policy_key:
        # The full-URI key was a real fault: rows written under 'file:///.../model_0010.pt'
        # or 'mock://test_policy' were invisible to queries by run name (NaN, None).
        raise StatsDBError(
            "policy_key looks like a URI, not a run name",
            expected="the run name from ckptcompat.checkpoint.uri.key_and_version(uri)",
            found=repr(policy_key),
            fix="store the URI in policy_uri and the run name in policy_key",
        )
    return policy_key


def check_policy_version(policy_version: object) -> int:
    """Return ``policy_version`` if it is an epoch: an int in ``[0, INT32_MAX]``.

    Raises:
        StatsDBError: None, a bool, a non-integer, or out of range.
    """
    # None must never become 'policy_version = None' in SQL nor be coerced to epoch 0.
    if (
        policy_version is None
        or isinstance(policy_version, bool)
        or not isinstance(policy_version, numbers.Integral)
    ):
        raise StatsDBError(
            "policy_version must be an integer epoch",
            expected="an int >= 0 (epoch 0 is a version)",
            found=repr(policy_version),
            fix="resolve ':latest' or a missing epoch to a concrete epoch with "
            "ckptcompat.checkpoint.uri.key_and_version before touching the stats DB",
        )
    version = operator.index(policy_version)
    if not 0 <= version <= INT32_MAX:
        raise StatsDBError(
            "policy_version is out of range",
            expected=f"0 <= epoch <= {INT32_MAX}",
            found=str(version),
            fix="pass the checkpoint's epoch",
        )
    return version


@dataclass(frozen=True)
class PolicyKey:
    """``(policy_key, policy_version)`` plus the resolved URI it came from, validated.

    ``policy_uri`` is informational: two PolicyKeys with the same key and version are equal
    whatever their URIs, because every URI of one run/epoch names the same policy.

    Raises:
        StatsDBError: empty or URI-shaped key; version None, not an int, negative.
    """

    policy_key: str
    policy_version: int
    policy_uri: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_key", check_policy_key(self.policy_key))
        object.__setattr__(self, "policy_version", check_policy_version(self.policy_version))
        if self.policy_uri is not None and not isinstance(self.policy_uri, str):
            raise StatsDBError("policy_uri must be a string or None", found=repr(self.policy_uri))

    @property
    def label(self) -> str:
        """``"key:vN"``, the spelling ``get_all_policy_uris`` returned in the old API."""
        return f"{self.policy_key}:v{self.policy_version}"

    @classmethod
    def of(cls, policy: PolicyLike, policy_uri: str | None = None) -> PolicyKey:
        """Validate any accepted way of naming a policy.

        Args:
            policy: a PolicyKey, a ``(policy_key, policy_version)`` tuple, or an object with
                ``key_and_version()`` (PolicyRecord, MockPolicyRecord).
            policy_uri: the resolved URI to keep with it, if known.

        Raises:
            StatsDBError: a bare string (a URI is not a key), or an invalid key/version.
        """
        if isinstance(policy, PolicyKey):
            return (
                policy
                if policy_uri is None
                else cls(policy.policy_key, policy.policy_version, policy_uri)
            )
        if isinstance(policy, str):
            raise StatsDBError(
                "a string is not a policy key",
                expected="(policy_key, policy_version) or an object with key_and_version()",
                found=repr(policy),
                fix="resolve a URI with ckptcompat.checkpoint.uri.key_and_version(uri)",
            )
        if isinstance(policy, HasKeyAndVersion):
            key, version = policy.key_and_version()
            uri = getattr(policy, "uri", None) if policy_uri is None else policy_uri
            return cls(key, version, uri if isinstance(uri, str) else None)
        if isinstance(policy, tuple) and len(policy) == 2:
            return cls(policy[0], policy[1], policy_uri)
        raise StatsDBError(
            "cannot name a policy from this object",
            expected="PolicyKey, (policy_key, policy_version) or an object with key_and_version()",
            found=type(policy).__name__,
        )


PolicyLike = PolicyKey | tuple[str, int] | HasKeyAndVersion
"""The ways a caller may name a policy to the stats DB."""


def check_metric_value(value: object, *, what: str) -> float:
    """Return ``value`` as a float, refusing NaN, infinities and non-numbers.

    Raises:
        StatsDBError: naming ``what`` (e.g. "metric 'reward' of agent 0").
    """
    if isinstance(value, numbers.Real):
        number = float(value)
        if math.isfinite(number):
            return number
    raise StatsDBError(
        f"{what} is not a finite number",
        expected="a finite int or float",
        found=repr(value),
        fix="fix the metric at its source or leave it out; nothing of this episode was written",
    )


def check_int(value: object, *, what: str, minimum: int = 0, maximum: int = INT32_MAX) -> int:
    """Return ``value`` as an int in ``[minimum, maximum]``; bools and None refused.

    Raises:
        StatsDBError: naming ``what``.
    """
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        number = operator.index(value)
        if minimum <= number <= maximum:
            return number
    raise StatsDBError(f"{what} must be an integer in [{minimum}, {maximum}]", found=repr(value))


def check_text(value: object, *, what: str) -> str:
    """Return ``value`` if it is a non-empty string.

    Raises:
        StatsDBError: naming ``what``.
    """
    if isinstance(value, str) and value:
        return value
    raise StatsDBError(f"{what} must be a non-empty string", found=repr(value))


def utc_naive(moment: datetime | None) -> datetime:
    """Naive UTC, the form DuckDB's TIMESTAMP stores without converting."""
    moment = moment or datetime.now(UTC)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


@dataclass(frozen=True)
class EpisodeRows:
    """Validated rows of one episode, built before any SQL runs."""

    episode: tuple[Any, ...]
    attributes: list[tuple[str, str, str | None]]
    groups: list[tuple[str, int, int]]
    metrics: list[tuple[str, int, str, float]]


def _attribute_text(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(operator.index(value))
    if isinstance(value, numbers.Real):
        return repr(check_metric_value(value, what=f"attribute {name!r}"))
    raise StatsDBError(
        f"attribute {name!r} has an unsupported type",
        expected="str, int, float, bool or None",
        found=type(value).__name__,
    )


def episode_rows(
    *,
    episode_id: str,
    attributes: Mapping[str, object],
    agent_metrics: Mapping[int, Mapping[str, float]],
    agent_groups: Mapping[int, int],
    step_count: int,
    replay_url: str | None,
    created_at: datetime | None,
    simulation_id: str | None,
    seed: int | None,
) -> EpisodeRows:
    """Check every value of one episode and lay out its rows; no SQL runs here.

    Raises:
        StatsDBError: the first invalid value: empty ids, a non-finite or non-numeric
            metric, an agent/group id outside int32, an attribute of an unsupported type.
    """
    episode_id = check_text(episode_id, what="episode_id")
    metrics = []
    for agent, values in agent_metrics.items():
        agent_id = check_int(agent, what="agent id")
        if not isinstance(values, Mapping):
            raise StatsDBError(
                f"metrics of agent {agent_id} must be a mapping",
                expected="{metric: value}",
                found=type(values).__name__,
            )
        for metric, value in values.items():
            what = f"metric {metric!r} of agent {agent_id} in episode {episode_id!r}"
            metrics.append(
                (
                    episode_id,
                    agent_id,
                    check_text(metric, what="metric name"),
                    check_metric_value(value, what=what),
                )
            )
    groups = [
        (episode_id, check_int(group, what="group id"), check_int(agent, what="agent id"))
        for agent, group in agent_groups.items()
    ]
    attrs = [
        (episode_id, check_text(name, what="attribute name"), _attribute_text(name, value))
        for name, value in attributes.items()
    ]
    episode = (
        episode_id,
        None if simulation_id is None else check_text(simulation_id, what="simulation_id"),
        check_int(step_count, what="step_count", maximum=INT64_RANGE[1]),
        None
        if seed is None
        else check_int(seed, what="seed", minimum=INT64_RANGE[0], maximum=INT64_RANGE[1]),
        None if replay_url is None else check_text(replay_url, what="replay_url"),
        utc_naive(created_at),
        utc_naive(None),
    )
    return EpisodeRows(episode, attrs, groups, metrics)
