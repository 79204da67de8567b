"""``ckptcompat migrate DIR DATA_DIR``: every checkpoint of a directory, one report per file.

Each entry of ``DIR`` is dispatched on what it is, in name order, subdirectories walked
depth-first (a team's store keeps one folder per run: ``store/<run>/checkpoints/...``):

* a G3 ``.mpt`` or a G4 bundle -> :func:`ckptcompat.generations.migrate.migrate_generation`;
* a DCP directory -> :func:`ckptcompat.checkpoint.dcp_migrate.migrate_dcp`;
* a Lightning ``.ckpt``, a stable-baselines3 ``.zip`` or a Hugging Face
  ``pytorch_model.bin`` (:func:`ckptcompat.generations.families.detect_family`) ->
  :func:`ckptcompat.generations.family_migrate.migrate_family` (nothing of the file run);
* a ``.pt``/``.pth`` file (G1, G2, a state_dict, a safe-format file) ->
  :func:`ckptcompat.checkpoint.migrate.migrate` (``trust`` as given: never by default);
* a Hugging Face Trainer file that holds no model (``training_args.bin``,
  ``optimizer.pt``, ``scheduler.pt``, ``rng_state.pth``) is skipped: "not a model: this
  is ...";
* anything else is skipped with the reason: a trainer state (``<run>_v<E>.trainer.pt``;
  migrate converts agents), ``index.json``, hidden and temporary files and folders, other
  suffixes, symbolic links (never followed, as in ``ckptcompat doctor DIR``: a link can
  leave the tree or loop; migrate its target), FIFOs and devices (never opened), folders
  deeper than :data:`MAX_DEPTH`;
* the DCP twin ``<run>_v<E>.dcp`` of a ``<run>_v<E>.pt`` in the same folder (a run saved
  with ``checkpoint_format="dcp"`` writes both from one save, see
  :mod:`ckptcompat.rl.trainer_config`) is skipped: the ``.pt`` is migrated, and the two
  would otherwise collide on the same epoch.

A typed ckptcompat error fails that file only (its class and message are the reason); the
others go on. ``class_path``/``config`` are a fallback: each file is first migrated with
what it says itself, and only an agent it cannot name or an architecture off the
allowlist is retried with them, so one flag serves a directory that mixes a team's bare
state_dicts with self-describing files. With ``run`` every file goes to that one run
(two files of the same epoch: the second fails, migrate never overwrites).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ckptcompat.checkpoint.layout import (
    DCP_DIR_RE,
    INDEX_NAME,
    TRAINER_FILE_RE,
    agent_filename,
    is_dcp_dir,
    is_temp_name,
)
from ckptcompat.checkpoint.migrate import UNKNOWN_RUN_EPOCH, MigrationReport
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    InputError,
    UnsafeCheckpointError,
)
from ckptcompat.generations.detect import generation_of
from ckptcompat.generations.families import detect_family, not_a_model
from ckptcompat.generations.family_migrate import FamilyMigrationReport

__all__ = [
    "MAX_DEPTH",
    "FileResult",
    "migrate_checkpoint",
    "migrate_directory",
    "render_report",
    "render_results",
]

#: The deepest folder walked below ``DIR`` (``DIR`` itself is depth 0); deeper folders are
#: reported skipped, so a hostile tree cannot make the walk unbounded.
MAX_DEPTH = 32

Outcome = Literal["migrated", "skipped", "failed"]
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
_Migrate = Callable[[str | None, dict[str, Any] | None], MigrationReport]


@dataclass(frozen=True)
class FileResult:
    """What happened to one entry of the directory.

    Attributes:
        name: the entry's path relative to the directory, ``/``-separated
            (``run1/checkpoints/run1_v3.pt``).
        outcome: ``migrated``, ``skipped`` or ``failed``.
        generation: ``g1``, ``g2``, ``state_dict``, ``safe_v1``, ``dcp``, ``g3``, ``g4``,
            ``lightning``, ``sb3``, ``hf_model``; ``None`` when skipped or unknown.
        detail: the destination URI (migrated) or the reason (skipped, failed).
    """

    name: str
    outcome: Outcome
    generation: str | None
    detail: str


def _skip_reason(path: Path) -> str | None:
    name = path.name
    if path.is_symlink():
        return "a symbolic link: not followed (migrate its target)"
    if name.startswith(".") or is_temp_name(name):
        return "hidden or temporary entry"
    if name == INDEX_NAME:
        return "a run index; the destination run writes its own"
    if TRAINER_FILE_RE.match(name):
        return "a trainer state (optimizer, RNG); migrate converts agents"
    dcp = DCP_DIR_RE.match(name)
    if dcp and (path.parent / agent_filename(dcp["run"], int(dcp["epoch"]))).is_file():
        twin = agent_filename(dcp["run"], int(dcp["epoch"]))
        return f"the DCP twin of {twin} (one save wrote both); {twin} is migrated"
    if path.is_dir():
        return None  # a checkpoint directory, or a folder to walk
    if not path.is_file():  # a FIFO blocks open() forever, /dev/zero never ends
        return "not a regular file (a FIFO, socket or device): never opened"
    what = not_a_model(path)
    if what is not None:
        return f"not a model: this is {what}"
    if (
        path.suffix not in _PICKLE_SUFFIXES
        and generation_of(path) is None
        and detect_family(path) is None
    ):
        return (
            f"not a checkpoint suffix ({path.suffix or 'none'}; .pt, .pth, .ckpt, .bin, "
            ".mpt, bundles, stable-baselines3 .zip)"
        )
    return None


def _with_fallback(
    migrate: _Migrate, class_path: str | None, config: dict[str, Any] | None
) -> MigrationReport:
    try:
        return migrate(None, None)
    except (AgentMismatchError, UnsafeCheckpointError):
        if class_path is None and config is None:
            raise
        return migrate(class_path, config)


def migrate_checkpoint(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    run: str | None = None,
    epoch: int | None = None,
    trust: bool = False,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
    submodule: str | None = None,
) -> MigrationReport:
    """``ckptcompat migrate SRC DST`` for one checkpoint: dispatch on what ``src`` is.

    A G3 ``.mpt`` or G4 bundle goes to
    :func:`~ckptcompat.generations.migrate.migrate_generation` (safetensors, nothing
    unpickled), a DCP directory to :func:`~ckptcompat.checkpoint.dcp_migrate.migrate_dcp`
    (no trust needed), a Lightning / stable-baselines3 / Hugging Face file to
    :func:`~ckptcompat.generations.family_migrate.migrate_family` (which returns a
    :class:`~ckptcompat.generations.family_migrate.FamilyMigrationReport`), anything else
    to :func:`ckptcompat.checkpoint.migrate.migrate` (``trust`` as given). The arguments
    are theirs; the errors are theirs too (typed
    :class:`~ckptcompat.errors.CheckpointError` subclasses).

    Raises:
        InputError: ``submodule`` for a source that is none of those libraries' files.
    """
    family = detect_family(src)
    if family is not None:
        from ckptcompat.generations.family_migrate import migrate_family

        return migrate_family(
            src, dst, class_path=class_path, config=config, submodule=submodule,
            trust=trust, run=run, epoch=epoch, family=family,
        )  # fmt: skip
    if submodule is not None:
        raise InputError(
            "--submodule selects the keys of a Lightning, stable-baselines3 or Hugging Face "
            "file's state_dict",
            path=os.fspath(src),
            found="a file of none of these libraries",
            fix="drop --submodule (DDP's module. and torch.compile's _orig_mod. prefixes "
            "are stripped without it)",
        )
    if generation_of(src) is not None:  # reads the zip directory, bounded
        from ckptcompat.generations.migrate import migrate_generation

        return migrate_generation(
            src, dst, run=run, epoch=epoch, class_path=class_path, config=config
        )
    if is_dcp_dir(src):
        from ckptcompat.checkpoint.dcp_migrate import migrate_dcp

        return migrate_dcp(src, dst, run=run, epoch=epoch, class_path=class_path, config=config)
    from ckptcompat.checkpoint.migrate import migrate

    return migrate(
        src, dst, trust=trust, run=run, epoch=epoch, class_path=class_path, config=config
    )


def render_report(report: MigrationReport) -> str:
    """What ``ckptcompat migrate`` prints for one checkpoint (ends with a newline)."""
    lines = [
        f"migrated {report.source} ({report.generation}, loader={report.loader})",
        f"  -> {report.destination}  run={report.run} epoch={report.epoch}",
    ]
    if isinstance(report, FamilyMigrationReport):
        lines.insert(1, f"  {report.what}")
    if report.stripped_prefix:
        lines.append(f"  renamed: stripped {report.stripped_prefix!r} from every state_dict key")
    if isinstance(report, FamilyMigrationReport):
        lines.extend(_family_lines(report))
    lines.append(f"  outputs equal on the probe batch: {report.outputs_equal}")
    return "\n".join(lines) + "\n"


def _family_lines(report: FamilyMigrationReport) -> list[str]:
    def listed(items: tuple[str, ...], sep: str = ", ", limit: int = 12) -> str:
        more = len(items) - limit
        return sep.join(items[:limit]) + (f" and {more} more" if more > 0 else "")

    lines = []
    if report.hyperparameters:
        lines.append(
            f"  hyperparameters kept (metadata.extra.hyperparameters): "
            f"{listed(report.hyperparameters)}"
        )
    if report.reported and report.loader == "trusted":  # --trust unpickled them for real
        lines.append("  pickled objects not migrated (unpickled with --trust: their code ran):")
        lines.extend(f"    {line}" for line in report.reported[:20])
    elif report.reported:
        lines.append("  pickled objects reported, never run (not migrated):")
        lines.extend(f"    {line}" for line in report.reported[:20])
    if report.allowlist:
        lines.append(
            f"  read as inert stand-ins (nothing imported or run): {listed(report.allowlist)}"
        )
    if report.left_behind:
        lines.append(f"  left behind (not weights): {listed(report.left_behind)}")
    if report.dropped:
        lines.append(f"  dropped state_dict entries that are not tensors: {listed(report.dropped)}")
    return lines


def _entries(folder: Path, depth: int) -> Iterator[tuple[Path, str | None]]:
    """``(path, skip reason or None)`` for every entry under ``folder``, depth-first in name
    order; a checkpoint directory (G4 bundle, DCP) is one entry, other folders are walked."""
    for path in sorted(folder.iterdir()):
        reason = _skip_reason(path)
        is_folder = (
            reason is None
            and path.is_dir()
            and generation_of(path) is None
            and not is_dcp_dir(path)
        )
        if not is_folder:
            yield path, reason
        elif depth >= MAX_DEPTH:
            yield path, f"a folder deeper than {MAX_DEPTH} levels: not walked"
        else:
            yield from _entries(path, depth + 1)


def _failure_detail(exc: CheckpointError) -> str:
    """One failed file's detail; a missing run/epoch gets a fix that works for a directory.

    The one-file fix, "--run/--epoch", sent a user in circles: ``migrate DIR`` refuses
    ``--epoch`` (it would give every file the same one) (a new user's trial, 2026-12-07).
    """
    if isinstance(exc, InputError) and exc.problem == UNKNOWN_RUN_EPOCH:
        return (
            f"{type(exc).__name__}: {exc.problem}; found {exc.found}. Rename it with its "
            "epoch (e.g. <run>:v<E>.pt or model_<NNNN>.pt), or migrate it alone: "
            "ckptcompat migrate FILE DST --run RUN --epoch E, with the --class-path, "
            "--config, --submodule or --trust given here"
        )
    return f"{type(exc).__name__}: {exc}"


def migrate_directory(
    src: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    run: str | None = None,
    trust: bool = False,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
    submodule: str | None = None,
) -> tuple[FileResult, ...]:
    """Migrate every checkpoint in ``src`` into the safe format under ``data_dir``.

    Args:
        src: a directory of mixed generations, walked recursively (bundles and DCP
            directories are checkpoints, not walked; links never followed).
        data_dir: where the safe runs go (``<data_dir>/<run>/checkpoints/``).
        run: put every file in this run (default: each file's own run).
        trust: let the legacy reader fall back to ``weights_only=False`` (see
            :func:`ckptcompat.checkpoint.migrate.migrate`).
        class_path, config: the fallback agent (see the module docstring).
        submodule: for Lightning, stable-baselines3 and Hugging Face files only (others
            are migrated without it), see :func:`migrate_checkpoint`.

    Returns:
        One :class:`FileResult` per entry, depth-first in name order; an empty folder
        adds none.

    Raises:
        InputError: ``src`` is not a directory, ``data_dir`` lies inside it, or no entry of
            ``src`` is a checkpoint (an empty directory): nothing was checked.
    """
    src_dir, dst = Path(src), Path(data_dir)
    if not src_dir.is_dir():
        raise InputError("migrate DIR needs a directory", path=src_dir, found="no directory")
    if dst.resolve().is_relative_to(src_dir.resolve()):
        raise InputError(
            "the destination lies inside the directory being migrated",
            path=dst,
            expected="a DATA_DIR outside DIR",
            fix="choose a DATA_DIR elsewhere",
        )
    results = []
    for path, reason in _entries(src_dir, 0):
        name = path.relative_to(src_dir).as_posix()
        if reason is not None:
            results.append(FileResult(name, "skipped", None, reason))
            continue
        try:
            report = _with_fallback(
                lambda cp, cfg, p=path: migrate_checkpoint(
                    p,
                    dst,
                    run=run,
                    trust=trust,
                    class_path=cp,
                    config=cfg,
                    submodule=submodule if submodule and detect_family(p) else None,
                ),
                class_path,
                config,
            )
        except CheckpointError as exc:
            results.append(FileResult(name, "failed", None, _failure_detail(exc)))
            continue
        detail = f"{report.destination} (run {report.run}, epoch {report.epoch})"
        if report.stripped_prefix:  # as the one-file report says it
            detail += f"; renamed: stripped {report.stripped_prefix!r} from every key"
        results.append(FileResult(name, "migrated", report.generation, detail))
    if all(r.outcome == "skipped" for r in results):
        raise InputError(
            "the directory holds no checkpoint to migrate",
            path=src_dir,
            expected="checkpoint files (.pt, .pth, .mpt), G4 bundles or DCP directories",
            found=f"{len(results)} entries, none a checkpoint"
            + (f" ({results[0].name}: {results[0].detail})" if results else ""),
            fix="pass a directory of checkpoints, or one checkpoint file",
        )
    return tuple(results)


def render_results(src: str, data_dir: str, results: tuple[FileResult, ...]) -> str:
    """The per-file report: a count line, then ``outcome  name  generation  detail``."""
    counts = {o: sum(r.outcome == o for r in results) for o in ("migrated", "skipped", "failed")}
    lines = [
        f"migrate {src} -> {data_dir}: "
        + ", ".join(f"{n} {outcome}" for outcome, n in counts.items())
    ]
    width = max((len(r.name) for r in results), default=0)
    for r in results:
        lines.append(f"  {r.outcome:<8}  {r.name:<{width}}  {r.generation or '-':<10}  {r.detail}")
    return "\n".join(lines) + "\n"
