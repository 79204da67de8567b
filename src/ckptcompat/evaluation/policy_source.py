"""What the evaluator evaluates: a policy source, its one key, and whether it fits the env.

A source is a checkpoint URI, a PolicyRecord-like object or an in-memory agent
(:data:`PolicySource`); :func:`load_policy` settles its ``(policy_key, policy_version)``
(docs/design.md section 6) before anything loads, and :func:`check_agent_fits_env` refuses an agent
whose spaces do not fit the env, before any stats DB is opened.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import gymnasium as gym
import torch
from torch import nn

from ckptcompat.agents.spaces import as_space
from ckptcompat.checkpoint import uri as uri_mod
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.errors import AgentMismatchError, CheckpointError, InputError, StatsDBError
from ckptcompat.evaluation.stats_values import HasKeyAndVersion, PolicyKey

__all__ = [
    "PolicyRecordLike",
    "PolicySource",
    "check_agent_fits_env",
    "explicit_key",
    "load_policy",
]


class PolicyRecordLike(Protocol):
    """What the evaluator uses of a (deprecated) PolicyRecord or MockPolicyRecord."""

    @property
    def policy(self) -> nn.Module: ...

    def key_and_version(self) -> tuple[str, int]: ...


PolicySource = str | os.PathLike[str] | nn.Module | PolicyRecordLike
"""A checkpoint URI, an in-memory agent (with an explicit key), or a PolicyRecord."""


def _resolved_uri(uri: str) -> str:
    try:
        return uri_mod.resolve(uri).uri
    except CheckpointError:
        # A record may carry a URI we cannot serve (wandb://) yet name its policy itself;
        # the URI is informational in the DB, so it is kept as given.
        return uri


def explicit_key(policy_key: str | None, policy_version: int | None) -> PolicyKey | None:
    """The caller's explicit key, or None when neither part was given.

    Raises:
        InputError: an invalid key or version (empty, URI-shaped, None, negative).
    """
    if policy_key is None and policy_version is None:
        return None
    try:
        return PolicyKey(policy_key, policy_version)  # type: ignore[arg-type]
    except StatsDBError as exc:
        # The arguments are refused before any DB is touched: a bad input, not a DB failure.
        raise InputError(exc.problem, expected=exc.expected, found=exc.found, fix=exc.fix) from exc


def load_policy(
    policy: PolicySource, explicit: PolicyKey | None, device: str | torch.device
) -> tuple[nn.Module, PolicyKey]:
    """The agent to evaluate and its validated key (with the resolved URI).

    The key is settled (and an explicit one checked against it) before anything loads.

    Raises:
        InputError: an in-memory agent without ``explicit``, or ``explicit`` disagreeing
            with the key of a URI or record.
        CheckpointError and subclasses: the URI cannot be resolved or loaded.
        AgentMismatchError: the policy is not an agent.
        TypeError: ``policy`` is none of the accepted kinds.
    """
    load: Callable[[], object]
    if isinstance(policy, str | os.PathLike):
        concrete = uri_mod.resolve(policy).uri
        key = PolicyKey(*uri_mod.key_and_version(concrete), concrete)
        load = functools.partial(SimpleCheckpointManager.load_from_uri, concrete, device)
    elif isinstance(policy, nn.Module):
        if explicit is None:
            raise InputError(
                "an in-memory agent has no policy key",
                expected="policy_key=<run name> and policy_version=<epoch>",
                found=f"a {type(policy).__name__} without them",
                fix="pass policy_key and policy_version, or evaluate its checkpoint URI",
            )
        return policy, explicit
    elif isinstance(policy, HasKeyAndVersion):
        uri = getattr(policy, "uri", None)
        key = PolicyKey.of(policy, _resolved_uri(uri) if isinstance(uri, str) else None)
        load = functools.partial(getattr, policy, "policy")
    else:
        raise TypeError(
            "cannot evaluate a "
            f"{type(policy).__name__}; expected a checkpoint URI, an nn.Module agent with "
            "policy_key/policy_version, or a PolicyRecord"
        )
    if explicit is not None and explicit != key:
        raise InputError(
            "the explicit policy key disagrees with the checkpoint's",
            expected=f"{key.label} (from the key scheme)",
            found=explicit.label,
            fix="omit policy_key/policy_version for URIs and records",
        )
    agent = load()
    if not isinstance(agent, nn.Module):
        raise AgentMismatchError(
            "the policy is not an agent",
            expected="an nn.Module implementing the agent interface",
            found=type(agent).__name__,
        )
    return agent, key


def _agent_space(agent: nn.Module, name: str) -> gym.Space[Any] | None:
    space = getattr(agent, name, None)
    if space is None:
        config = getattr(agent, "config", None)
        if isinstance(config, Mapping) and name in config:
            space = as_space(config[name])
    return space if isinstance(space, gym.Space) else None


def _describe(obs: gym.Space[Any] | None, act: gym.Space[Any] | None) -> str:
    obs_text = "unknown" if obs is None else str(tuple(obs.shape or ()))
    return f"observation shape {obs_text}, action space {act!r}"


def check_agent_fits_env(agent: nn.Module, env: gym.Env[Any, Any], env_id: str) -> None:
    """Refuse an agent whose spaces do not fit ``env``.

    Compares the observation shape (dtype and bounds may differ: agents cast and
    normalise) and the action space (a ``Discrete`` must have the same ``n`` and
    ``start``). Spaces come from the agent's ``observation_space``/``action_space``
    attributes or its ``config``; a space the agent does not expose is not checked here
    (actions are still checked at every step).

    Raises:
        AgentMismatchError: with the env's spaces as expected and the agent's as found.
    """
    obs, act = _agent_space(agent, "observation_space"), _agent_space(agent, "action_space")
    env_obs, env_act = env.observation_space, env.action_space
    obs_ok = obs is None or tuple(obs.shape or ()) == tuple(env_obs.shape or ())
    if isinstance(act, gym.spaces.Discrete) and isinstance(env_act, gym.spaces.Discrete):
        act_ok = (int(act.n), int(act.start)) == (int(env_act.n), int(env_act.start))
    else:
        act_ok = act is None or act == env_act
    if not (obs_ok and act_ok):
        raise AgentMismatchError(
            f"the agent does not fit {env_id}",
            expected=f"{_describe(env_obs, env_act)} (the env's)",
            found=f"{_describe(obs, act)} (the agent's)",
            fix="evaluate on the env the agent was built for, or build it from this env's spaces",
        )
