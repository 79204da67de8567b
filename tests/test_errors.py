"""ckptcompat.errors: the typed hierarchy and its messages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ckptcompat import errors

pytestmark = pytest.mark.one_cell  # pure Python; no torch involved


#: The errors that are not about a checkpoint, and the builtin each has always been.
_OTHER_FAMILIES = {
    "StatsDBError": ValueError,
    "UnsupportedEnvError": KeyError,
    "InjectedFault": RuntimeError,
    "TaskQueueError": RuntimeError,  # the remote-evaluation queue's server, not a checkpoint
    "TrustedLoadWarning": UserWarning,
}


def test_every_error_is_a_checkpoint_error() -> None:
    """Guards a domain failure escaping `except CheckpointError`."""
    for name in errors.__all__:
        cls = getattr(errors, name)
        if name not in _OTHER_FAMILIES:
            assert issubclass(cls, errors.CheckpointError), name


def test_other_error_families_keep_their_builtin_base() -> None:
    """Guards old callers' `except ValueError` / `except KeyError` missing a stats-DB or
    env error after the errors moved into this module; and a stats-DB or env error
    being caught as a checkpoint failure."""
    for name, base in _OTHER_FAMILIES.items():
        cls = getattr(errors, name)
        assert issubclass(cls, base), name
        assert not issubclass(cls, errors.CheckpointError), name
    assert issubclass(errors.PolicyMissingError, ValueError)


def test_deprecated_api_raises_the_one_policy_missing_error() -> None:
    """Guards a second PolicyMissingError class: the deprecated API's import path
    (ckptcompat.policy.policy_store) must name the class defined in ckptcompat.errors."""
    from ckptcompat.policy import policy_store

    assert policy_store.PolicyMissingError is errors.PolicyMissingError


def test_message_says_expected_found_and_fix() -> None:
    """Guards messages that name a problem but not what to do about it."""
    err = errors.IncompatibleCheckpointError(
        "checkpoint format_version 3 is newer than this ckptcompat supports",
        path="/d/run_v3.pt",
        expected="format_version <= 1",
        found="format_version 3",
        fix="upgrade ckptcompat or re-save with format_version=1",
    )
    assert str(err) == (
        "/d/run_v3.pt: checkpoint format_version 3 is newer than this ckptcompat supports; "
        "expected format_version <= 1; found format_version 3. "
        "Upgrade ckptcompat or re-save with format_version=1."
    )
    assert err.path == "/d/run_v3.pt"


def test_unsafe_error_lists_each_offender_once() -> None:
    """Guards duplicate or lost names in UnsafeCheckpointError.globals."""
    err = errors.UnsafeCheckpointError("refused", globals=["a.B", "c.D", "a.B"])
    assert err.globals == ("a.B", "c.D")


def test_errors_module_imports_neither_torch_nor_numpy() -> None:
    """Guards the doctor (which must not import torch) pulling torch in through errors."""
    code = "import sys, ckptcompat.errors; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
