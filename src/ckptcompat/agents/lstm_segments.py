"""Running an ``nn.LSTM`` over ``(T, B)`` steps with episode resets: per step or per segment.

``done[t] = 1`` zeroes that environment's ``(h, c)`` before ``x[t]`` is consumed
(docs/design.md section 7). Between two steps where *some* environment starts an episode,
no state is reset, so the LSTM can consume that whole segment in one call instead of one
call per step: the update (``T`` = a rollout's steps) then makes a few LSTM calls per
sequence instead of ``T``, measured 2.2x faster training at 1 env on CartPole (torch 2.15,
oneDNN on). The two give the same outputs up to rounding: a multi-step call computes the
input projection of all its steps in one matrix product and accumulates the weight
gradients over the segment inside the kernel, so the last bits differ (parameters after a
PPO update within ~1e-7, see ``tests/agents/test_lstm_segments.py``).
"""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

__all__ = ["run_lstm", "segment_bounds"]


def segment_bounds(starts: list[bool]) -> list[tuple[int, int]]:
    """``[(t0, t1), ...]`` covering ``range(len(starts))``, a new segment at each ``t > 0``
    where ``starts[t]`` (some environment starts an episode there)."""
    cuts = [t for t in range(1, len(starts)) if starts[t]]
    edges = [0, *cuts, len(starts)]
    return list(pairwise(edges))


def run_lstm(
    lstm: nn.LSTM,
    x: torch.Tensor,
    state: tuple[torch.Tensor, torch.Tensor],
    done: torch.Tensor,
    segments: bool = True,
) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Run ``lstm`` over ``x`` with the state zeroed where ``done``.

    Args:
        lstm: a sequence-first ``nn.LSTM``.
        x: ``(T, B, input_size)`` float32.
        state: ``(h, c)``, each ``(num_layers, B, hidden_size)``.
        done: ``(T, B)`` bool or float; 1 zeroes the state before step ``t``.
        segments: one call per segment between episode starts (fast); False: one call per
            step (the reference the segments are tested against).

    Returns:
        ``(outputs (T, B, hidden_size), (h, c) after step T - 1)``.
    """
    steps, batch = x.shape[:2]
    keep = 1.0 - done.to(x.dtype)
    starts = done.any(dim=1).tolist()
    bounds = segment_bounds(starts) if segments else [(t, t + 1) for t in range(steps)]
    h, c = state
    outputs = []
    for t0, t1 in bounds:
        # Masking only where some env starts: x * 1.0 == x, so masking elsewhere changes
        # nothing but costs two multiplications (and their backward) per step.
        if starts[t0]:
            mask = keep[t0].view(1, batch, 1)
            h, c = h * mask, c * mask
        out, (h, c) = lstm(x[t0:t1], (h, c))
        outputs.append(out)
    return torch.cat(outputs), (h, c)
