"""The ``ckptcompat`` command line.

Subcommands import what they need when they run, so ``ckptcompat doctor`` imports
neither torch nor numpy:

* ``doctor FILE [--json]`` -- why FILE loads or fails on each torch version, statically;
* ``migrate SRC DST [--trust]`` -- any generation to the safe format, verified equal;
* ``run train|resume|evaluate`` -- steps the harness chains across venvs; each prints
  exactly one result record (DESIGN section 8) as its last stdout line.

Exit codes: 0 success, 1 a check failed (a typed ckptcompat error, or a failed step),
2 a usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from ckptcompat.errors import CheckpointError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# ---------------------------------------------------------------------------- doctor
def _doctor(args: argparse.Namespace) -> int:
    from ckptcompat import doctor

    return doctor.main([args.file, *(["--json"] if args.json else [])])


# ---------------------------------------------------------------------------- migrate
def _migrate(args: argparse.Namespace) -> int:
    from ckptcompat.checkpoint.migrate import migrate

    config = json.loads(args.config) if args.config is not None else None
    report = migrate(
        args.src,
        args.dst,
        trust=args.trust,
        run=args.run,
        epoch=args.epoch,
        class_path=args.class_path,
        config=config,
    )
    print(f"migrated {report.source} ({report.generation}, loader={report.loader})")
    print(f"  -> {report.destination}  run={report.run} epoch={report.epoch}")
    print(f"  outputs equal on the probe batch: {report.outputs_equal}")
    return EXIT_OK


# ---------------------------------------------------------------------------- run steps
def _versions() -> tuple[str, str]:
    import numpy
    import torch

    return torch.__version__, numpy.__version__


def _agent_label(class_path: str | None) -> str:
    return (class_path or "unknown").rsplit(".", 1)[-1]


def _emit(step: str, class_path: str | None, outcome: str, detail: str, started: float,
          outputs: dict[str, Any] | None) -> None:  # fmt: skip
    from ckptcompat.harness.results import make_record

    torch_v, numpy_v = _versions()
    record = make_record(
        scenario=f"run_{step}",
        artifact="safe_v1",
        agent=_agent_label(class_path),
        loader="safe",
        outcome=outcome,  # type: ignore[arg-type]
        producer_torch=torch_v,
        consumer_torch=torch_v,
        producer_numpy=numpy_v,
        consumer_numpy=numpy_v,
        detail=detail,
        duration_s=time.perf_counter() - started,
        outputs=outputs,
    )
    print(json.dumps(record, sort_keys=True), flush=True)


def _outputs(uri: str | None, epoch: int, agent_step: int, agent: Any) -> dict[str, Any]:
    from ckptcompat.agents.probe import params_digest

    return {
        "uri": uri,
        "epoch": epoch,
        "agent_step": agent_step,
        "params_digest": params_digest(agent),
    }


def _step(step: str, body: Callable[[], tuple[str | None, dict[str, Any], str]]) -> int:
    """Run one step; print its record last; 1 on a typed failure."""
    started = time.perf_counter()
    try:
        class_path, outputs, detail = body()
    except CheckpointError as exc:
        _emit(step, None, "fail", f"{type(exc).__name__}: {exc}", started, None)
        return EXIT_FAILED
    _emit(step, class_path, "pass", detail, started, outputs)
    return EXIT_OK


def _run_train(args: argparse.Namespace) -> int:
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.rl.trainer import TrainerConfig, train

    def body() -> tuple[str | None, dict[str, Any], str]:
        config = TrainerConfig(
            env_id=args.env,
            seed=args.seed,
            checkpoint_every=args.checkpoint_every,
            agent_class_path=args.agent,
            agent_kwargs=json.loads(args.agent_kwargs),
        )
        result = train(config, args.run, args.dir, args.epochs, progress=False)
        agent = SimpleCheckpointManager(args.run, args.dir).load_agent(result.epoch)
        detail = f"trained to epoch {result.epoch} in {result.total_time_s:.1f} s"
        return args.agent, _outputs(result.uri, result.epoch, result.agent_step, agent), detail

    return _step("train", body)


def _run_resume(args: argparse.Namespace) -> int:
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.rl.trainer import resume

    def body() -> tuple[str | None, dict[str, Any], str]:
        result = resume(args.run, args.dir, args.epochs, progress=False)
        if result.uri is None:
            raise CheckpointError(
                "nothing to resume: no epoch was trained",
                expected=f"a run below the target of {args.epochs} epochs",
                found=f"run {args.run!r} already at epoch {result.epoch}",
                fix="pass a larger --epochs (it is the target total, not a count)",
            )
        manager = SimpleCheckpointManager(args.run, args.dir)
        agent = manager.load_agent(result.epoch)
        class_path = f"{type(agent).__module__}.{type(agent).__qualname__}"
        detail = f"resumed to epoch {result.epoch}"
        return class_path, _outputs(result.uri, result.epoch, result.agent_step, agent), detail

    return _step("resume", body)


def _env_of(uri: str) -> str:
    """The env a checkpoint was trained on, from its run's trainer state; CartPole-v1 else."""
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.uri import resolve

    resolved = resolve(uri)
    if resolved.path is None or resolved.entry is None:
        return "CartPole-v1"
    run_dir = resolved.path.parent.parent  # data_dir/<run>/checkpoints/<file>
    manager = SimpleCheckpointManager(run_dir.name, run_dir.parent)
    state = manager.load_trainer_state(restore_rng=False)
    config = (state.extra or {}).get("trainer_config", {}) if state is not None else {}
    return str(config.get("env_id", "CartPole-v1"))


