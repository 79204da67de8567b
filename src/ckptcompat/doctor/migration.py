"""The file's checkpoint generation, and the ``ckptcompat migrate`` command to run on it.

Never suggests a command that would run the file's code: a file with a code risk
(:func:`ckptcompat.doctor.safety.code_risks`) gets no command, ``--trust`` included. For a
bare state_dict, ``--class-path`` and ``--config`` are filled in from a safe-format
checkpoint next to it when one holds the same keys (:mod:`ckptcompat.doctor.agent_hint`).
Standard library only.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from ckptcompat.checkpoint.layout import parse_filename
from ckptcompat.doctor.agent_hint import find_agent
from ckptcompat.scan import allowlist
from ckptcompat.scan.torch_names import WEIGHTS_ONLY_GLOBALS

if TYPE_CHECKING:
    from ckptcompat.doctor.families import Family
    from ckptcompat.doctor.pickle_walk import PickleFacts
    from ckptcompat.scan.scan_result import ScanResult

__all__ = ["Generation", "Migration", "generation", "migration"]

Generation = Literal["safe_v1", "g1", "g2", "state_dict", "other"]
_SAFE_FORMATS = ("ckptcompat.agent", "ckptcompat.trainer_state")
# What the scan's other container kinds are, as a noun phrase.
_CONTAINERS = {
    "empty": "an empty file, not a torch.save file",
    "git_lfs_pointer": "a Git LFS pointer, not the file it points to",
    "html": "an HTML file, not a torch.save file",
    "truncated_zip": "a truncated zip archive (no central directory)",
    "torchscript": "a TorchScript archive (torch.jit.save), not a torch.save file",
    "legacy_tar": "a pre-1.6 .tar checkpoint (torch.save's old container)",
}
# migrate tells run and epoch from these names alone (layout.parse_filename kinds).
_NAMED_KINDS = ("g1", "g2_colon", "g2_dunder")


@dataclass(frozen=True)
class Migration:
    """What ``ckptcompat migrate`` would do with the file.

    Attributes:
        command: the command to run, or None when migration does not apply or must not run.
        needs_trust: ``--trust`` is in the command: the curated allowlist cannot cover the
            file, so migration would unpickle it with ``weights_only=False``.
        note: why, or what else to know.
        agent_from: for a bare state_dict, the safe-format checkpoint whose
            ``agent.class_path`` and ``agent.config`` the command passes; else None.
    """

    command: str | None
    needs_trust: bool
    note: str
    agent_from: str | None = None


def _is_text(head: bytes) -> bool:
    """The first bytes read as UTF-8 text (a multi-byte character cut at the end allowed)."""
    for cut in range(4):
        try:
            text = head[: len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
        return all(c.isprintable() or c in "\t\n\r\f" for c in text)
    return False


def generation(result: ScanResult, facts: PickleFacts) -> tuple[Generation, str]:
    """``(generation, one phrase on what the top-level object is)``."""
    if result.kind == "unknown":
        what = "a text file" if _is_text(result.sniff.head) else "bytes of an unknown format"
        return "other", f"{what}, not a torch.save file"
    if result.kind not in ("zip", "legacy_pickle"):
        return "other", _CONTAINERS.get(result.kind, f"not a torch.save file ({result.kind})")
    if not facts.complete:
        return "other", "the object pickle could not be read to its end"
    if facts.root_kind == "dict" and facts.format in _SAFE_FORMATS:
        if result.nondefault_globals:
            return "other", (
                f"a dict claiming format {facts.format!r} but holding other objects "
                f"({', '.join(result.nondefault_globals)})"
            )
        return "safe_v1", f"safe format v1 ({facts.format})"
    root = facts.root_global or ""
    if root.endswith("PolicyRecord"):
        return "g1", f"a whole pickled PolicyRecord holding the agent ({root})"
    is_module = any(g.startswith("torch.nn.modules.") for g in result.globals) or (
        "torch._utils._rebuild_parameter" in result.globals
    )
    if facts.root_kind == "new" and is_module:
        return "g2", f"a whole pickled agent ({root})"
    if facts.tensor_mapping:
        return "state_dict", "a bare state_dict (a mapping of tensors)"
    if facts.root_kind == "global":
        what = f"the global {root} itself"
    else:
        what = f"an object made by {root}" if root else f"a {facts.root_kind}"
    return "other", f"{what}, not an agent checkpoint of a known generation"


def _named(path: str) -> bool:
    """True when migrate can tell run and epoch from the file name alone."""
    name = parse_filename(Path(path).name)
    return name is not None and name.kind in _NAMED_KINDS


_FAMILY_MODEL_FILES = ("pytorch_model.bin",)


def _family_migration(path: str, family: Family) -> Migration:
    """Migrate's reading of another library's file (Lightning ``.ckpt``, a stable-baselines3
    zip's ``policy.pth``, Hugging Face ``pytorch_model.bin``): weights-only, the file's
    foreign classes as inert stand-ins, JSON-primitive hyperparameters kept. The agent
    class and config must be given; a Lightning module's net is chosen with
    ``--submodule`` (the attribute holding it)."""
    name = os.path.basename(path)
    if family.library.startswith("Hugging Face") and name not in _FAMILY_MODEL_FILES:
        return Migration(None, False, f"not a model: {family.what}; nothing to migrate")
    parts = [
        "ckptcompat", "migrate", shlex.quote(path), "migrated/",
        "--class-path", "CLASS_PATH", "--config", "CONFIG_JSON",
    ]  # fmt: skip
    note = (
        "reads the weights with weights_only=True and the file's other classes as inert "
        "stand-ins (nothing imported or run); CLASS_PATH/CONFIG_JSON: your agent, whose "
        "state_dict keys match the file's"
    )
    if family.library == "Lightning":
        parts += ["--submodule", "NAME"]
        note += "; NAME: the LightningModule attribute holding the agent (its key prefix)"
    return Migration(" ".join(parts), False, note)


def migration(
    path: str,
    kind: Generation,
    result: ScanResult,
    numpy_major: int,
    risks: tuple[str, ...],
    family: Family | None = None,
) -> Migration:
    """The ``ckptcompat migrate`` suggestion for the file at ``path``.

    Args:
        path: the file.
        kind: its generation.
        result: its static scan.
        numpy_major: numpy major of the loading side.
        risks: its code risks; any risk means no command at all.
        family: the library that wrote it (:mod:`ckptcompat.doctor.families`), whose
            files migrate reads without running code (:mod:`ckptcompat.generations.
            families`); None otherwise.
    """
    if risks:
        return Migration(
            None,
            False,
            f"do not migrate it: {risks[0]}; migrating it with --trust would run that code",
        )
    if family is not None:
        return _family_migration(path, family)
    if kind == "safe_v1":
        return Migration(None, False, "already the safe format; nothing to migrate")
    if result.kind not in ("zip", "legacy_pickle"):
        return Migration(None, False, "not a readable torch.save file; restore it first")
    if kind == "other":
        return Migration(None, False, "migrate converts G1/G2/state_dict agent checkpoints only")
    needed = [g for g in result.globals if g not in WEIGHTS_ONLY_GLOBALS]
    offenders = allowlist.partition(needed)[1]
    parts = ["ckptcompat", "migrate", shlex.quote(path), "migrated/"]
    notes = []
    agent_from = None
    if kind == "state_dict":
        hint, hint_note = find_agent(path, result)
        if hint is None:
            parts += ["--class-path", "CLASS_PATH", "--config", "CONFIG_JSON"]
        else:
            parts += ["--class-path", hint.class_path, "--config", shlex.quote(hint.config_json)]
            agent_from = hint.source
        notes.append(hint_note)
    if not _named(path):
        parts += ["--run", "RUN", "--epoch", "EPOCH"]
    if offenders:
        parts.append("--trust")
        notes.append(
            f"{', '.join(offenders)} outside the curated allowlist: "
            "--trust unpickles with weights_only=False; only for files you trust"
        )
    other_core = "numpy.core." if numpy_major >= 2 else "numpy._core."
    if any(g.startswith(other_core) for g in result.globals):
        notes.append(
            f"names spelled for numpy {'1' if numpy_major >= 2 else '2'} need torch >= 2.6 "
            "aliases: run it on torch >= 2.6"
        )
    if not offenders:
        notes.insert(0, "reads it with weights_only=True and the curated allowlist")
    return Migration(" ".join(parts), bool(offenders), "; ".join(notes), agent_from)
