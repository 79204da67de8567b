"""What the regression corpus holds and how each file is written (:mod:`.corpus` drives it).

The whole-object pickles reference only our own classes (:class:`CorpusConfig` and
:class:`CorpusMode` here, the agents, the policy stubs), the standard library and numpy.
Importing this module is cheap (standard library only); the writers import torch.
"""

from __future__ import annotations

import enum
import io
import shutil
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CORPUS", "CorpusConfig", "CorpusFile", "CorpusMode"]

_SEED = 0


@dataclass
class CorpusConfig:
    """A user dataclass pickled whole (``@dataclass`` instances need allowlisting)."""

    lr: float = 3e-4
    num_envs: int = 4


class CorpusMode(enum.Enum):
    """A user Enum pickled by member (``REDUCE(CorpusMode, (value,))``)."""

    TRAIN = "train"
    EVAL = "eval"


@dataclass(frozen=True)
class CorpusFile:
    """One corpus file: its name, what it is, and how to write it into a folder.

    ``deterministic`` is False for files whose bytes differ between runs: the legacy
    non-zip format keys storages by their memory address (``str(storage._cdata)``).
    ``numerics`` is True for files whose bytes depend on the CPU kernel path (an agent's
    orthogonal init runs a QR through LAPACK): they reproduce bit for bit only under a
    bitwise-comparable numerics fingerprint (:mod:`ckptcompat.numerics`).
    """

    name: str
    description: str
    write: Callable[[Path], None]
    deterministic: bool = True
    numerics: bool = False


# --------------------------------------------------------------------------- writers
def _torch() -> Any:
    import torch

    return torch


def _save(obj: Any) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        from ckptcompat import torch_compat

        torch_compat.save(obj() if callable(obj) else obj, path)

    return write


def _mock_agent() -> Any:
    from ckptcompat.agents import MockAgent

    _torch().manual_seed(_SEED)
    return MockAgent()


def _recurrent_agent() -> Any:
    import gymnasium as gym
    import numpy as np

    from ckptcompat.agents import RecurrentAgent

    _torch().manual_seed(_SEED)
    return RecurrentAgent(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        action_space=gym.spaces.Discrete(2),
        hidden_size=4,
        encoder_size=4,
    )


def _rng_state() -> Any:
    import numpy as np

    np.random.seed(_SEED)
    return np.random.get_state()


def _namespace() -> Any:
    import argparse as _argparse

    return {"args": _argparse.Namespace(lr=3e-4, seed=_SEED, env="CartPole-v1")}


def _numpy(kind: str) -> Any:
    import numpy as np

    return np.float64(0.5) if kind == "scalar" else np.arange(4, dtype=np.float32)


def _defaultdict() -> Any:
    from collections import defaultdict

    return defaultdict(list, {"episode_returns": [1.0, 2.5]})


def _write_safe_v1(path: Path) -> None:
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager

    with tempfile.TemporaryDirectory() as tmp:
        manager = SimpleCheckpointManager("corpus", tmp)
        uri = manager.save_agent(
            _mock_agent(), 3, {"agent_step": 1200, "total_time_s": 42.0, "score": 0.25}
        )
        shutil.copyfile(uri.removeprefix("file://"), path)


def _write_g1(path: Path) -> None:
    from ckptcompat.checkpoint import legacy

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the stubs announce themselves
        from ckptcompat.policy.policy_metadata import PolicyMetadata
        from ckptcompat.policy.policy_record import PolicyRecord

        record = PolicyRecord(
            None,
            "corpus",
            f"file://{path.name}",
            PolicyMetadata(epoch=7, agent_step=700, score=0.25),
        )
    record.policy = _mock_agent()
    legacy.write_g1(record, path)


def _write_g2(path: Path) -> None:
    from ckptcompat.checkpoint import legacy

    legacy.write_g2(_recurrent_agent(), path)


def _write_state_dict(path: Path) -> None:
    from ckptcompat.checkpoint import legacy

    legacy.write_state_dict(_mock_agent().state_dict(), path)


def _write_legacy_format(path: Path) -> None:
    _torch().save(_mock_agent().state_dict(), path, _use_new_zipfile_serialization=False)


def _write_protocol4(path: Path) -> None:
    torch = _torch()
    torch.save({"weight": torch.arange(4, dtype=torch.float32), "step": 3}, path, pickle_protocol=4)


def _write_uint16(path: Path) -> None:
    torch = _torch()
    _save({"counts": torch.tensor([1, 2, 65535], dtype=torch.uint16)})(path)


def _rewrite_pickle(src: bytes, path: Path, edit: Callable[[bytes], bytes]) -> None:
    """Copy a torch zip with its data.pkl edited, records in the same order, fixed dates."""
    with zipfile.ZipFile(io.BytesIO(src)) as zin, zipfile.ZipFile(path, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/data.pkl"):
                data = edit(data)
            zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)


