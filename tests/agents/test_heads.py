"""The Categorical action head: bitwise what torch.distributions.Categorical computes."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical

from ckptcompat.agents.heads import categorical


def _loss(logprob: torch.Tensor, entropy: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # PPO-like: the log-probability through a ratio, the entropy with its own coefficient.
    return -(weights * logprob.exp()).mean() - 0.01 * entropy.mean()


@pytest.mark.parametrize("shape", [(1, 1, 2), (128, 8, 2), (5, 3, 7)])
@pytest.mark.parametrize("given", [False, True])
def test_matches_torch_categorical_bitwise(shape: tuple[int, ...], given: bool) -> None:
    """Guards golden PPO replays drifting in the producing cell: the head must give the
    same samples (same generator draws), log-probabilities, entropies and -- because autograd
    accumulates in creation order -- the same logits gradient as Categorical, bit for bit."""
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(shape, generator=gen) * 3
    weights = torch.randn(shape[:-1], generator=gen)
    given_action = torch.randint(0, shape[-1], shape[:-1], generator=gen) if given else None

    a = raw.clone().requires_grad_()
    torch.manual_seed(7)
    dist = Categorical(logits=a)
    action = dist.sample() if given_action is None else given_action
    logprob, entropy = dist.log_prob(action), dist.entropy()
    _loss(logprob, entropy, weights).backward()

    b = raw.clone().requires_grad_()
    torch.manual_seed(7)
    action_b, logprob_b, entropy_b = categorical(b, given_action)
    _loss(logprob_b, entropy_b, weights).backward()

    assert torch.equal(action, action_b)
    assert torch.equal(logprob, logprob_b)
    assert torch.equal(entropy, entropy_b)
    assert a.grad is not None and b.grad is not None
    assert torch.equal(a.grad, b.grad)


def test_deterministic_takes_the_argmax_and_draws_nothing() -> None:
    logits = torch.tensor([[[0.1, 2.0, -1.0]], [[3.0, 0.0, 0.0]]])
    torch.manual_seed(3)
    before = torch.get_rng_state()
    action, logprob, _ = categorical(logits, deterministic=True)
    assert torch.equal(torch.get_rng_state(), before)
    assert action.tolist() == [[1], [0]]
    torch.testing.assert_close(logprob, torch.log_softmax(logits, -1).amax(-1))
