"""The ``ckptcompat`` command line.

Subcommands import what they need when they run: ``ckptcompat --help``, ``--version`` and
``ckptcompat doctor`` import neither torch nor numpy, so they also run where ckptcompat was
installed without its dependencies (the matrix's report venv); a command that needs torch
says so there and exits 2.

* ``doctor PATH... [--json] [--verify-data]`` -- why a file loads or fails on each
  torch version, statically; several paths or a directory: one line per file;
* ``migrate SRC DST [--trust]`` -- any generation to the safe format, verified equal;
* ``run train|resume|evaluate`` -- steps the harness chains across venvs
  (:mod:`ckptcompat.cli_run`); each prints one result record (docs/design.md section 8) as its last
  stdout line and a one-line summary on stderr;
* ``eval submit|worker|status|collect|report`` -- remote evaluation through a PostgreSQL
  task queue (:mod:`ckptcompat.cli_eval`).

Exit codes, the same for every subcommand (:func:`ckptcompat.cli_common.exit_code`): 0
pass, 1 the check failed (a typed ckptcompat error about a checkpoint that exists), 2 bad
input or usage (argparse errors, :class:`~ckptcompat.errors.InputError`, a checkpoint that
does not exist, a missing dependency). A bug still ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import textwrap
import warnings
from collections.abc import Iterator, Sequence
from importlib import metadata
from typing import Any, NoReturn, TextIO

from ckptcompat import __version__
from ckptcompat.checkpoint.layout import is_dcp_dir
from ckptcompat.cli_common import (
    EXIT_CODES_HELP,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    HelpFormatter,
    check_run_name,
    exit_code,
    int_at_least,
    json_object,
    typed,
)
from ckptcompat.errors import CheckpointNotFoundError, InputError

__all__ = ["main"]

_DESCRIPTION = (
    "Checkpoint compatibility of RL agents across torch versions: explain why a checkpoint "
    "loads or fails on each torch 2.4-2.15, migrate it to the safe format, or run one "
    "harness step (train, resume, evaluate)."
)
_WIDTH = 80  # columns of the descriptions (the epilogs are laid out by hand)
_EXAMPLES = """\
examples:
  ckptcompat doctor old_agent.pt
  ckptcompat migrate old_agent.pt data/
  ckptcompat run train --run r --dir data --epochs 4
  ckptcompat run evaluate --uri data/r:latest --db eval.duckdb

"""


class _UsageError(Exception):
    """An argparse error, raised instead of exiting so that ``main`` can report it."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(self, message)