def _run_evaluate(args: argparse.Namespace) -> int:
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.uri import resolve
    from ckptcompat.evaluation.evaluator import evaluate_policy

    def body() -> tuple[str | None, dict[str, Any], str]:
        resolved = resolve(args.uri)  # pin :latest once, so every step sees one file
        env_id = args.env or _env_of(resolved.uri)
        result = evaluate_policy(
            resolved.uri, args.db, env_id=env_id, episodes=args.episodes, seed=args.seed
        )
        agent = SimpleCheckpointManager.load_from_uri(resolved.uri)
        class_path = f"{type(agent).__module__}.{type(agent).__qualname__}"
        agent_step = resolved.entry.agent_step if resolved.entry is not None else 0
        outputs = _outputs(result.policy_uri, result.policy_version, agent_step, agent)
        outputs |= {
            "policy_key": result.policy_key,
            "policy_version": result.policy_version,
            "mean_return": result.mean_return,
            "episode_returns": list(result.episode_returns),
            "db": str(result.db_path),
        }
        return class_path, outputs, f"{args.episodes} episodes on {env_id}"

    return _step("evaluate", body)


# ---------------------------------------------------------------------------- parser
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ckptcompat", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    doctor = sub.add_parser("doctor", help="explain, without unpickling, where FILE loads")
    doctor.add_argument("file")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.set_defaults(func=_doctor)

    migrate = sub.add_parser("migrate", help="convert any checkpoint generation to the safe format")
    migrate.add_argument("src")
    migrate.add_argument("dst", help="a .pt file, or a data_dir (then <dst>/<run>/checkpoints/)")
    migrate.add_argument(
        "--trust",
        action="store_true",
        help="allow weights_only=False when the allowlist cannot cover SRC",
    )
    migrate.add_argument("--run")
    migrate.add_argument("--epoch", type=int)
    migrate.add_argument("--class-path")
    migrate.add_argument("--config", help="agent config as JSON (for bare state_dicts)")
    migrate.set_defaults(func=_migrate)

    run = sub.add_parser("run", help="one harness step: train, resume or evaluate")
    steps = run.add_subparsers(dest="step", required=True)
    train = steps.add_parser("train", help="start a run and train it to --epochs")
    train.add_argument("--run", required=True)
    train.add_argument("--dir", required=True, help="data_dir")
    train.add_argument("--agent", default="ckptcompat.agents.recurrent.RecurrentAgent")
    train.add_argument("--agent-kwargs", default="{}", help="JSON constructor arguments")
    train.add_argument("--env", default="CartPole-v1")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--epochs", type=int, required=True, help="target total epochs")
    train.add_argument("--checkpoint-every", type=int, default=1)
    train.set_defaults(func=_run_train)
    res = steps.add_parser("resume", help="resume a run to --epochs in total")
    res.add_argument("--run", required=True)
    res.add_argument("--dir", required=True, help="data_dir")
    res.add_argument("--epochs", type=int, required=True, help="target total epochs")
    res.set_defaults(func=_run_resume)
    ev = steps.add_parser("evaluate", help="evaluate a checkpoint into a stats DB")
    ev.add_argument("--uri", required=True)
    ev.add_argument("--db", required=True, help="DuckDB shard to write")
    ev.add_argument("--episodes", type=int, default=5)
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--env", help="env id (default: the run's trainer config, else CartPole-v1)")
    ev.set_defaults(func=_run_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ckptcompat``; returns the exit code (see the module docstring)."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CheckpointError as exc:
        print(f"ckptcompat {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except json.JSONDecodeError as exc:
        print(f"ckptcompat {args.command}: invalid JSON argument: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
