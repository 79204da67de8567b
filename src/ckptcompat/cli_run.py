"""``ckptcompat run train|resume|evaluate``: one harness step per process.

Each step prints exactly one result record (:mod:`ckptcompat.harness.verdict.records`) as its last
stdout line, usage errors and bad input included, and one line for a human on stderr, e.g.
``ckptcompat run train: pass: trained run 'r' to epoch 4 in 3.1 s``. Outcomes and exit
codes: ``pass`` 0; ``fail`` 1 (a typed ckptcompat error: the check failed); ``error`` 2
(bad input or usage: nothing was checked). ``--uri`` takes ``DIR/<run>:vN`` (epoch N of a
run on disk) as it takes ``mock://KEY:vN``.

``train`` and ``resume`` take ``--nproc N``: with ``N > 1`` they start torchrun themselves
(:mod:`ckptcompat.cli_launch`); each of its processes runs the same step as one rank, and
only rank 0 prints the record, which then also says ``world_size`` (and, for a resume, the
resume contract that applied).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any

from ckptcompat.cli_common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    as_input,
    check_db,
    check_run_name,
    exit_code,
    on_disk,
    typed,
)
from ckptcompat.cli_launch import launch, launched_world_size, record_outcome
from ckptcompat.errors import InputError

__all__ = [
    "STEPS",
    "env_ids",
    "evaluate_step",
    "resume_step",
    "train_step",
    "usage_record",
]

STEPS = ("train", "resume", "evaluate")
_DEFAULT_AGENT = "ckptcompat.agents.split_lstm.SplitLSTMAgent"  # = rl.trainer_config.DEFAULT_AGENT
_DEFAULT_ENV = "CartPole-v1"
_OUTCOMES = {EXIT_OK: "pass", EXIT_FAILED: "fail", EXIT_USAGE: "error"}
Body = Callable[[], tuple[str | None, dict[str, Any], str]]


def env_ids() -> tuple[str, ...] | None:
    """The supported env ids (:data:`ckptcompat.rl.envs.ENV_SPECS`); None without gymnasium."""
    try:
        from ckptcompat.rl.envs import ENV_SPECS
    except ModuleNotFoundError:
        return None
    return tuple(sorted(ENV_SPECS))


# --------------------------------------------------------------------------- records
def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _label(class_path: str | None) -> str:
    return (class_path or "unknown").rsplit(".", 1)[-1]


def _finish(step: str, class_path: str | None, code: int, detail: str, started: float,
            outputs: dict[str, Any] | None = None, *, summary: bool = True) -> int:  # fmt: skip
    """Print the record (stdout, last line) and the summary (stderr); return ``code``."""
    outcome = _OUTCOMES[code]
    rank = os.environ.get("RANK", "0")
    if rank != "0" and launched_world_size() is not None:
        # Rank 0 speaks for the run (one record per step); another rank only says why it
        # failed, on stderr, since rank 0 may then die in a collective without a record.
        if code != EXIT_OK:
            print(f"ckptcompat run {step}: rank {rank}: {outcome}: {detail}", file=sys.stderr)
        return code
    try:
        from ckptcompat.harness.verdict.records import make_record

        torch_v, numpy_v = _installed("torch"), _installed("numpy")
        record = make_record(
            scenario=f"run_{step}",
            artifact="safe_v1",
            agent=_label(class_path),
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
    except ModuleNotFoundError as exc:  # no jsonschema: the summary still says what happened
        detail += f" (no record: {exc.name} is not installed)"
    else:
        print(json.dumps(record.to_dict(), sort_keys=True), flush=True)
    if summary:
        line = " ".join(detail.split())
        print(f"ckptcompat run {step}: {outcome}: {line}", file=sys.stderr, flush=True)
    return code


def usage_record(argv: Sequence[str], message: str) -> None:
    """The ``error`` record of a ``run`` command line argparse refused (if it names a step)."""
    after = list(argv)[list(argv).index("run") + 1 :] if "run" in argv else []
    step = next((a for a in after if not a.startswith("-")), None)
    if step in STEPS:
        # argparse has printed the one-line summary ("ckptcompat run STEP: error: ...").
        _finish(step, None, EXIT_USAGE, f"usage: {message}", time.perf_counter(), summary=False)


def _step(step: str, body: Body) -> int:
    """Run one step: a record and a summary whatever happens; a bug still raises."""
    started = time.perf_counter()
    try:
        class_path, outputs, detail = body()
    except Exception as exc:
        error = typed(exc)
        code = exit_code(error)
        if code is None:
            _finish(step, None, EXIT_FAILED, f"internal error: {type(exc).__name__}", started)
            raise
        return _finish(step, None, code, f"{type(error).__name__}: {error}", started)
    return _finish(step, class_path, EXIT_OK, detail, started, outputs)


# --------------------------------------------------------------------------- steps
def _outputs(uri: str | None, epoch: int, agent_step: int, agent: Any) -> dict[str, Any]:
    from ckptcompat.agents.probe import params_digest

    digest = params_digest(agent)
    return {"uri": uri, "epoch": epoch, "agent_step": agent_step, "params_digest": digest}


def _world_size(args: argparse.Namespace) -> int:
    """``--nproc``, checked against torchrun's ``WORLD_SIZE`` when a launcher started us."""
    launched = launched_world_size()
    if launched is not None and args.nproc is not None and launched != args.nproc:
        raise InputError(
            "--nproc does not match the launcher's world size",
            expected=f"--nproc {launched} (torchrun's WORLD_SIZE), or no --nproc",
            found=f"--nproc {args.nproc}",
            fix="drop --nproc under your own torchrun, or let ckptcompat start torchrun",
        )
    return args.nproc or launched or 1