class _Version(argparse.Action):
    """``--version``: ckptcompat's version and, read from metadata, torch's and python's."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        try:
            torch = metadata.version("torch")
        except metadata.PackageNotFoundError:
            torch = "not installed"
        python = ".".join(map(str, sys.version_info[:3]))
        print(f"ckptcompat {__version__} (torch {torch}, python {python})")
        parser.exit()


# ---------------------------------------------------------------------------- doctor
def _doctor(args: argparse.Namespace) -> int:
    from ckptcompat.doctor import command

    return command.run(
        args.paths,
        as_json=args.json,
        verify_data=args.verify_data,
        python=args.python,
        numpy_major=args.numpy,
    )


# ---------------------------------------------------------------------------- migrate
def _check_source(src: str) -> None:
    if os.path.isfile(src) or os.path.isdir(src):
        return
    raise CheckpointNotFoundError(
        "no checkpoint file here",
        path=src,
        expected="an existing checkpoint file or directory",
        # A FIFO blocks open() forever and /dev/zero never ends: neither is read.
        found="not a regular file (a FIFO, socket or device)"
        if os.path.exists(src)
        else "nothing at this path",
        fix="check the path",
    )


def _migrate_directory(args: argparse.Namespace) -> int:
    """``migrate DIR DATA_DIR``: every checkpoint of DIR, a per-file report (issue 22)."""
    from ckptcompat.generations.batch import migrate_directory, render_results

    if args.epoch is not None:
        raise InputError(
            "--epoch names one checkpoint; DIR holds many",
            path=args.src,
            fix="drop --epoch: each file's epoch comes from its name or metadata",
        )
    results = migrate_directory(
        args.src,
        args.dst,
        run=args.run,
        trust=args.trust,
        class_path=args.class_path,
        config=args.config,
        submodule=args.submodule,
    )
    sys.stdout.write(render_results(args.src, args.dst, results))
    return EXIT_FAILED if any(r.outcome == "failed" for r in results) else EXIT_OK


def _migrate(args: argparse.Namespace) -> int:
    _check_source(args.src)
    from ckptcompat.generations.batch import migrate_checkpoint, render_report
    from ckptcompat.generations.detect import generation_of

    if args.run is not None:
        check_run_name(args.run)
    if os.path.isdir(args.src) and not is_dcp_dir(args.src) and generation_of(args.src) is None:
        return _migrate_directory(args)
    report = migrate_checkpoint(
        args.src,
        args.dst,
        run=args.run,
        epoch=args.epoch,
        trust=args.trust,
        class_path=args.class_path,
        config=args.config,
        submodule=args.submodule,
    )
    sys.stdout.write(render_report(report))
    return EXIT_OK


# ---------------------------------------------------------------------------- parser
def _subparser(sub: Any, name: str, help: str, description: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=help,
        description=textwrap.fill(description, _WIDTH),
        epilog=EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    return parser


def _add_doctor(sub: Any) -> None:
    doctor = _subparser(
        sub,
        "doctor",
        "explain, without unpickling, where PATH loads",
        "Predict how a plain torch.load and torch.load(weights_only=True) of FILE fare on each "
        "torch 2.4-2.15, without loading it: a one-line verdict, a table per version, the "
        "allowlist or migrate command that fixes it, or why it must not be loaded. A "
        "torch.distributed.checkpoint directory gets its keys, shapes, dtypes, files and a "
        "prediction per torch version instead. Several paths, or a directory (searched "
        "recursively), give one summary line per file (with --json, one JSON object per line).",
    )
    doctor.add_argument(
        "paths",
        metavar="PATH",
        nargs="+",
        help="the checkpoint to examine, or a DCP directory (never unpickled); several "
        "paths or a directory of checkpoints (searched recursively) give one summary line "
        "per file, and exit 2 when any could not be read",
    )
    doctor.add_argument(
        "--json",
        action="store_true",
        help="print the diagnosis, or the error, as JSON on stdout (default: text); for "
        "several files, one JSON object per line",
    )
    doctor.add_argument(
        "--verify-data",
        action="store_true",
        help="also read every record and check the zip's CRC-32s (reads the whole file; "
        "default: off, and the report says the tensor bytes were not checked)",
    )
    doctor.add_argument(
        "--python",
        metavar="PATH",
        help="interpreter of the venv that will load FILE: a plain load there fails on a "
        "package the pickle needs that it cannot import (checked with importlib.util."
        "find_spec, no package code runs; default: this environment)",
    )
    doctor.add_argument(
        "--numpy",
        type=int,
        choices=(1, 2),
        help="numpy major of the loading side (1 means numpy 1.26): predict for it alone "
        "(default: both, one row per numpy major where they differ)",
    )
    doctor.set_defaults(func=_doctor)


def _add_migrate(sub: Any) -> None:
    migrate = _subparser(
        sub,
        "migrate",
        "convert any checkpoint generation to the safe format",
        "Read SRC with weights_only=True and the curated allowlist, rebuild its agent, write "
        "it in the safe format and check its outputs equal SRC's on a probe batch. A Metta "
        "G3 .mpt or G4 bundle is read from its safetensors and architecture string, no code "
        "run. A Lightning .ckpt, a stable-baselines3 .zip (its policy.pth) or a Hugging Face "
        "pytorch_model.bin gives its weights and JSON-primitive hyperparameters (kept in "
        "metadata.extra) with the classes it names read as inert stand-ins: pickled objects "
        "and SB3's cloudpickle are reported, never run; pass --class-path and --config. "
        "A plain directory SRC migrates every checkpoint in it into DST (a data_dir) and "
        "reports migrated / skipped / failed per file (exit 1 if any failed).",
    )
    migrate.add_argument(
        "src",
        metavar="SRC",
        help="a G1 model_NNNN.pt, a G2 whole-agent pickle, a state_dict, a G3 .mpt, a G4 "
        "bundle, a DCP directory, a Lightning .ckpt, a stable-baselines3 .zip, a Hugging Face "
        "pytorch_model.bin, or a directory of any of these",
    )
    migrate.add_argument(
        "dst", metavar="DST", help="a .pt file, or a data_dir (then DST/RUN/checkpoints/)"
    )
    migrate.add_argument(
        "--trust",
        action="store_true",
        help="when the curated allowlist (or, for another library's file, its inert "
        "stand-ins) cannot cover SRC, unpickle it with weights_only=False, which runs any "
        "code SRC holds: only for files you trust; SB3's cloudpickle is never run "
        "(default: off)",
    )
    migrate.add_argument(
        "--run",
        metavar="RUN",
        help="run name of the new checkpoint (default: from SRC's name or metadata)",
    )
    migrate.add_argument(
        "--epoch",
        metavar="N",
        type=int_at_least(0),
        help="epoch of the new checkpoint, >= 0 (default: from SRC's name or metadata)",
    )
    migrate.add_argument(
        "--class-path",
        metavar="CLASS_PATH",
        help="agent class to rebuild, package.module.Class (default: the class SRC holds; "
        "required for a bare state_dict and for Lightning, SB3 and Hugging Face files)",
    )
    migrate.add_argument(
        "--config",
        metavar="JSON",
        type=json_object,
        help="the agent's config as a JSON object, spaces included (default: SRC's; required "
        "for a bare state_dict: `ckptcompat doctor SRC` prints it when a safe-format "
        "checkpoint of that agent sits next to SRC)",
    )
    migrate.add_argument(
        "--submodule",
        metavar="NAME",
        help="keep only the state_dict keys under NAME. and strip that prefix, e.g. 'agent' "
        "for a LightningModule holding the net as self.agent (Lightning, stable-baselines3 "
        "and Hugging Face files; default: all keys as saved, DDP's module. and "
        "torch.compile's _orig_mod. stripped)",
    )
    migrate.set_defaults(func=_migrate)


def _parser(env_ids: Sequence[str] | None) -> argparse.ArgumentParser:
    from ckptcompat import cli_eval_parser, cli_run_parser

    parser = _Parser(
        prog="ckptcompat",
        description=textwrap.fill(_DESCRIPTION, _WIDTH),
        epilog=_EXAMPLES + EXIT_CODES_HELP,
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="print versions and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_doctor(sub)
    _add_migrate(sub)
    cli_run_parser.add_run_parser(sub, env_ids, epilog=EXIT_CODES_HELP)
    cli_eval_parser.add_eval_parser(sub, epilog=EXIT_CODES_HELP)
    return parser


def _command(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


@contextlib.contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """Show each warning a command raises as one line, ``PROG: warning: Category: message``.

    Python's default display adds ``FILE:LINE:`` and the source line of the call, which
    made ``migrate --trust``'s TrustedLoadWarning read as a traceback (a new user's trial,
    2026-12-07). Which warnings show is left to the filters (``-W``, PYTHONWARNINGS).
    """

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = " ".join(str(message).split())
        print(f"{prog}: warning: {category.__name__}: {text}", file=file or sys.stderr)

    saved = warnings.showwarning
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = saved


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``ckptcompat``; returns the exit code (see the module docstring)."""
    from ckptcompat import cli_run

    args_list = list(sys.argv[1:] if argv is None else argv)
    is_run = _command(args_list) == "run"
    parser = _parser(cli_run.env_ids() if is_run else None)
    try:
        args = parser.parse_args(args_list)
    except _UsageError as exc:
        exc.parser.print_usage(sys.stderr)
        print(f"{exc.parser.prog}: error: {exc.message}", file=sys.stderr)
        if is_run:
            cli_run.usage_record(args_list, exc.message)
        return EXIT_USAGE
    except SystemExit as exc:  # --help, --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    try:
        with _one_line_warnings(f"ckptcompat {args.command}"):
            return int(args.func(args))
    except Exception as exc:
        error = typed(exc)
        code = exit_code(error)
        if code is None:
            raise
        print(f"ckptcompat {args.command}: {type(error).__name__}: {error}", file=sys.stderr)
        return code


if __name__ == "__main__":
    raise SystemExit(main())