def _write_numpy1_array(path: Path) -> None:
    # What numpy 1.x writes: its GLOBALs name numpy.core.* where numpy 2 names numpy._core.*.
    # Protocol-2 GLOBAL arguments are newline-terminated text, so renaming keeps the stream valid.
    from ckptcompat import torch_compat

    buf = io.BytesIO()
    torch_compat.save(_numpy("array"), buf)
    _rewrite_pickle(
        buf.getvalue(), path, lambda pkl: pkl.replace(b"cnumpy._core.", b"cnumpy.core.")
    )


def _write_float8_e8m0fnu(path: Path) -> None:
    # torch.float8_e8m0fnu exists from 2.7; the writer cell (2.6) lacks it, so rename the
    # GLOBAL of a float8 dtype it has. The pickle's root is the dtype object itself.
    from ckptcompat import torch_compat

    buf = io.BytesIO()
    torch_compat.save(_torch().float8_e5m2, buf)
    _rewrite_pickle(
        buf.getvalue(), path, lambda pkl: pkl.replace(b"\nfloat8_e5m2\n", b"\nfloat8_e8m0fnu\n")
    )


def _write_truncated_zip(path: Path) -> None:
    from ckptcompat import torch_compat

    buf = io.BytesIO()
    torch_compat.save(_mock_agent().state_dict(), buf)
    data = buf.getvalue()
    path.write_bytes(data[: len(data) // 2])


_LFS_POINTER = (
    "version https://git-lfs.github.com/spec/v1\n"
    "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
    "size 2105\n"
)
_HTML = (
    "<!DOCTYPE html>\n<html><head><title>Sign in</title></head>\n"
    "<body><p>Please sign in to download this file.</p></body></html>\n"
)


def _write_bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


CORPUS: tuple[CorpusFile, ...] = (
    CorpusFile(
        "whole_mock_agent.pt", "a whole pickled MockAgent (torch.save(agent))", _save(_mock_agent)
    ),
    CorpusFile("namespace_dict.pt", "a dict holding an argparse.Namespace", _save(_namespace)),
    CorpusFile(
        "numpy_float64_scalar.pt", "a numpy float64 scalar", _save(lambda: _numpy("scalar"))
    ),
    CorpusFile("numpy_float32_array.pt", "a numpy float32 array", _save(lambda: _numpy("array"))),
    CorpusFile(
        "numpy_rng_state.pt",
        "numpy's legacy RNG state tuple (np.random.get_state())",
        _save(_rng_state),
    ),
    CorpusFile("bytes.pt", "a dict holding bytes", _save({"blob": b"\x00\x01ckpt"})),
    CorpusFile("set.pt", "a dict holding a set of ints", _save({"seen_epochs": {1, 2, 3}})),
    CorpusFile("defaultdict.pt", "a collections.defaultdict(list) with items", _save(_defaultdict)),
    CorpusFile("dataclass.pt", "a user dataclass instance (CorpusConfig)", _save(CorpusConfig)),
    CorpusFile(
        "enum_member.pt",
        "a dict holding an Enum member (CorpusMode.TRAIN)",
        _save({"mode": CorpusMode.TRAIN}),
    ),
    CorpusFile(
        "pathlib_path.pt", "a dict holding a pathlib.Path", _save({"data_dir": Path("runs/corpus")})
    ),
    CorpusFile(
        "git_lfs_pointer.pt",
        "a Git-LFS pointer file named .pt",
        _write_bytes(_LFS_POINTER.encode()),
    ),
    CorpusFile("html_page.pt", "an HTML sign-in page saved as .pt", _write_bytes(_HTML.encode())),
    CorpusFile("truncated_zip.pt", "the first half of a state_dict zip", _write_truncated_zip),
    CorpusFile("empty.pt", "a zero-byte file", _write_bytes(b"")),
    CorpusFile(
        "corpus_v3.pt",
        "safe format v1 (SimpleCheckpointManager, MockAgent, epoch 3)",
        _write_safe_v1,
    ),
    CorpusFile("model_0007.pt", "G1: a whole pickled PolicyRecord holding a MockAgent", _write_g1),
    CorpusFile(
        "corpus__e5__s1200__t42__sc2500.pt",
        "G2: a whole pickled RecurrentAgent",
        _write_g2,
        numerics=True,
    ),
    CorpusFile("state_dict.pt", "a bare state_dict (MockAgent)", _write_state_dict),
    CorpusFile(
        "legacy_format_state_dict.pt",
        "a state_dict in the legacy non-zip format (_use_new_zipfile_serialization=False)",
        _write_legacy_format,
        deterministic=False,
    ),
    CorpusFile("protocol4.pt", "tensors and ints saved with pickle_protocol=4", _write_protocol4),
    CorpusFile(
        "tensor_uint16.pt",
        "a uint16 tensor (_rebuild_tensor_v3 + GLOBAL torch.uint16)",
        _write_uint16,
    ),
    CorpusFile(
        "numpy1_array.pt",
        "a float32 array with numpy-1 names (numpy.core.*): a numpy-2 pickle with its "
        "GLOBALs renamed the way numpy < 2 writes them",
        _write_numpy1_array,
    ),
    CorpusFile(
        "dtype_float8_e8m0fnu.pt",
        "the dtype torch.float8_e8m0fnu (new in torch 2.7), renamed from float8_e5m2",
        _write_float8_e8m0fnu,
    ),
)
