"""run_lstm: one LSTM call per segment between episode starts vs one call per step."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from ckptcompat.agents.lstm_segments import run_lstm, segment_bounds
from ckptcompat.agents.split_lstm import SplitLSTMAgent
from ckptcompat.rl.ppo import PPOConfig, RolloutStorage, ppo_update

T, B = 32, 3
#: Largest difference allowed between the segment-wise and per-step update's parameters
#: (measured ~1e-8 on torch 2.4-2.15 here; the LSTM's weight gradient is accumulated in
#: another order inside one multi-step kernel call).
UPDATE_ATOL = 1e-6


def test_segment_bounds_cut_where_an_episode_starts() -> None:
    """Guards segments that run an LSTM across an episode start (state never zeroed) or
    that drop steps: a cut at each start after step 0, the segments tile every step."""
    assert segment_bounds([False] * 4) == [(0, 4)]
    assert segment_bounds([True, False, True, False, False]) == [(0, 2), (2, 5)]
    assert segment_bounds([False, True, True]) == [(0, 1), (1, 2), (2, 3)]


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, 8, generator=gen)
    done = (torch.rand(T, B, generator=gen) < 0.1).float()
    done[0, 1] = 1.0  # an episode start at step 0: the initial state is masked too
    state = tuple(torch.randn(1, B, 16, generator=gen) for _ in range(2))
    return x, done, state


def test_segments_give_the_per_step_outputs() -> None:
    """Guards the segment-wise LSTM changing what the agent computes (a reset missed or
    applied at the wrong step): outputs and final state equal the per-step loop's, and the
    gradients agree within float32 rounding."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16)
    x, done, state = _inputs()
    grads = []
    results = []
    for segments in (True, False):
        lstm.zero_grad()
        out, (h, c) = run_lstm(lstm, x, state, done, segments)  # type: ignore[arg-type]
        (out.square().sum() + h.sum() + c.sum()).backward()
        results.append((out.detach(), h.detach(), c.detach()))
        grads.append([p.grad.clone() for p in lstm.parameters()])  # type: ignore[union-attr]
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_done_resets_the_state_inside_a_rollout() -> None:
    """Guards the reset having no effect in the segment path: feeding a non-zero state
    with done at step 0 equals feeding a zero state."""
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(8, 16)
    x, _, state = _inputs()
    done = torch.zeros(T, B)
    done[0] = 1.0
    zero = tuple(torch.zeros_like(s) for s in state)
    with torch.no_grad():
        a, _ = run_lstm(lstm, x, state, done)  # type: ignore[arg-type]
        b, _ = run_lstm(lstm, x, zero, torch.zeros(T, B))  # type: ignore[arg-type]
    assert torch.equal(a, b)


@pytest.mark.parametrize("num_minibatches", [1, 3])
def test_ppo_update_matches_the_per_step_reference(num_minibatches: int) -> None:
    """Guards the segment-wise update (SplitLSTMAgent, 2.2x faster at 1 env) drifting from the
    per-step reference it replaces: one PPO update from the same agent, batch and generator
    lands within UPDATE_ATOL of the per-step update on every parameter and Adam moment."""
    space = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
    torch.manual_seed(0)
    agent = SplitLSTMAgent(space, gym.spaces.Discrete(2), hidden_size=16, encoder_size=16)
    gen = torch.Generator().manual_seed(1)
    storage = RolloutStorage(T, B, (4,))
    storage.obs.copy_(torch.randn((T, B, 4), generator=gen))
    storage.dones.copy_((torch.rand((T, B), generator=gen) < 0.1).float())
    storage.rewards.copy_(torch.randn((T, B), generator=gen))
    with torch.no_grad():
        out = agent(storage.obs, (), storage.dones)
    storage.actions.copy_(out.actions)
    storage.logprobs.copy_(out.logprobs)
    storage.values.copy_(out.values)
    config = PPOConfig(num_envs=B, num_steps=T, num_minibatches=num_minibatches, update_epochs=4)
    batch = storage.finish(agent.initial_state(B), torch.zeros(B), torch.zeros(B), config)

    updated = []
    for segments in (True, False):
        copy_ = copy.deepcopy(agent)
        copy_.segments = segments
        optimizer = torch.optim.Adam(copy_.parameters(), lr=1e-3, eps=1e-5)
        ppo_update(copy_, optimizer, batch, config, torch.Generator().manual_seed(2))
        updated.append((copy_, optimizer))
    (fast, fast_opt), (ref, ref_opt) = updated
    for (name, a), b in zip(fast.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=UPDATE_ATOL, msg=name)
    assert any(not torch.equal(a, b) for a, b in zip(fast.parameters(), agent.parameters(),
                                                     strict=True))  # fmt: skip
    for sa, sb in zip(fast_opt.state.values(), ref_opt.state.values(), strict=True):
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=UPDATE_ATOL)
