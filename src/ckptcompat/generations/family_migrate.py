"""``migrate`` of a Lightning ``.ckpt``, a stable-baselines3 ``.zip`` or a Hugging Face
``pytorch_model.bin`` into the safe format, nothing of the file run (issue 16).

The weights and JSON-primitive hyperparameters come from :func:`.families.read_family`;
the agent is rebuilt from ``class_path`` + ``config`` (required: these files name no agent
of ours), the weights loaded strictly, then written and verified as any migration
(:func:`ckptcompat.checkpoint.verified_write.write_verified`). The hyperparameters, the
family and what was reported go into the new file's ``metadata.extra``.

A LightningModule's state_dict names its parameters after the attribute holding the net
(``self.agent = Agent()`` saves ``agent.actor.weight``): ``submodule="agent"`` keeps the
keys under ``agent.`` and strips that prefix, reported like a stripped DDP ``module.`` or
torch.compile ``_orig_mod.`` (:mod:`ckptcompat.checkpoint.key_prefixes`, stripped after).
When the keys do not fit, the error lists the prefixes the file's keys have and says which
one fits.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.key_prefixes import load_error, strip_wrapper_prefix
from ckptcompat.checkpoint.layout import validate_run_name
from ckptcompat.checkpoint.migrate import MigrationReport
from ckptcompat.checkpoint.uri import file_uri
from ckptcompat.checkpoint.verified_write import write_verified
from ckptcompat.errors import AgentMismatchError, CheckpointError, InvalidArgumentError
from ckptcompat.generations.families import FamilyRead, detect_family, read_family

__all__ = ["FamilyMigrationReport", "key_prefixes", "migrate_family", "select_submodule"]


@dataclass(frozen=True)
class FamilyMigrationReport(MigrationReport):
    """A :class:`~ckptcompat.checkpoint.migrate.MigrationReport` of another library's file.

    ``generation`` is the family (``lightning``, ``sb3``, ``hf_model``); ``loader`` is
    ``allowlist`` when classes the file names were read as inert stand-ins (``allowlist``
    lists them: nothing of theirs was imported or run), ``trusted`` with ``--trust``;
    ``stripped_prefix`` includes the ``submodule`` prefix.

    Attributes:
        library: ``Lightning``, ``stable-baselines3``, ``Hugging Face transformers``.
        what: what the file is.
        hyperparameters: the names of the JSON-primitive hyperparameters kept (in
            ``metadata.extra.hyperparameters`` of the new file).
        reported: pickled objects found and not run, ``"where: globals"`` each.
        left_behind: parts that are not weights (optimizer, loops, callbacks ...).
        dropped: state_dict entries that are not tensors.
    """

    library: str = ""
    what: str = ""
    hyperparameters: tuple[str, ...] = ()
    reported: tuple[str, ...] = ()
    left_behind: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()


def key_prefixes(keys: Sequence[str], limit: int = 6) -> str:
    """``"'agent.' (12 keys), 'critic.' (4 keys)"``: the first dotted component of
    ``keys``, most frequent first (``"(none)"`` for keys without a dot)."""
    counts = Counter(k.split(".", 1)[0] + "." if "." in k else "(none)" for k in keys)
    shown = [f"{p!r} ({n} key{'s' if n != 1 else ''})" for p, n in counts.most_common(limit)]
    more = len(counts) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def select_submodule(
    state_dict: Mapping[str, torch.Tensor], submodule: str, *, path: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    """The entries under ``<submodule>.``, that prefix stripped.

    Raises:
        InvalidArgumentError: ``submodule`` is empty or ends with a dot.
        AgentMismatchError: no key lies under it (the message lists the prefixes there are).
    """
    if not submodule or submodule.endswith(".") or submodule.startswith("."):
        raise InvalidArgumentError(
            "--submodule names an attribute path without a trailing dot",
            expected="e.g. 'agent' or 'model.net'",
            found=repr(submodule),
        )
    prefix = submodule + "."
    chosen = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not chosen:
        raise AgentMismatchError(
            f"no state_dict key lies under {prefix!r}",
            path=os.fspath(path),
            expected=f"keys starting with {prefix!r}",
            found=f"keys under {key_prefixes(list(state_dict))}",
            fix="pass one of those prefixes (without the dot) as --submodule",
        )
    return chosen


def _fitting_prefix(keys: Sequence[str], expected: set[str]) -> str | None:
    """The first-component prefix whose keys, stripped, are exactly ``expected``."""
    for prefix in dict.fromkeys(k.split(".", 1)[0] for k in keys if "." in k):
        under = {k[len(prefix) + 1 :] for k in keys if k.startswith(prefix + ".")}
        if under == expected or strip_wrapper_prefix(dict.fromkeys(under), list(expected))[1]:
            return prefix
    return None


def _rebuild(
    read: FamilyRead, class_path: str | None, config: Any, submodule: str | None
) -> tuple[nn.Module, str]:
    if class_path is None or config is None:
        raise AgentMismatchError(
            f"cannot rebuild the agent: {read.library} files name no ckptcompat agent",
            path=read.path,
            expected="the agent's class path and JSON config",
            found=f"class_path={class_path!r}, config={'given' if config else 'absent'}",
            fix="pass class_path= and config= (--class-path/--config on the command line)",
        )
    agent = build_agent(class_path, config)
    expected = list(agent.state_dict())
    weights, chosen = dict(read.state_dict), ""
    if submodule:
        weights, chosen = select_submodule(weights, submodule, path=read.path), submodule + "."
    weights, wrapper = strip_wrapper_prefix(weights, expected)
    try:
        agent.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        hint = _fitting_prefix(list(weights), set(expected))
        raise AgentMismatchError(
            "the file's weights do not fit the rebuilt agent",
            path=read.path,
            expected=f"the state_dict of {class_path} with this config "
            f"(keys under {key_prefixes(expected)})",
            found=f"keys under {key_prefixes(list(weights))}: {load_error(exc)}",
            fix=f"pass --submodule {chosen}{hint} (its keys fit the agent)"
            if hint
            else "check --class-path/--config, or pick the keys with --submodule NAME",
        ) from exc
    return agent, chosen + wrapper


def _default_run(name: str | None) -> str | None:
    """``"epoch=3-step=120"`` -> ``"epoch-3-step-120"``: a file name as a run name."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name or "").lstrip("._-")
    return cleaned or None


