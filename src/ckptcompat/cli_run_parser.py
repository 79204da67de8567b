"""The command line of ``ckptcompat run train|resume|evaluate``: arguments, help and defaults.

The steps themselves are :mod:`ckptcompat.cli_run`'s; this module only says which
arguments each takes (``--nproc`` for ``train`` and ``resume``, ``--checkpoint-format`` for
``train``, ``--from`` for ``resume``).
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence
from typing import Any

from ckptcompat.cli_common import HelpFormatter, int_at_least, json_object
from ckptcompat.cli_run import (
    _DEFAULT_AGENT,
    _DEFAULT_ENV,
    evaluate_step,
    resume_step,
    train_step,
)

__all__ = ["add_run_parser"]


# --------------------------------------------------------------------------- parser
def _env_help(ids: Sequence[str] | None, default: str) -> str:
    listed = ", ".join(ids) if ids else "(listing them needs gymnasium, not installed here)"
    return f"gymnasium env id, one of: {listed} ({default})"


def _run_dir_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run",
        required=True,
        metavar="RUN",
        help="run name: letters, digits, '.', '_', '-' (required)",
    )
    parser.add_argument(
        "--dir", required=True, metavar="DIR", help="data_dir: the run is DIR/RUN/ (required)"
    )
    parser.add_argument(
        "--epochs",
        required=True,
        metavar="N",
        type=int_at_least(1),
        help="target total epochs, >= 1, not a count of new ones (required)",
    )


def _nproc_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--nproc",
        type=int_at_least(1),
        default=None,
        metavar="N",
        help="processes (DDP ranks, gloo on CPU); N > 1 starts torchrun with this python "
        "(default: 1, or WORLD_SIZE under your own torchrun)",
    )


def add_run_parser(sub: Any, ids: Sequence[str] | None, *, epilog: str) -> None:
    """Add ``run`` and its steps to the subparsers ``sub`` (``ids``: the supported env ids)."""
    formatter = HelpFormatter
    run = sub.add_parser(
        "run",
        help="one harness step: train, resume or evaluate",
        description=textwrap.fill(
            "One harness step per process. Each prints one JSON result record as its last "
            "stdout line and a one-line summary on stderr.",
            80,
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    steps = run.add_subparsers(dest="step", required=True, metavar="STEP")
    train = steps.add_parser(
        "train",
        help="start a run and train it to --epochs",
        epilog=epilog,
        formatter_class=formatter,
    )
    _run_dir_args(train)
    train.add_argument(
        "--agent",
        default=_DEFAULT_AGENT,
        metavar="CLASS_PATH",
        help="agent class, package.module.Class, e.g. ckptcompat.agents.mlp.MLPAgent "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--agent-kwargs",
        default={},
        type=json_object,
        metavar="JSON",
        help='constructor arguments besides the spaces, a JSON object, e.g. {"hidden_size": 32} '
        "(default: {})",
    )
    train.add_argument(
        "--env",
        default=_DEFAULT_ENV,
        choices=ids,
        metavar="ENV_ID",
        help=_env_help(ids, "default: %(default)s"),
    )
    train.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="seeds torch, numpy and python once, and (plus the epoch) the env resets; >= 0 "
        "(default: %(default)s)",
    )
    train.add_argument(
        "--checkpoint-every",
        type=int_at_least(1),
        default=1,
        metavar="N",
        help="save agent and trainer state every N epochs, >= 1 (default: %(default)s)",
    )
    train.add_argument(
        "--checkpoint-format",
        choices=("safe", "dcp"),
        default="safe",
        help="safe: rank 0 writes the safe format; dcp: that, and every rank writes a "
        "torch.distributed.checkpoint directory beside it (default: %(default)s)",
    )
    _nproc_arg(train)
    train.set_defaults(func=train_step)

    res = steps.add_parser(
        "resume", help="resume a run to --epochs in total", epilog=epilog, formatter_class=formatter
    )
    _run_dir_args(res)
    res.add_argument(
        "--from",
        dest="source",
        choices=("safe", "dcp"),
        default="safe",
        help="take the agent and optimizer state from the safe files or from the epoch's "
        "DCP directory (RNG streams and counters come from the safe trainer state) "
        "(default: %(default)s)",
    )
    _nproc_arg(res)
    res.set_defaults(func=resume_step)

    ev = steps.add_parser(
        "evaluate",
        help="evaluate a checkpoint into a stats DB",
        epilog=epilog,
        formatter_class=formatter,
    )
    ev.add_argument(
        "--uri",
        required=True,
        metavar="URI",
        help="the checkpoint: a .pt path, DIR/RUN:latest, DIR/RUN:vN, a run directory, or "
        "mock://KEY[:vN] (required)",
    )
    ev.add_argument(
        "--db",
        required=True,
        metavar="FILE",
        help="DuckDB file to write, created if missing; its directory must exist (required)",
    )
    ev.add_argument(
        "--episodes",
        type=int_at_least(1),
        default=5,
        metavar="N",
        help="episodes to run, >= 1 (default: %(default)s)",
    )
    ev.add_argument(
        "--seed",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="episode i resets its env with SEED + i; >= 0 (default: %(default)s)",
    )
    ev.add_argument(
        "--env",
        choices=ids,
        metavar="ENV_ID",
        help=_env_help(ids, "default: the run's trainer config, else CartPole-v1"),
    )
    ev.set_defaults(func=evaluate_step)
