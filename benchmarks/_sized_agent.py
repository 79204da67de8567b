"""SizedAgent: an agent whose config sets its parameter bytes and tensor count (benchmarks only).

It goes through the real manager path (payload, registry rebuild from ``class_path`` +
config, ``load_state_dict(strict=True)``); ``class_path`` is ``_sized_agent.SizedAgent``,
importable because ``python benchmarks/bench.py`` puts ``benchmarks/`` on ``sys.path``.
Parameters are allocated with ``torch.empty`` so a rebuild costs an allocation, not an init.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ckptcompat.agents.base import Agent, AgentOutput, AgentState

__all__ = ["SizedAgent"]


class SizedAgent(Agent):
    """``num_tensors`` float32 parameters holding ``num_floats`` floats in total."""

    def __init__(self, num_floats: int, num_tensors: int = 8) -> None:
        super().__init__()
        self.num_floats = num_floats
        self.num_tensors = num_tensors
        each = max(1, num_floats // num_tensors)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(each)) for _ in range(num_tensors))

    @property
    def config(self) -> dict[str, Any]:
        return {"num_floats": self.num_floats, "num_tensors": self.num_tensors}

    def initial_state(self, batch_size: int) -> AgentState:
        return ()

    def forward(
        self,
        obs: torch.Tensor,
        state: AgentState,
        done: torch.Tensor,
        action: torch.Tensor | None = None,
        deterministic: bool = False,
    ) -> AgentOutput:
        raise NotImplementedError("SizedAgent only measures checkpoint I/O")
