"""Deprecated ``PolicyStore``: find, select, load and save policies by URI.

Contract (../shared/reference/metta_policy_api.md section 1): ``PolicyStore(device,
data_dir, ...)``; ``policy_record(uri, selector_type="top", metric="score")``;
``policy_records(uri, selector_type, n, metric)`` with ``all|top|latest|rand``;
``policy_record_or_mock``; ``load_from_uri``; ``save(pr, path=None)``; and
``PolicyMissingError`` when nothing matches.

Differences from the old store, each deliberate:

* directories of ``model_<NNNN>.pt`` are ordered by NNNN (the old store took
  ``os.listdir()[-1]``, filesystem order) and read through the legacy reader
  (``weights_only=True`` + the curated allowlist), never ``weights_only=False``;
* a managed run directory (``index.json``) lists its safe-format checkpoints;
* ``save`` writes the safe format at ``path or pr.file_path``, never a pickled record;
  an existing file is replaced atomically (a reader never sees a half-written file), and
  every PolicyMetadata key travels in the file's ``metadata["extra"]``, so it must be
  JSON-like primitives (dict/list/tuple/str/int/float/bool/None);
* ``wandb://``, ``s3://`` and other remote schemes raise a CheckpointError naming what is
  supported, instead of failing deep inside a client library.

Replacement: :class:`ckptcompat.checkpoint.manager.SimpleCheckpointManager`.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import random
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ckptcompat.checkpoint import legacy
from ckptcompat.checkpoint import uri as uri_mod
from ckptcompat.checkpoint.index import read_index
from ckptcompat.checkpoint.layout import CHECKPOINTS_DIR, INDEX_NAME, parse_filename
from ckptcompat.errors import (
    AgentMismatchError,
    PolicyMissingError,
)
from ckptcompat.policy._deprecation import warn_deprecated
from ckptcompat.policy._store_helpers import cfg_get, plain, run_for
from ckptcompat.policy.mocks import MockPolicyRecord
from ckptcompat.policy.policy_metadata import SAVED_KEY, PolicyMetadata
from ckptcompat.policy.policy_record import PolicyRecord

if TYPE_CHECKING:
    from torch import nn

# PolicyMissingError lives in ckptcompat.errors; old callers import it from here (the
# deprecated API's path, kept for good like the rest of this package).
__all__ = ["PolicyMissingError", "PolicySelectorType", "PolicyStore"]

log = logging.getLogger(__name__)

PolicySelectorType = Literal["all", "top", "latest", "rand"]
_SELECTORS = ("all", "top", "latest", "rand")
_REPLACEMENT = "ckptcompat.checkpoint.SimpleCheckpointManager"
#: ``top`` falls back to ``latest`` unless at least this share of records has the metric.
TOP_MIN_SCORED_FRACTION = 0.8


class PolicyStore:
    """Deprecated: loads and selects policies by URI.

    Also constructed the pre-August-2025 way, ``PolicyStore(cfg, wandb_run)``: a config
    object (an OmegaConf ``DictConfig`` or any mapping/attribute object) in place of
    ``device`` supplies ``device``, ``data_dir`` and ``trainer.checkpoint.checkpoint_dir``
    (the default directory of :meth:`create_empty_policy_record`).

    Args:
        device: where loaded policies are placed (``"cpu"``), or the old config object.
        data_dir: base directory for relative URIs (``"./train_dir"``).
        wandb_run, wandb_entity, wandb_project, pytorch_cfg: accepted for compatibility;
            ckptcompat serves no remote storage, so they are unused.
        policy_cache_size: kept for compatibility; loaded policies are cached per record.
    """

    def __init__(
        self,
        device: str | None = None,
        wandb_run: Any = None,
        data_dir: str | Path | None = None,
        wandb_entity: str | None = None,
        wandb_project: str | None = None,
        pytorch_cfg: Any = None,
        policy_cache_size: int = 10,
    ) -> None:
        warn_deprecated("PolicyStore", _REPLACEMENT)
        checkpoint_dir = None
        if device is not None and not isinstance(device, str):
            cfg = device
            device = cfg_get(cfg, "device")
            data_dir = data_dir if data_dir is not None else cfg_get(cfg, "data_dir")
            checkpoint_dir = cfg_get(cfg, "trainer", "checkpoint", "checkpoint_dir")
            if checkpoint_dir is None:
                checkpoint_dir = cfg_get(cfg, "trainer", "checkpoint_dir")
        self._init(device, data_dir, policy_cache_size)
        if checkpoint_dir is not None:
            self._checkpoint_dir = Path(str(checkpoint_dir))

    def _init(self, device: str | None, data_dir: str | Path | None, cache_size: int) -> None:
        self.device = str(device or "cpu")
        self.data_dir = Path(str(data_dir or "./train_dir"))
        self.policy_cache_size = cache_size
        self._checkpoint_dir = self.data_dir

    @classmethod
    def create(
        cls, device: str, data_dir: str | Path, wandb_config: Any = None, wandb_run: Any = None
    ) -> PolicyStore:
        """Deprecated factory: ``PolicyStore(device=device, data_dir=data_dir)``."""
        warn_deprecated("PolicyStore.create", _REPLACEMENT)
        store = cls.__new__(cls)
        store._init(device, data_dir, 10)
        return store

    # ------------------------------------------------------------------ discovery
    def _records(self, uri: str) -> list[PolicyRecord]:
        """Every record ``uri`` names, newest first (highest epoch or NNNN first).

        Raises:
            CheckpointError: an unservable scheme; CheckpointNotFoundError: nothing there.
        """
        if uri.startswith("mock://"):
            key, version = uri_mod.key_and_version(uri)
            return [MockPolicyRecord._quiet(self, key, uri, {"epoch": version})]
        uri = self._absolute(uri)
        path = Path(uri.removeprefix("file://"))
        if path.is_dir():
            run_dir = path / CHECKPOINTS_DIR if (path / CHECKPOINTS_DIR).is_dir() else path
            if (run_dir / INDEX_NAME).is_file():
                index = read_index(run_dir, None)
                entries = sorted(index.checkpoints, key=lambda e: e.epoch, reverse=True)
                return [self._indexed_record(run_dir / e.file, index.run, e) for e in entries]
            return self._directory_records(path)
        parsed = uri_mod.parse_uri(uri)
        if parsed.kind == "latest":
            resolved = uri_mod.resolve(uri)
            assert resolved.path is not None and resolved.entry is not None
            return [self._indexed_record(resolved.path, parsed.run or "", resolved.entry)]
        assert parsed.path is not None
        return [self._file_record(parsed.path)]

    def _absolute(self, uri: str) -> str:
        """Resolve a relative path against ``data_dir`` when it exists only there."""
        path = Path(uri.removeprefix("file://"))
        if not path.is_absolute() and not path.exists() and (self.data_dir / path).exists():
            return str(self.data_dir / path)
        return uri

    def _indexed_record(self, path: Path, run: str, entry: Any) -> PolicyRecord:
        metadata = PolicyMetadata.from_checkpoint_metadata(
            {
                "run": run,
                "epoch": entry.epoch,
                "agent_step": entry.agent_step,
                "total_time_s": entry.total_time_s,
                "score": entry.score,
            }
        )
        return PolicyRecord._quiet(self, run, uri_mod.file_uri(path), metadata)

    def _file_record(self, path: Path) -> PolicyRecord:
        name = parse_filename(path.name)
        ckpt = legacy.read_checkpoint(path, map_location=self.device)
        if ckpt.generation == "safe_v1":
            # Any file name: one PolicyStore.save wrote anywhere, or a manager's file.
            meta = ckpt.metadata
            uri_mod.check_name_agrees(path, meta["run"], meta["epoch"])
            metadata = PolicyMetadata.from_checkpoint_metadata(meta)
            return PolicyRecord._quiet(self, meta["run"], uri_mod.file_uri(path), metadata)
        metadata = dict(ckpt.metadata)
        if name is not None and name.kind != "trainer":
            metadata.setdefault("epoch", name.epoch)
        if name is not None and name.kind == "g2_dunder":
            # #2366 kept the training facts in the name only (the file is a bare agent).
            metadata.update(
                agent_step=name.agent_step, train_time=name.total_time_s, score=name.score
            )
        run, _ = uri_mod.key_and_version(path) if name is not None else (path.stem, 0)
        record = PolicyRecord._quiet(self, run, uri_mod.file_uri(path), metadata)
        if ckpt.agent is not None:
            record.policy = ckpt.agent
        return record

    def _directory_records(self, directory: Path) -> list[PolicyRecord]:
        """``model_<NNNN>.pt`` files ordered by NNNN descending; other ``.pt`` files last."""
        files = [p for p in directory.iterdir() if p.suffix == ".pt" and p.is_file()]

        def number(p: Path) -> int:
            name = parse_filename(p.name)
            return name.epoch if name is not None and name.kind == "g1" else -1

        files.sort(key=lambda p: (number(p), p.name), reverse=True)
        if not files:
            raise PolicyMissingError(
                "no policy files in this directory",
                path=directory,
                expected="model_<NNNN>.pt files or a managed run (index.json)",
                found="no .pt files",
            )
        return [self._file_record(p) for p in files]

    # ------------------------------------------------------------------ selection
    def policy_records(
        self,
        uri_or_config: str | Any,
        selector_type: PolicySelectorType = "top",
        n: int = 1,
        metric: str = "score",
        stats_client: Any = None,
        eval_name: str | None = None,
    ) -> list[PolicyRecord]:
        """Deprecated: records the URI names, selected by ``selector_type``.

        Raises:
            PolicyMissingError: nothing found.
            ValueError: unknown selector.
            CheckpointError: an unservable scheme (wandb://, s3:// ...).
        """
        warn_deprecated("PolicyStore.policy_records", _REPLACEMENT)
        return self._select(uri_or_config, selector_type, n, metric)

    def _select(
        self, uri_or_config: Any, selector_type: str, n: int, metric: str
    ) -> list[PolicyRecord]:
        uri = getattr(uri_or_config, "uri", uri_or_config)
        if selector_type not in _SELECTORS:
            raise ValueError(f"selector_type must be one of {_SELECTORS}, not {selector_type!r}")
        if not isinstance(uri, str):
            raise TypeError(f"expected a URI string; got {type(uri).__name__}")
        prs = self._records(uri)
        if not prs:
            raise PolicyMissingError(f"no policy found for {uri!r}", path=uri)
        if selector_type == "all":
            return prs
        if selector_type == "latest":
            return prs[:n]
        if selector_type == "rand":
            return random.Random().sample(prs, min(n, len(prs)))
        return self._top(prs, n, metric)

    @staticmethod
    def _score(pr: PolicyRecord, metric: str) -> float | None:
        meta = pr.metadata
        evals = meta.get("eval_scores")
        if isinstance(evals, Mapping):
            for key in (metric, metric.removesuffix("_score")):
                if evals.get(key) is not None:
                    return float(evals[key])
        value = meta.get(metric)
        return None if value is None else float(value)

    def _top(self, prs: list[PolicyRecord], n: int, metric: str) -> list[PolicyRecord]:
        scored = [(self._score(pr, metric), pr) for pr in prs]
        have = [(s, pr) for s, pr in scored if s is not None]
        if len(have) < TOP_MIN_SCORED_FRACTION * len(prs):
            log.warning(
                "PolicyStore: only %d of %d records have %r; selecting the latest instead",
                len(have),
                len(prs),
                metric,
            )
            return prs[:n]
        have.sort(key=lambda item: item[0], reverse=True)
        return [pr for _, pr in have[:n]]

    def policy_record(
        self,
        uri_or_config: str | Any,
        selector_type: PolicySelectorType = "top",
        metric: str = "score",
        stats_client: Any = None,
        eval_name: str | None = None,
    ) -> PolicyRecord:
        """Deprecated: exactly one record (see :meth:`policy_records`)."""
        warn_deprecated("PolicyStore.policy_record", _REPLACEMENT)
        return self._select(uri_or_config, selector_type, 1, metric)[0]

    def policy_record_or_mock(
        self, policy_uri: str | None, run_name: str = "mock_run"
    ) -> PolicyRecord:
        """Deprecated: the URI's record, or a MockPolicyRecord when ``policy_uri`` is None."""
        warn_deprecated("PolicyStore.policy_record_or_mock", _REPLACEMENT)
        if policy_uri is None:
            return MockPolicyRecord._quiet(self, run_name, None, None)
        return self._select(policy_uri, "top", 1, "score")[0]

    def load_from_uri(self, uri: str) -> PolicyRecord:
        """Deprecated: the URI's record with its policy loaded."""
        warn_deprecated("PolicyStore.load_from_uri", "SimpleCheckpointManager.load_from_uri")
        record = self._select(uri, "latest", 1, "epoch")[0]
        record.policy  # noqa: B018 -- load now, as the old store did
        return record

    def _load_policy(self, uri: str) -> nn.Module:
        """Load the agent a record points at (PolicyRecord.policy calls this)."""
        from ckptcompat.checkpoint.manager import SimpleCheckpointManager

        if uri.startswith("mock://"):
            return SimpleCheckpointManager.load_from_uri(uri, self.device)
        path = Path(uri_mod.resolve(self._absolute(uri)).path or "")
        name = parse_filename(path.name)
        if name is not None and name.kind == "agent":
            return SimpleCheckpointManager.load_from_uri(path, self.device)
        ckpt = legacy.read_checkpoint(path, map_location=self.device)
        if ckpt.generation == "safe_v1":  # saved under a name outside the grammar
            return SimpleCheckpointManager.load_from_uri(path, self.device)
        if ckpt.agent is None:
            raise AgentMismatchError(
                "this file holds weights but no agent to load them into",
                path=path,
                expected="an agent checkpoint",
                found=f"a {ckpt.generation}",
                fix="migrate it with `ckptcompat migrate FILE DST --class-path ... --config ...`",
            )
        return ckpt.agent

    # ------------------------------------------------------------------ saving
    def make_model_name(self, epoch: int) -> str:
        """Deprecated: ``model_<NNNN>.pt``, the old checkpoint file name of ``epoch``.

        A file saved under this name is read back by :meth:`load_from_uri`; new code names
        files with the manager (``<run>_v<epoch>.pt``).
        """
        warn_deprecated("PolicyStore.make_model_name", "SimpleCheckpointManager.save_agent")
        return f"model_{epoch:04d}.pt"

    def create_empty_policy_record(
        self,
        name: str,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        *,
        override_path: str | os.PathLike[str] | None = None,
    ) -> PolicyRecord:
        """Deprecated: a record with default metadata and no policy yet, to fill and save.

        Its ``run_name`` is ``name`` and its URI ``file://<checkpoint_dir>/<name>``
        (``checkpoint_dir`` defaults to the config's ``trainer.checkpoint.checkpoint_dir``
        for a store built from a config, else ``data_dir``; an absolute ``name`` is the
        path itself, as with ``os.path.join``), or ``file://<override_path>``. Set ``.policy``
        (and ``.metadata``) before :meth:`save`.
        """
        warn_deprecated("PolicyStore.create_empty_policy_record", "SimpleCheckpointManager")
        if override_path is not None:
            path = os.fspath(override_path)
        else:
            base = self._checkpoint_dir if checkpoint_dir is None else checkpoint_dir
            path = os.path.join(os.fspath(base), name)
        return PolicyRecord._quiet(self, name, f"file://{path}", None)

    def save(self, pr: PolicyRecord, path: str | Path | None = None) -> PolicyRecord:
        """Deprecated: write ``pr.policy`` in the safe format at ``path or pr.file_path``.

        An existing file is replaced atomically (temp file + rename: never a half-written
        file), as the old store replaced it. Every key of ``pr.metadata`` is kept in the
        file and comes back from :meth:`load_from_uri`. The file's run name is, in order:
        the ``<run>`` of a ``<run>_v<epoch>.pt`` file name, ``pr.run_name`` or
        ``metadata["run"]`` if it is a valid run name, else the last path component of
        ``pr.run_name`` made valid (``"bad run!"`` -> ``bad_run_``; a record named by its
        path gives the file's stem), else the file's stem made valid. The record's ``uri``
        becomes the written file's ``file://`` URI.

        Raises:
            ValueError: no path and the record's URI is not ``file://``.
            InvalidArgumentError: the epoch is not an int >= 0, or a ``<run>_v<N>.pt``
                name whose N is not the metadata's epoch (a ValueError too).
            CheckpointError: a metadata value that is not JSON-like primitives (named).
            AgentMismatchError: the policy's class or config cannot be saved.
        """
        warn_deprecated("PolicyStore.save", "SimpleCheckpointManager.save_agent")
        from ckptcompat.checkpoint.saving import check_epoch, save_agent_file

        target = Path(path) if path is not None else Path(pr.file_path)
        meta = pr.metadata
        epoch = check_epoch(meta["epoch"])
        score = meta.get("score")
        finite = isinstance(score, numbers.Real) and not isinstance(score, bool)
        save_agent_file(
            pr.policy,
            target,
            run=run_for(pr.run_name, pr.metadata.get("run"), target, epoch),
            epoch=epoch,
            metadata={
                "agent_step": int(meta["agent_step"]),
                "total_time_s": float(meta["train_time"]),
                "score": float(score) if finite and math.isfinite(float(score)) else None,
                "extra": {SAVED_KEY: plain(dict(meta))},
            },
            overwrite=True,
        )
        pr.uri = uri_mod.file_uri(target)
        return pr
