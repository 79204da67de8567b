"""Global RNG streams as safe-format primitives: capture, validate, restore.

The trainer state saves the three global generators a training loop draws from
(docs/design.md section 7, "RNG use is through the saved generators"):

* ``"torch"``: ``torch.get_rng_state()``, a uint8 tensor (the CPU default generator only;
  CUDA generators are not saved).
* ``"numpy"``: the legacy global ``np.random`` MT19937 state as
  ``{"bit_generator": "MT19937", "key": [624 ints], "pos": int, "has_gauss": int,
  "gauss": float}``. ``np.random.get_state()`` returns a tuple holding an ndarray, which a
  weights-only load refuses without an allowlist, hence the lists.
* ``"python"``: ``random.getstate()`` as ``[version, [625 ints], gauss_next]``.

Generators an environment owns (``np.random.Generator`` from ``reset(seed=...)``) are not
global and are reseeded by the trainer instead.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch

from ckptcompat.errors import CorruptCheckpointError

__all__ = ["capture_rng_state", "restore_rng_state", "validate_rng_state"]

_MT_KEY_WORDS = 624
_PY_STATE_WORDS = 625


def capture_rng_state() -> dict[str, Any]:
    """The current torch (CPU), numpy (global) and python ``random`` states as primitives."""
    numpy_state = np.random.get_state(legacy=False)
    python_version, python_words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state().clone(),
        "numpy": {
            "bit_generator": str(numpy_state["bit_generator"]),
            "key": [int(word) for word in numpy_state["state"]["key"]],
            "pos": int(numpy_state["state"]["pos"]),
            "has_gauss": int(numpy_state["has_gauss"]),
            "gauss": float(numpy_state["gauss"]),
        },
        "python": [int(python_version), [int(w) for w in python_words], gauss_next],
    }


def _bad(path: str | os.PathLike[str] | None, stream: str, found: str) -> CorruptCheckpointError:
    return CorruptCheckpointError(
        f"the trainer state's {stream} RNG state is malformed",
        path=path,
        expected=f"rng[{stream!r}] as ckptcompat.checkpoint.rng documents it",
        found=found,
        fix="restore the file from its source or resume from another epoch",
    )


def validate_rng_state(rng: Any, path: str | os.PathLike[str] | None = None) -> None:
    """Check the shape of a saved ``rng`` dict without touching any generator.

    Raises:
        CorruptCheckpointError: a stream missing or not in the documented form.
    """
    if type(rng) is not dict:
        raise _bad(path, "all", f"a {type(rng).__qualname__}")
    state = rng.get("torch")
    if not (isinstance(state, torch.Tensor) and state.dtype == torch.uint8 and state.dim() == 1):
        raise _bad(path, "torch", repr(state)[:80])
    numpy_state = rng.get("numpy")
    if not (
        type(numpy_state) is dict
        and numpy_state.get("bit_generator") == "MT19937"
        and type(numpy_state.get("key")) is list
        and len(numpy_state["key"]) == _MT_KEY_WORDS
        and type(numpy_state.get("pos")) is int
        and type(numpy_state.get("has_gauss")) is int
        and type(numpy_state.get("gauss")) is float
    ):
        raise _bad(path, "numpy", repr(numpy_state)[:80])
    python_state = rng.get("python")
    if not (
        type(python_state) is list
        and len(python_state) == 3
        and type(python_state[0]) is int
        and type(python_state[1]) is list
        and len(python_state[1]) == _PY_STATE_WORDS
        and (python_state[2] is None or type(python_state[2]) is float)
    ):
        raise _bad(path, "python", repr(python_state)[:80])


def restore_rng_state(rng: dict[str, Any], path: str | os.PathLike[str] | None = None) -> None:
    """Set torch's CPU, numpy's global and python's ``random`` generators from ``rng``.

    Validates all three streams first, so a malformed state changes no generator.

    Raises:
        CorruptCheckpointError: see :func:`validate_rng_state`.
    """
    validate_rng_state(rng, path)
    numpy_state = rng["numpy"]
    version, words, gauss_next = rng["python"]
    torch.set_rng_state(rng["torch"].cpu())
    np.random.set_state(
        {
            "bit_generator": numpy_state["bit_generator"],
            "state": {
                "key": np.asarray(numpy_state["key"], dtype=np.uint32),
                "pos": numpy_state["pos"],
            },
            "has_gauss": numpy_state["has_gauss"],
            "gauss": numpy_state["gauss"],
        }
    )
    random.setstate((version, tuple(words), gauss_next))