def _run_epoch(read: FamilyRead, run: str | None, epoch: int | None) -> tuple[str, int]:
    run = run or _default_run(read.run)
    try:
        validate_run_name(run or "")
    except CheckpointError as exc:
        raise CheckpointError(
            "cannot tell a valid run name for this checkpoint",
            path=read.path,
            expected="letters, digits, '.', '_' or '-', not starting with '.', '_' or '-'",
            found=f"run={run!r} from the file name",
            fix="pass run= (--run on the command line)",
        ) from exc
    return str(run), epoch if epoch is not None else (read.epoch or 0)


def migrate_family(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    class_path: str | None = None,
    config: dict[str, Any] | None = None,
    submodule: str | None = None,
    trust: bool = False,
    run: str | None = None,
    epoch: int | None = None,
    family: str | None = None,
) -> FamilyMigrationReport:
    """Convert a Lightning / stable-baselines3 / Hugging Face file into the safe format.

    Args:
        src: a Lightning ``.ckpt``, an SB3 ``.zip``, or a ``pytorch_model.bin``.
        dst: a ``.pt`` path (standalone) or a data_dir (``<dst>/<run>/checkpoints/``).
        class_path, config: the agent to rebuild (required).
        submodule: keep only the keys under ``<submodule>.`` and strip that prefix
            (default: all keys as saved; DDP/torch.compile prefixes are stripped anyway).
        trust: when the weights-only read is refused (dangerous globals, a list subclass),
            read with ``weights_only=False`` (runs the file's code; needs its libraries).
            SB3's cloudpickle entries are never run, trusted or not.
        run: default: the file's stem (the folder's name for ``pytorch_model.bin``), other
            characters than letters, digits, ``.``, ``_``, ``-`` replaced by ``-``.
        epoch: default: the file's own (Lightning's ``epoch``), else 0.
        family: as :func:`.families.detect_family` returns (default: detected).

    Returns:
        A :class:`FamilyMigrationReport`.

    Raises:
        IncompatibleCheckpointError: not one of these families, or a Trainer file that
            holds no model ("not a model: this is ...").
        UnsafeCheckpointError, CorruptCheckpointError, LimitExceededError: see
            :func:`.families.read_family`.
        AgentMismatchError: no class_path/config, keys that do not fit (the message lists
            the file's key prefixes), or outputs that differ once written.
        CheckpointError: no valid run name, or ``dst`` holds that checkpoint already.
    """
    from ckptcompat.errors import IncompatibleCheckpointError

    family = family or detect_family(src)
    if family is None:
        raise IncompatibleCheckpointError(
            "not a Lightning, stable-baselines3 or Hugging Face file",
            path=os.fspath(src),
            expected="a Lightning .ckpt, an SB3 .zip, or a pytorch_model.bin",
            fix="`ckptcompat migrate` without --submodule handles ckptcompat's own files",
        )
    read = read_family(src, family, trust=trust)
    agent, prefix = _rebuild(read, class_path, config, submodule)
    run, epoch = _run_epoch(read, run, epoch)
    extra: dict[str, Any] = {"migrated_from": read.family, "library": read.library}
    if read.hyperparameters:
        extra["hyperparameters"] = read.hyperparameters
    if read.reported:
        extra["not_migrated_objects"] = list(read.reported)
    facts = {"agent_step": read.agent_step or 0, "extra": extra}
    written = write_verified(agent, dst, run=run, epoch=epoch, facts=facts, source=src)
    return FamilyMigrationReport(
        str(Path(src)), file_uri(written), read.family, read.loader,  # type: ignore[arg-type]
        read.stand_ins, run, epoch, True, prefix,
        library=read.library, what=read.what, hyperparameters=tuple(read.hyperparameters),
        reported=read.reported, left_behind=read.left_behind, dropped=read.dropped,
    )  # fmt: skip
