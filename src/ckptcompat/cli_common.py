"""What every ``ckptcompat`` subcommand shares: exit codes, error typing, input checks.

Imports only the standard library and :mod:`ckptcompat.errors` (the checks import
:mod:`ckptcompat.checkpoint.uri` when they run), so that ``ckptcompat --help`` and
``ckptcompat doctor`` run without torch.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckptcompat.errors import (
    CheckpointError,
    CheckpointNotFoundError,
    InputError,
    MissingDependencyError,
    StatsDBError,
    TaskQueueError,
    UnsupportedEnvError,
)

__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "HelpFormatter",
    "as_input",
    "check_db",
    "check_run_name",
    "exit_code",
    "int_at_least",
    "json_object",
    "on_disk",
    "typed",
]

# DIR/<run>:vN (a run on disk); mock://KEY:vN is left to the evaluator.
_RUN_VERSION = re.compile(r"^(?:(?P<dir>.*)/)?(?P<run>[^/:]+):v(?P<epoch>\d+)$")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: The exit-code table every ``--help`` ends with.
EXIT_CODES_HELP = """\
exit status (every subcommand):
  0  pass (doctor: a report was printed, whatever its verdicts)
  1  the check failed: a checkpoint that does not load, migrate, train or evaluate
  2  bad input or usage: a missing file, run or epoch, a bad option or value, a missing
     dependency; nothing was checked"""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written; option help wrapped, never inside a word.

    argparse's default wraps at hyphens, splitting ids such as ``MiniGrid-Empty-5x5-v0``.
    """

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def exit_code(exc: BaseException) -> int | None:
    """The exit status for ``exc``: 2 bad input, 1 a failed check, None for a bug.

    Bad input: :class:`~ckptcompat.errors.InputError` (a missing dependency included),
    :class:`~ckptcompat.errors.CheckpointNotFoundError`, a stats DB that cannot be used
    (:class:`~ckptcompat.errors.StatsDBError`), an env id that is not supported
    (:class:`~ckptcompat.errors.UnsupportedEnvError`), a task queue that cannot be used
    (:class:`~ckptcompat.errors.TaskQueueError`) and OS errors on the paths given.
    A failed check: any other :class:`~ckptcompat.errors.CheckpointError`.
    """
    bad_input = (
        InputError,
        CheckpointNotFoundError,
        StatsDBError,
        TaskQueueError,
        UnsupportedEnvError,
        OSError,
    )
    if isinstance(exc, bad_input):
        return EXIT_USAGE
    if isinstance(exc, CheckpointError):
        return EXIT_FAILED
    return None


def typed(exc: BaseException) -> BaseException:
    """``exc``, or a :class:`MissingDependencyError` for a third-party module not installed."""
    if isinstance(exc, ModuleNotFoundError) and not (exc.name or "").startswith("ckptcompat"):
        package = (exc.name or "?").split(".")[0]
        return MissingDependencyError(
            f"this command needs {package}, which is not installed in this environment",
            expected=f"ckptcompat installed with its dependencies ({package} included)",
            found=f"{sys.executable} without {package}",
            fix=f"pip install {package}, or run the command in a cell venv (e.g. "
            ".nox/tests-t26/bin/ckptcompat); `ckptcompat doctor` needs neither torch nor numpy",
        )
    return exc


def json_object(text: str) -> dict[str, Any]:
    """argparse type: a JSON object (``--config``, ``--agent-kwargs``)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"invalid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: an int >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"int >= {minimum}"
    return parse


def as_input(exc: Exception, problem: str | None = None) -> InputError:
    if isinstance(exc, CheckpointError):
        return InputError(
            problem or exc.problem,
            path=exc.path,
            expected=exc.expected,
            found=exc.found,
            fix=exc.fix,
        )
    return InputError(problem or str(exc), found=f"{type(exc).__name__}: {exc}")


def check_run_name(run: str) -> None:
    from ckptcompat.checkpoint.layout import validate_run_name

    try:
        validate_run_name(run)
    except CheckpointError as exc:
        raise as_input(exc) from exc


def check_db(db: str) -> None:
    path = Path(db)
    if path.is_dir():
        raise InputError(
            "--db names a directory",
            path=db,
            expected="a DuckDB file path (created if missing)",
            found="a directory",
            fix=f"pass a file inside it, e.g. {path / 'eval.duckdb'}",
        )
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(
            "--db's directory does not exist",
            path=db,
            expected="a file path in an existing directory",
            found=f"no directory {parent}",
            fix=f"create {parent} first, or pick another path",
        )


def on_disk(uri: str) -> str:
    """``DIR/<run>:vN`` -> the checkpoint file of epoch N of that run; other URIs as given.

    Raises:
        CheckpointNotFoundError: no such run, or no checkpoint at epoch N (the epochs there
            are listed).
    """
    match = _RUN_VERSION.match(uri)
    if match is None or "://" in uri or os.path.exists(uri):
        return uri
    from ckptcompat.checkpoint.uri import parse_uri

    return str(parse_uri(uri).path)
