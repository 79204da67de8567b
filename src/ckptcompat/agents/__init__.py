"""ckptcompat.agents: the agent interface, our agents and the class_path registry."""

from __future__ import annotations

from ckptcompat.agents.base import Agent, AgentOutput, AgentState
from ckptcompat.agents.mlp import MLPAgent, MLPAgentConfig
from ckptcompat.agents.mock import MockAgent
from ckptcompat.agents.recurrent import RecurrentAgent, RecurrentAgentConfig
from ckptcompat.agents.registry import (
    build_agent,
    class_path_of,
    resolve_agent_class,
    validate_config,
)
from ckptcompat.agents.spaces import as_space, space_from_config, space_to_config
from ckptcompat.agents.split_lstm import SplitLSTMAgent, SplitLSTMAgentConfig

__all__ = [
    "Agent",
    "AgentOutput",
    "AgentState",
    "MLPAgent",
    "MLPAgentConfig",
    "MockAgent",
    "RecurrentAgent",
    "RecurrentAgentConfig",
    "SplitLSTMAgent",
    "SplitLSTMAgentConfig",
    "as_space",
    "build_agent",
    "class_path_of",
    "resolve_agent_class",
    "space_from_config",
    "space_to_config",
    "validate_config",
]