@contextmanager
def _rank_session() -> Iterator[Any]:
    """This process's distributed context (:func:`ckptcompat.rl.distributed.from_environment`),
    left alive on the way out: a torchrun rank of ``run train|resume`` ends through
    :func:`_rank_exit` (``os._exit``) right after its record, and the gloo group dies with it.

    Destroying the group first deadlocked on torch 2.4.1 (CI, 2026-12-06: a two-rank
    ``run resume`` hung until the test's 300 s timeout; rank 1 had exited, rank 0 sat in
    ``destroy_process_group``). ``~ProcessGroupGloo`` joins its worker thread while holding
    the GIL, and the worker, freeing the trainer's final barrier work, needs the GIL to drop
    the Python object of a tensor that work still referenced (py-spy --native of the stuck
    rank). The trainer's last act is that barrier, so every rank's files are complete when
    the first rank leaves. A single process (no torchrun) gets the one-process context.
    """
    from ckptcompat.rl.distributed import from_environment

    yield from_environment()


def _rank_exit(code: int) -> int:
    """``code``; but a torchrun rank (``WORLD_SIZE`` > 1) ends here, without teardown.

    A rank has passed the trainer's final barrier (:func:`_rank_session`) and written
    every file by now. Its interpreter's teardown sometimes aborts it
    ("terminate called without an active exception", SIGABRT) -- seen on 2.5.1 in CI (7
    tests of one cell) and on 2.15.0 in the matrix -- and torchrun then stops rank 0 before
    it prints its record, failing the whole run. So the rank leaves through
    :func:`ckptcompat.rl.distributed.exit_without_teardown`, as the matrix's DCP phase and
    the DCP golden runs do.
    """
    if (launched_world_size() or 1) > 1:
        from ckptcompat.rl.distributed import exit_without_teardown

        exit_without_teardown(code)
    return code


def _relaunch(step: str, args: argparse.Namespace, argv: list[str]) -> int:
    """Run this step under torchrun with ``--nproc`` processes; pass rank 0's record on."""
    started = time.perf_counter()
    code, stdout = launch(step, [*argv, "--nproc", str(args.nproc)], args.nproc)
    found = record_outcome(stdout)
    if found is None:
        detail = f"torchrun exited {code} with no result record from rank 0 (see stderr)"
        return _finish(step, None, EXIT_FAILED, detail, started)
    return found[1]


