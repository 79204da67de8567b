"""Learning curves: return vs env steps, our default agent vs sb3-contrib RecurrentPPO.

CartPole-v1, 1 env, the reference settings of :mod:`_ppo` on both sides (``HYPER``), one
torch thread. At every ``every`` env steps each side records the mean return of its last 20
finished training episodes (the figure the PPO goal row compares at the end) and the
training wall time so far. Ours trains through :class:`~ckptcompat.rl.trainer.Trainer` with
the trainer's default agent (:data:`~ckptcompat.rl.trainer_config.DEFAULT_AGENT`, or
``agent=``); theirs is ``RecurrentPPO("MlpLstmPolicy", lstm_hidden_size=64)``.

Run alone: ``python benchmarks/_ppo_curves.py --seeds 0 1 2 --json out.json --png out.png``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _ppo import LAST, ours_ppo_config, sb3_kwargs

from ckptcompat.rl.trainer import Trainer
from ckptcompat.rl.trainer_config import DEFAULT_AGENT, TrainerConfig

__all__ = ["curve_ours", "curve_sb3", "plot", "run_curves", "table"]

#: Env steps between two points of a curve (16 rollouts of 128 steps).
EVERY = 2048


def _tail(returns: list[float]) -> float:
    return float(np.mean(returns[-LAST:])) if returns else float("nan")


def curve_ours(
    env_steps: int, seed: int, agent: str = DEFAULT_AGENT, every: int = EVERY
) -> dict[str, Any]:
    """Our trainer, 1 env: ``{"points": [{env_steps, return, train_s}], "env_steps_per_s"}``."""
    ppo = ours_ppo_config(1)
    config = TrainerConfig(seed=seed, checkpoint_every=10_000, agent_class_path=agent, ppo=ppo)
    per_point = max(1, every // ppo.batch_size)
    returns: list[float] = []
    points = []
    train_s = 0.0
    with tempfile.TemporaryDirectory() as data_dir:
        trainer = Trainer.start(config, "curve", data_dir, progress=False)
        for epoch in range(per_point, env_steps // ppo.batch_size + 1, per_point):
            started = time.perf_counter()
            result = trainer.train(epoch)
            train_s += time.perf_counter() - started
            returns += result.episode_returns
            points.append(
                {"env_steps": trainer.agent_step, "return": _tail(returns), "train_s": train_s}
            )
        trainer.envs.close()
    return {"points": points, "env_steps_per_s": points[-1]["env_steps"] / train_s}


def curve_sb3(env_steps: int, seed: int, every: int = EVERY) -> dict[str, Any]:
    """sb3-contrib RecurrentPPO, 1 env, 64 LSTM units; same record as :func:`curve_ours`."""
    from sb3_contrib import RecurrentPPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(1)
    points: list[dict[str, float]] = []
    started = [0.0]

    class _Record(BaseCallback):  # type: ignore[misc]
        def _on_step(self) -> bool:
            return True

        def _on_rollout_end(self) -> None:
            if self.num_timesteps % every == 0:
                returns = [float(info["r"]) for info in self.model.ep_info_buffer]
                points.append(
                    {
                        "env_steps": self.num_timesteps,
                        "return": _tail(returns),
                        "train_s": time.perf_counter() - started[0],
                    }
                )

    env = make_vec_env("CartPole-v1", n_envs=1, seed=seed)
    model = RecurrentPPO(
        "MlpLstmPolicy",
        env,
        policy_kwargs={"lstm_hidden_size": 64},
        **sb3_kwargs(1, seed),
    )
    started[0] = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "MLP policy on CPU": we do
        model.learn(total_timesteps=env_steps, callback=_Record())
    env.close()
    return {"points": points, "env_steps_per_s": points[-1]["env_steps"] / points[-1]["train_s"]}


def run_curves(env_steps: int, seeds: list[int], agent: str = DEFAULT_AGENT) -> dict[str, Any]:
    """Both sides for every seed, interleaved (ours, theirs, next seed): ``{ours, theirs}``,
    each a list of :func:`curve_ours` / :func:`curve_sb3` results with ``seed`` added."""
    out: dict[str, Any] = {"env_steps": env_steps, "agent": agent, "ours": [], "theirs": []}
    for seed in seeds:
        out["ours"].append({"seed": seed, **curve_ours(env_steps, seed, agent)})
        out["theirs"].append({"seed": seed, **curve_sb3(env_steps, seed)})
        print(
            f"  curves seed {seed}: ours R {out['ours'][-1]['points'][-1]['return']:.0f} "
            f"{out['ours'][-1]['env_steps_per_s']:.0f}/s, RecurrentPPO R "
            f"{out['theirs'][-1]['points'][-1]['return']:.0f} "
            f"{out['theirs'][-1]['env_steps_per_s']:.0f}/s",
            flush=True,
        )
    return out


def table(curves: dict[str, Any]) -> list[str]:
    """Markdown rows: env steps, then ours and RecurrentPPO's return per seed."""
    ours, theirs = curves["ours"], curves["theirs"]
    seeds = [r["seed"] for r in ours]
    head = ["env steps", *(f"ours s{s}" for s in seeds), *(f"RecurrentPPO s{s}" for s in seeds)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, point in enumerate(ours[0]["points"]):
        cells = [str(point["env_steps"])]
        for side in (ours, theirs):
            cells += [
                f"{r['points'][i]['return']:.1f}" if i < len(r["points"]) else "-" for r in side
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(curves: dict[str, Any], path: Path) -> Path:
    """Write the curves as a small PNG (matplotlib, Agg): one line per seed and side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    for side, label, color in (
        ("ours", curves["agent"].rsplit(".", 1)[-1], "tab:blue"),
        ("theirs", "sb3-contrib RecurrentPPO", "tab:orange"),
    ):
        for i, run in enumerate(curves[side]):
            xs = [p["env_steps"] for p in run["points"]]
            ys = [p["return"] for p in run["points"]]
            ax.plot(xs, ys, color=color, alpha=0.85, marker=".",
                    label=label if i == 0 else None)  # fmt: skip
    ax.set_xlabel("env steps")
    ax.set_ylabel(f"return (mean of last {LAST} episodes)")
    ax.set_title("CartPole-v1, 1 env, one line per seed")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main() -> None:
    """CLI: run the curves, print the table, optionally save JSON and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-steps", type=int, default=20_480)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--agent", default=DEFAULT_AGENT, help="class path (default: default agent)"
    )
    parser.add_argument("--json", type=Path, help="write the curves here (default: no file)")
    parser.add_argument("--png", type=Path, help="write the picture here (default: no file)")
    args = parser.parse_args()
    curves = run_curves(args.env_steps, args.seeds, args.agent)
    print("\n".join(table(curves)))
    if args.json:
        args.json.write_text(json.dumps(curves, indent=1))
    if args.png:
        plot(curves, args.png)


if __name__ == "__main__":
    main()
