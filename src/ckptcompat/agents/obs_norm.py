"""Running observation normalisation shared by our agents (gymnasium's RunningMeanStd).

An agent keeps three float64 buffers in its ``state_dict`` -- ``obs_mean``, ``obs_var``
(``obs_shape``) and ``obs_count`` (scalar) -- added by :func:`register_buffers` at the
identity transform with a tiny prior count, folds in each rollout's observations with
:func:`update_moments` (the trainer calls the agent's ``update_obs_normalizer``), and
normalises with :func:`normalize`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["normalize", "register_buffers", "update_moments"]


def register_buffers(module: nn.Module, obs_shape: tuple[int, ...]) -> None:
    """Add ``obs_mean`` (zeros), ``obs_var`` (ones), ``obs_count`` (1e-4) float64 buffers."""
    module.register_buffer("obs_mean", torch.zeros(obs_shape, dtype=torch.float64))
    module.register_buffer("obs_var", torch.ones(obs_shape, dtype=torch.float64))
    module.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))


@torch.no_grad()
def update_moments(
    mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor, batch: torch.Tensor
) -> None:
    """Fold ``batch`` ``(N, *obs_shape)`` (any dtype) into ``mean``/``var``/``count`` in place.

    Parallel-variance (Chan et al.) update in float64, as gymnasium's RunningMeanStd.
    """
    batch = batch.to(torch.float64)
    n = batch.shape[0]
    batch_mean = batch.mean(dim=0)
    batch_var = ((batch - batch_mean) ** 2).mean(dim=0)
    delta = batch_mean - mean
    total = count + n
    m2 = var * count + batch_var * n + delta**2 * count * n / total
    mean.add_(delta * n / total)
    var.copy_(m2 / total)
    count.copy_(total)


def normalize(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, clip: float) -> torch.Tensor:
    """``clamp((x - mean) / sqrt(var + 1e-8), -clip, clip)`` in float32; ``x`` of any dtype."""
    x = x.to(torch.float32)
    std = torch.sqrt(var + 1e-8).to(torch.float32)
    return ((x - mean.to(torch.float32)) / std).clamp(-clip, clip)