def train_step(args: argparse.Namespace) -> int:
    if (args.nproc or 1) > 1 and launched_world_size() is None:
        argv = [
            *("--run", args.run, "--dir", args.dir, "--epochs", str(args.epochs)),
            *("--agent", args.agent, "--agent-kwargs", json.dumps(args.agent_kwargs)),
            *("--env", args.env, "--seed", str(args.seed)),
            *("--checkpoint-every", str(args.checkpoint_every)),
            *("--checkpoint-format", args.checkpoint_format),
        ]
        return _relaunch("train", args, argv)

    def body() -> tuple[str | None, dict[str, Any], str]:
        check_run_name(args.run)
        _world_size(args)
        from ckptcompat.agents.registry import resolve_agent_class
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager
        from ckptcompat.errors import AgentMismatchError
        from ckptcompat.rl.trainer import train
        from ckptcompat.rl.trainer_config import TrainerConfig

        try:
            resolve_agent_class(args.agent)
            config = TrainerConfig(
                env_id=args.env,
                seed=args.seed,
                checkpoint_every=args.checkpoint_every,
                agent_class_path=args.agent,
                agent_kwargs=args.agent_kwargs,
            )
        except (AgentMismatchError, ValueError) as exc:  # --agent, --agent-kwargs
            raise as_input(exc) from exc
        with _rank_session() as dist:
            result = train(
                config,
                args.run,
                args.dir,
                args.epochs,
                progress=False,
                dist=dist,
                checkpoint_format=args.checkpoint_format,
            )
        if not dist.is_main:
            return args.agent, {}, ""
        agent = SimpleCheckpointManager(args.run, args.dir).load_agent(result.epoch)
        detail = f"trained run {args.run!r} to epoch {result.epoch} in {result.total_time_s:.1f} s"
        if dist.distributed:
            detail += f" on {dist.world_size} processes"
        outputs = _outputs(result.uri, result.epoch, result.agent_step, agent)
        outputs |= {"world_size": dist.world_size, "checkpoint_format": args.checkpoint_format}
        return args.agent, outputs, detail

    return _rank_exit(_step("train", body))


def resume_step(args: argparse.Namespace) -> int:
    if (args.nproc or 1) > 1 and launched_world_size() is None:
        argv = [
            *("--run", args.run, "--dir", args.dir, "--epochs", str(args.epochs)),
            *("--from", args.source),
        ]
        return _relaunch("resume", args, argv)

    def body() -> tuple[str | None, dict[str, Any], str]:
        check_run_name(args.run)
        _world_size(args)
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager
        from ckptcompat.rl.trainer import resume

        with _rank_session() as dist:
            result = resume(
                args.run, args.dir, args.epochs, progress=False, dist=dist, source=args.source
            )
        if not dist.is_main:
            return None, {}, ""
        if result.uri is None:
            raise InputError(
                "nothing to resume: no epoch was trained",
                expected=f"a run below the target of {args.epochs} epochs",
                found=f"run {args.run!r} already at epoch {result.epoch}",
                fix="pass a larger --epochs (it is the target total, not a count)",
            )
        agent = SimpleCheckpointManager(args.run, args.dir).load_agent(result.epoch)
        class_path = f"{type(agent).__module__}.{type(agent).__qualname__}"
        contract = result.contract
        detail = f"resumed run {args.run!r} to epoch {result.epoch}"
        detail += f" on {dist.world_size} process{'es' if dist.distributed else ''}"
        if contract is not None:
            detail += f", contract {contract.kind}"
            detail += f" ({contract.reason})" if contract.reason else ""
        outputs = _outputs(result.uri, result.epoch, result.agent_step, agent)
        outputs |= {
            "world_size": dist.world_size,
            "contract": None if contract is None else contract.to_json(),
            "losses": result.stats,
        }
        return class_path, outputs, detail

    return _rank_exit(_step("resume", body))


def _env_of(uri: str) -> str:
    """The env a checkpoint was trained on, from its run's trainer state; CartPole-v1 else."""
    from ckptcompat.checkpoint.layout import run_dir_of
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.uri import resolve

    resolved = resolve(uri)
    if resolved.path is None or resolved.entry is None:
        return _DEFAULT_ENV
    run_dir = run_dir_of(resolved.path)
    manager = SimpleCheckpointManager(run_dir.name, run_dir.parent)
    state = manager.load_trainer_state(restore_rng=False)
    config = (state.extra or {}).get("trainer_config", {}) if state is not None else {}
    return str(config.get("env_id", _DEFAULT_ENV))


def evaluate_step(args: argparse.Namespace) -> int:
    def body() -> tuple[str | None, dict[str, Any], str]:
        check_db(args.db)
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager
        from ckptcompat.checkpoint.uri import resolve
        from ckptcompat.evaluation.evaluator import evaluate_policy

        resolved = resolve(on_disk(args.uri))  # pin :latest once, so every step sees one file
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
        episodes = f"{args.episodes} episode{'s' if args.episodes != 1 else ''}"
        detail = (
            f"{episodes} of {result.policy_key}:v{result.policy_version} on {env_id}: "
            f"mean return {result.mean_return:.1f}"
        )
        return class_path, outputs, detail

    return _step("evaluate", body)
