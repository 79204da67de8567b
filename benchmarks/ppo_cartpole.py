"""Learning benchmark: PPO with the default TrainerConfig on CartPole-v1 (not a test).

Measures, for each seed, the greedy mean return (``evaluate_greedy`` over ``--eval-episodes``
fixed seeds) against env steps, and reports the *budget*: the smallest evaluated env-step count
by which every seed's greedy mean has reached 475 (CartPole-v1's solved threshold), plus how
many later evaluations stayed there. Also measures throughput in env steps per second for 1
and 8 sub-envs: raw ``SyncVectorEnv`` stepping with random actions, and the whole training
epoch (rollout + PPO update) with that many envs.

Run: ``python benchmarks/ppo_cartpole.py [--agent recurrent|mlp] [--seeds 0 1 2] [--max-epochs 400]
[--json out.json]`` (defaults: the trainer's default agent, RecurrentAgent; 400 epochs = 102,400
env steps per seed, evaluated every 20 epochs).
Training wall time excludes evaluation. Figures depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ckptcompat.rl.envs import make_vector_env, reset_all
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import Trainer, evaluate_greedy
from ckptcompat.rl.trainer_config import DEFAULT_AGENT, MLP_AGENT, TrainerConfig

__all__ = ["AGENTS", "learning_curve", "main", "throughput"]

SOLVED = 475.0
#: ``--agent`` name -> class path.
AGENTS = {"recurrent": DEFAULT_AGENT, "mlp": MLP_AGENT}


def learning_curve(
    seed: int, max_epochs: int, eval_every: int, eval_seeds: list[int], config: TrainerConfig
) -> dict[str, Any]:
    """Train one seed for ``max_epochs``, evaluating greedily every ``eval_every`` epochs."""
    with tempfile.TemporaryDirectory() as data_dir:
        trainer = Trainer.start(replace(config, seed=seed), "bench", data_dir, progress=False)
        curve, train_s = [], 0.0
        for epoch in range(eval_every, max_epochs + 1, eval_every):
            started = time.perf_counter()
            trainer.train(epoch)
            train_s += time.perf_counter() - started
            mean = float(np.mean(evaluate_greedy(trainer.agent, "CartPole-v1", eval_seeds)))
            curve.append(
                {
                    "epoch": epoch,
                    "env_steps": trainer.agent_step,
                    "greedy_return": mean,
                    "train_s": round(train_s, 1),
                }
            )
            print(
                f"  seed {seed} steps {trainer.agent_step:>7} greedy {mean:6.1f} "
                f"train {train_s:6.1f}s",
                flush=True,
            )
    first = next((p["env_steps"] for p in curve if p["greedy_return"] >= SOLVED), None)
    return {"seed": seed, "curve": curve, "first_solved_env_steps": first, "train_s": train_s}


def throughput(
    num_envs: int, base: PPOConfig, epochs: int = 5, agent: str = DEFAULT_AGENT
) -> dict[str, float]:
    """Env steps per second with ``num_envs`` sub-envs: raw stepping and full training epochs."""
    torch.set_num_threads(1)
    envs = make_vector_env("CartPole-v1", num_envs, 0)
    reset_all(envs, 0)
    rng = np.random.default_rng(0)
    steps = 4096 // num_envs
    started = time.perf_counter()
    for _ in range(steps):
        envs.step(rng.integers(0, 2, size=num_envs))
    raw = steps * num_envs / (time.perf_counter() - started)
    envs.close()

    ppo = replace(base, num_envs=num_envs, num_minibatches=min(base.num_minibatches, num_envs))
    config = TrainerConfig(checkpoint_every=1000, agent_class_path=agent, ppo=ppo)
    with tempfile.TemporaryDirectory() as data_dir:
        trainer = Trainer.start(config, "sps", data_dir, progress=False)
        trainer.train(1)  # warm-up: first-call allocations
        started = time.perf_counter()
        trainer.train(1 + epochs)
        train = epochs * ppo.batch_size / (time.perf_counter() - started)
    return {"num_envs": num_envs, "raw_env_steps_per_s": raw, "train_env_steps_per_s": train}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=sorted(AGENTS), default="recurrent")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-epochs", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--skip-learning", action="store_true")
    parser.add_argument(
        "--ppo",
        action="append",
        default=[],
        metavar="FIELD=JSON",
        help="override a PPOConfig field of the default config, e.g. --ppo anneal_lr_epochs=100",
    )
    parser.add_argument("--json", help="write the figures to this file")
    args = parser.parse_args(argv)

    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.ppo)}
    config = TrainerConfig(agent_class_path=AGENTS[args.agent])
    config = replace(config, ppo=replace(config.ppo, **overrides))
    report: dict[str, Any] = {"config": config.to_json(), "torch": torch.__version__}
    report["throughput"] = [
        throughput(n, config.ppo, agent=config.agent_class_path) for n in (1, 8)
    ]
    for row in report["throughput"]:
        print(
            f"{row['num_envs']} envs: raw {row['raw_env_steps_per_s']:.0f} steps/s, "
            f"training {row['train_env_steps_per_s']:.0f} steps/s",
            flush=True,
        )
    if not args.skip_learning:
        eval_seeds = list(range(10_000, 10_000 + args.eval_episodes))
        runs = [
            learning_curve(s, args.max_epochs, args.eval_every, eval_seeds, config)
            for s in args.seeds
        ]
        report["runs"] = runs
        firsts = [r["first_solved_env_steps"] for r in runs]
        budget = None if None in firsts else max(firsts)
        report["budget_env_steps"] = budget
        for r in runs:
            later = [
                p["greedy_return"] >= SOLVED
                for p in r["curve"]
                if budget is not None and p["env_steps"] >= budget
            ]
            r["solved_evals_from_budget"] = f"{sum(later)}/{len(later)}"
            print(
                f"seed {r['seed']}: first >= {SOLVED:.0f} at {r['first_solved_env_steps']} "
                f"env steps; train wall {r['train_s']:.0f}s; "
                f"evals >= {SOLVED:.0f} from the budget on: {r['solved_evals_from_budget']}"
            )
        print(f"budget (all {len(runs)} seeds reached {SOLVED:.0f}): {budget} env steps")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=1)
    return report


if __name__ == "__main__":
    main()
