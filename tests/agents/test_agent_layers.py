"""agents/layers.py: the initialisation and tanh MLP that MLPAgent, RecurrentAgent and
SplitLSTMAgent share (they were three copies)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ckptcompat.agents.base import check_sequence_shapes
from ckptcompat.agents.layers import layer_init, tanh_mlp
from ckptcompat.errors import AgentMismatchError


def test_layer_init_is_orthogonal_with_the_gain_and_zero_bias() -> None:
    """Guards the CleanRL init the PPO comparisons assume: W W^T = gain^2 I (rows <= cols),
    zero bias, for Linear and Conv2d alike."""
    torch.manual_seed(0)
    linear = layer_init(nn.Linear(8, 4), std=0.5)
    assert torch.allclose(linear.weight @ linear.weight.T, 0.25 * torch.eye(4), atol=1e-5)
    assert torch.count_nonzero(linear.bias) == 0
    conv = layer_init(nn.Conv2d(3, 2, kernel_size=2))
    rows = conv.weight.reshape(2, -1)
    assert torch.allclose(rows @ rows.T, 2.0 * torch.eye(2), atol=1e-5)


def test_tanh_mlp_layout_and_output_gain() -> None:
    """Guards the head's layout (Linear/Tanh per hidden size, then Linear) and the output
    layer's own gain (0.01 for logits), and that building it draws the global generator in
    the same order as before (same seed, same weights as a hand-built copy)."""
    torch.manual_seed(1)
    mlp = tanh_mlp(5, (16, 8), 3, 0.01)
    kinds = [type(m) for m in mlp]
    assert kinds == [nn.Linear, nn.Tanh, nn.Linear, nn.Tanh, nn.Linear]
    assert mlp(torch.zeros(2, 5)).shape == (2, 3)
    out = mlp[-1].weight
    assert torch.allclose(out @ out.T, 1e-4 * torch.eye(3), atol=1e-7)
    torch.manual_seed(1)
    hand = [layer_init(nn.Linear(5, 16)), layer_init(nn.Linear(16, 8))]
    hand.append(layer_init(nn.Linear(8, 3), std=0.01))
    for built, expected in zip([mlp[0], mlp[2], mlp[4]], hand, strict=True):
        assert torch.equal(built.weight, expected.weight)
    assert math.isclose(float(mlp[0].weight.detach().norm() ** 2), 2.0 * 5, rel_tol=1e-4)


def test_sequence_shapes_are_checked_once_for_both_recurrent_agents() -> None:
    """Guards the shared (T, B) check: a done of another shape or an observation of another
    shape is a typed AgentMismatchError naming both shapes."""
    assert check_sequence_shapes(torch.zeros(3, 2, 4), torch.zeros(3, 2), (4,)) == (3, 2)
    with pytest.raises(AgentMismatchError, match=r"obs \(3, 2, 4\), done \(2, 3\)"):
        check_sequence_shapes(torch.zeros(3, 2, 4), torch.zeros(2, 3), (4,))
    with pytest.raises(AgentMismatchError, match="observation/done shapes"):
        check_sequence_shapes(torch.zeros(3, 2, 5), torch.zeros(3, 2), (4,))
