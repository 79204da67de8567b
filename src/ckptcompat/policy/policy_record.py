"""Deprecated ``PolicyRecord``: a policy's URI, run name and metadata, loading lazily.

Contract (../shared/reference/metta_policy_api.md section 1): ``PolicyRecord(policy_store,
run_name, uri, metadata)`` positionally or by keyword (the stub that dropped these
parameters raised TypeError and broke callers); ``.policy`` loads through the store once
and caches; ``.file_path`` for ``file://`` URIs; ``.metadata`` takes a PolicyMetadata or a
dict and refuses anything else with TypeError; ``repr`` never loads the policy.
``key_and_version()`` goes through :func:`ckptcompat.checkpoint.uri.key_and_version`, the
one key scheme (docs/design.md section 6).

Replacement: :meth:`SimpleCheckpointManager.load_from_uri` for the agent and
:func:`ckptcompat.checkpoint.uri.key_and_version` for the stats-DB key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptcompat.checkpoint import uri as uri_mod
from ckptcompat.checkpoint.layout import RUN_NAME_RE
from ckptcompat.errors import InvalidArgumentError
from ckptcompat.policy._deprecation import warn_deprecated
from ckptcompat.policy._store_helpers import run_for
from ckptcompat.policy.policy_metadata import PolicyMetadata

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PolicyRecord"]

_REPLACEMENT = (
    "SimpleCheckpointManager.load_from_uri(uri) and ckptcompat.checkpoint.uri.key_and_version(uri)"
)


def _as_metadata(value: Any) -> PolicyMetadata:
    if isinstance(value, PolicyMetadata):
        return value
    if isinstance(value, Mapping):
        return (
            PolicyMetadata.from_checkpoint_metadata(value)
            if "total_time_s" in value
            else (_quiet_metadata(value))
        )
    raise TypeError(
        f"PolicyRecord.metadata must be a PolicyMetadata or a dict; got {type(value).__name__}"
    )


def _quiet_metadata(data: Mapping[str, Any]) -> PolicyMetadata:
    # Built for the caller as part of one deprecated call, which already warned once.
    obj = dict.__new__(PolicyMetadata)
    dict.update(obj, {"agent_step": 0, "epoch": 0, "generation": 0, "train_time": 0.0})
    dict.update(obj, data)
    return obj


class PolicyRecord:
    """Deprecated: a reference to one saved policy.

    Args:
        policy_store: the PolicyStore that loads ``uri`` (may be None for a detached record).
        run_name: the run that produced the policy.
        uri: ``file://PATH``, a bare path, ``DIR/<run>:latest`` or ``mock://KEY[:vN]``.
        metadata: a PolicyMetadata or a plain dict (converted); None gives the defaults.

    Raises:
        TypeError: ``metadata`` of any other type.
    """

    def __init__(
        self,
        policy_store: Any = None,
        run_name: str | None = None,
        uri: str | None = None,
        metadata: PolicyMetadata | Mapping[str, Any] | None = None,
    ) -> None:
        warn_deprecated("PolicyRecord", _REPLACEMENT)
        self._init(policy_store, run_name, uri, metadata)

    def _init(
        self, policy_store: Any, run_name: str | None, uri: str | None, metadata: Any
    ) -> None:
        self._policy_store = policy_store
        self.run_name = run_name
        self.uri = uri
        self._metadata = _quiet_metadata({}) if metadata is None else _as_metadata(metadata)
        self._cached_policy: nn.Module | None = None

    @classmethod
    def _quiet(cls, policy_store: Any, run_name: str | None, uri: str | None, metadata: Any) -> Any:
        """Build without warning: for the store, whose own public call already warned."""
        obj = cls.__new__(cls)
        obj._init(policy_store, run_name, uri, metadata)
        return obj

    # -- old attribute names ---------------------------------------------------------
    @property
    def name(self) -> str | None:
        """The pre-July-2025 name of :attr:`run_name`."""
        return self.run_name

    @property
    def metadata(self) -> PolicyMetadata:
        """The record's PolicyMetadata.

        A record pickled before the metadata refactor keeps it in an attribute named
        ``checkpoint`` (a plain dict, or a PolicyMetadata): it is converted to a
        PolicyMetadata once, stored as ``_metadata``, and the old attribute is left as is.

        Raises:
            AttributeError: neither ``_metadata`` nor ``checkpoint`` exists (the message
                lists the attributes present).
            TypeError: ``checkpoint`` holds something other than a mapping.
        """
        if "_metadata" in self.__dict__:
            return self._metadata
        if "checkpoint" in self.__dict__:
            self._metadata = _as_metadata(self.__dict__["checkpoint"])
            return self._metadata
        raise AttributeError(
            "No metadata found on this PolicyRecord (neither _metadata nor the old "
            f"checkpoint attribute); attributes present: {sorted(self.__dict__)}"
        )

    @metadata.setter
    def metadata(self, value: PolicyMetadata | Mapping[str, Any]) -> None:
        self._metadata = _as_metadata(value)

    # -- the policy --------------------------------------------------------------------
    @property
    def policy(self) -> nn.Module:
        """The agent, loaded through the store on first access and cached.

        Raises:
            ValueError: no store or no URI to load from.
            CheckpointError: whatever loading the URI raises (never swallowed into None).
        """
        if self._cached_policy is None:
            if self._policy_store is None or self.uri is None:
                raise ValueError(
                    "PolicyRecord.policy needs a policy_store and a uri to load from; "
                    f"found policy_store={self._policy_store!r}, uri={self.uri!r}"
                )
            self._cached_policy = self._policy_store._load_policy(self.uri)
        return self._cached_policy

    @policy.setter
    def policy(self, value: nn.Module) -> None:
        self._cached_policy = value

    @property
    def file_path(self) -> str:
        """The path of a ``file://`` URI.

        Raises:
            ValueError: a None URI or another scheme.
        """
        if self.uri is None or not self.uri.startswith("file://"):
            raise ValueError(f"PolicyRecord.file_path needs a file:// uri; found {self.uri!r}")
        return self.uri[len("file://") :]

    def key_and_version(self) -> tuple[str, int]:
        """``(policy_key, policy_version)`` by the one key scheme (docs/design.md section 6).

        A record that names no file keys as ``(key, metadata.epoch)``: a ``mock://KEY``
        URI without ``:vN``, or a bare key such as ``"test_policy"`` (the old
        MockPolicyRecord set ``uri=policy_key``) that is not an existing path. A
        ``mock://KEY:vN`` URI keys as ``(KEY, N)``. A file not saved yet keys as
        ``PolicyStore.save`` will write it: ``(run name, metadata.epoch)``. Existing files
        and directories go through :func:`ckptcompat.checkpoint.uri.key_and_version`.

        Raises:
            InvalidArgumentError: no URI (a ValueError too; the message says what to do).
            ValueError: a bare key whose metadata epoch is not an int >= 0.
            CheckpointError: as :func:`ckptcompat.checkpoint.uri.key_and_version`.
        """
        if self.uri is None:
            raise InvalidArgumentError(
                "PolicyRecord.key_and_version needs a uri; this record has none",
                expected="a file:// URI, a path, or mock://KEY[:vN]",
                found=f"uri=None (run_name={self.run_name!r})",
                fix="build a mock with MockPolicyRecord.from_key_and_version(key, version) "
                "(policy_record_or_mock(None) has no key), or set record.uri",
            )
        bare = self._bare_key()
        if bare is not None:
            return bare, self._epoch()
        where = self._where()
        parsed = uri_mod.parse_uri(where)
        if parsed.kind == "file" and parsed.path is not None and not parsed.path.exists():
            # Not saved yet: the key its PolicyStore.save will write (run and epoch).
            epoch = self._epoch()
            return run_for(self.run_name, self.metadata.get("run"), parsed.path, epoch), epoch
        return uri_mod.key_and_version(where)

    def _epoch(self) -> int:
        epoch = self.metadata.get("epoch")
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(
                f"PolicyRecord {self.uri!r} keys by metadata['epoch'], which must be an "
                f"int >= 0 (epoch 0 is a version); found {epoch!r}"
            )
        return epoch

    def _bare_key(self) -> str | None:
        """The key of a URI that names no file (see :meth:`key_and_version`), else None."""
        uri = self.uri or ""
        if uri.startswith("mock://"):
            parsed = uri_mod.parse_uri(uri)
            return parsed.run if parsed.version is None else None
        looks_like_key = RUN_NAME_RE.match(uri) is not None and not uri.endswith(".pt")
        return uri if looks_like_key and not Path(self._where()).exists() else None

    def _where(self) -> str:
        """The URI, resolved against the store's ``data_dir`` as the store itself would."""
        absolute = getattr(self.__dict__.get("_policy_store"), "_absolute", None)
        return absolute(self.uri) if callable(absolute) else str(self.uri)

    def num_params(self) -> int:
        """Trainable parameters of the policy (loads it)."""
        return sum(p.numel() for p in self.policy.parameters() if p.requires_grad)

    def extract_wandb_run_info(self) -> tuple[str, str, str, str | None]:
        """``(entity, project, name, version|None)`` of a ``wandb://entity/project/name[:v]`` URI.

        Raises:
            ValueError: not a wandb URI (ckptcompat cannot load them, but can still parse).
            InvalidArgumentError: a wandb URI without entity, project and name (a
                ValueError, with Metta's "Failed to parse wandb URI" wording).
        """
        if self.uri is None or not self.uri.startswith("wandb://"):
            raise ValueError(f"not a wandb:// uri: {self.uri!r}")
        parts = self.uri[len("wandb://") :].split("/")
        name, _, version = parts[-1].partition(":")
        if len(parts) != 3 or not all(parts[:2]) or not name or ":" in version:
            raise InvalidArgumentError(
                f"Failed to parse wandb URI: {self.uri}",
                expected="wandb://<entity>/<project>/<name>[:<version>]",
                found=f"{len(parts)} '/'-separated parts",
                fix="name the entity and project, e.g. wandb://my-team/my-project/my_run:v3",
            )
        return parts[0], parts[1], name, version or None

    def __getstate__(self) -> dict[str, Any]:
        # The store is never pickled with the record (as the old PolicyStore.save did).
        state = dict(self.__dict__)
        state["_policy_store"] = None
        return state

    def __repr__(self) -> str:
        loaded = "loaded" if self._cached_policy is not None else "not loaded"
        meta = self.__dict__.get("_metadata") or {}
        return (
            f"{type(self).__name__}(run_name={self.run_name!r}, uri={self.uri!r}, "
            f"epoch={meta.get('epoch')!r}, agent_step={meta.get('agent_step')!r}, {loaded})"
        )
