"""A fixed probe batch and greedy outputs: how we compare two copies of an agent.

Migration, goldens and the matrix compare agents by running both on the same probe batch
(observations sampled from the agent's own observation space with a fixed seed) and
comparing actions, log-probabilities, entropies and values.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ckptcompat.agents.base import AgentOutput
from ckptcompat.agents.spaces import as_space
from ckptcompat.errors import AgentMismatchError

__all__ = ["params_digest", "probe_batch", "run_probe"]


def probe_batch(
    agent: nn.Module, *, steps: int = 4, batch: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations ``(T, B, *obs_shape)`` sampled from the agent's observation space.

    Returns ``(obs, done)``: obs in the space's dtype converted to a tensor, done ``(T, B)``
    float32 with episode starts at ``t = 0`` and, for ``B > 1``, in env 1 at ``t = T // 2``
    (so recurrent resets are exercised).

    Raises:
        AgentMismatchError: the agent exposes no observation space (``observation_space``
            attribute or ``config["observation_space"]``).
    """
    space: Any = getattr(agent, "observation_space", None)
    if space is None:
        config = getattr(agent, "config", None)
        if isinstance(config, dict) and "observation_space" in config:
            space = as_space(config["observation_space"])
    if space is None:
        raise AgentMismatchError(
            "cannot build a probe batch for this agent",
            expected="an observation_space attribute or config['observation_space']",
            found=f"neither, on {type(agent).__qualname__}",
            fix="give the agent an observation_space",
        )
    space = as_space(space) if isinstance(space, dict) else space
    space.seed(seed)
    samples = np.stack([space.sample() for _ in range(steps * batch)])
    obs = torch.as_tensor(samples).reshape(steps, batch, *samples.shape[1:])
    done = torch.zeros((steps, batch), dtype=torch.float32)
    done[0] = 1.0
    if batch > 1:
        done[steps // 2, 1] = 1.0
    return obs, done


@torch.no_grad()
def run_probe(agent: nn.Module, obs: torch.Tensor, done: torch.Tensor) -> AgentOutput:
    """Greedy forward pass over the probe batch from the agent's initial state (eval mode)."""
    was_training = agent.training
    agent.eval()
    try:
        return agent(obs, agent.initial_state(obs.shape[1]), done, deterministic=True)
    finally:
        agent.train(was_training)


def params_digest(agent: nn.Module) -> str:
    """xxh3-128 hex digest of every state_dict tensor (name, dtype, shape and bytes), in order.

    Two agents have the same digest exactly when their state_dicts are bitwise equal, so
    processes (and torch versions) can compare weights by a short string.
    """
    import xxhash

    h = xxhash.xxh3_128()
    for name, tensor in agent.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
