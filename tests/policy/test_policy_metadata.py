"""Deprecated PolicyMetadata: every old call pattern, under pytest.deprecated_call."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import pytest

from ckptcompat.policy.policy_metadata import PolicyMetadata

pytestmark = pytest.mark.one_cell  # pure Python dict behaviour; no torch involved


def _md(**kwargs: object) -> PolicyMetadata:
    with pytest.deprecated_call():
        return PolicyMetadata(**kwargs)


def test_defaults_and_required_keys() -> None:
    """Guards the stub that dropped required keys (callers read md['generation'])."""
    md = _md()
    assert dict(md) == {"agent_step": 0, "epoch": 0, "generation": 0, "train_time": 0.0}


def test_positional_and_extra_keys() -> None:
    """Guards PolicyMetadata(agent_step, epoch, generation, train_time, **kwargs)."""
    with pytest.deprecated_call():
        md = PolicyMetadata(10, 2, 1, 3.5, score=0.9, evals={"avg": 1.0})
    assert (md.agent_step, md.epoch, md.generation, md.train_time) == (10, 2, 1, 3.5)
    assert md["score"] == 0.9 and md.evals == {"avg": 1.0}


def test_attribute_access_reads_and_writes_keys() -> None:
    """Guards md.epoch / md.epoch = N (attribute access) on the old dict subclass."""
    md = _md()
    md.epoch = 7
    md.score = 1.5
    assert md["epoch"] == 7 and md["score"] == 1.5
    md._private = "x"  # underscore names are real attributes, not keys
    assert "_private" not in md and md._private == "x"
    with pytest.raises(AttributeError):
        _ = md.missing


def test_required_keys_cannot_be_deleted() -> None:
    """Guards losing 'epoch' through del / pop / delattr (old contract raised)."""
    md = _md(score=1.0)
    with pytest.raises(KeyError):
        del md["epoch"]
    with pytest.raises(KeyError):
        md.pop("agent_step")
    with pytest.raises(AttributeError):
        del md.generation
    del md.score
    assert "score" not in md
    md.clear()
    assert set(md) == {"agent_step", "epoch", "generation", "train_time"}


def test_from_dict_validates_required_keys() -> None:
    """Guards from_dict accepting a dict without the required keys."""
    with pytest.deprecated_call():
        md = PolicyMetadata.from_dict(
            {"agent_step": 1, "epoch": 0, "generation": 0, "train_time": 2}
        )
    assert md.epoch == 0
    with pytest.raises(ValueError, match="missing \\['generation', 'train_time'\\]"):
        PolicyMetadata.from_dict({"agent_step": 1, "epoch": 2})


def test_repr_lists_required_keys_first() -> None:
    """Guards the old repr order (required first, then the rest sorted)."""
    md = _md(zeta=1, alpha=2)
    assert repr(md) == (
        "PolicyMetadata(agent_step=0, epoch=0, generation=0, train_time=0.0, alpha=2, zeta=1)"
    )


def test_maps_to_safe_format_metadata() -> None:
    """Guards train_time <-> total_time_s mapping between the old and new metadata."""
    md = _md(train_time=12.5, epoch=3)
    assert md.to_checkpoint_metadata()["total_time_s"] == 12.5
    back = PolicyMetadata.from_checkpoint_metadata({"epoch": 3, "total_time_s": 4.0})
    assert (back.train_time, back.generation, back.agent_step) == (4.0, 0, 0)


def test_pickles_without_setitems_on_the_subclass() -> None:
    """Guards G1 files: torch >= 2.10 refuses SETITEMS on dict subclasses, even allowlisted."""
    md = _md(epoch=4, score=0.5)
    md._note = "kept"
    clone = pickle.loads(pickle.dumps(md, protocol=2))
    assert clone == md and type(clone) is PolicyMetadata and clone._note == "kept"


def test_warning_points_at_the_caller_line() -> None:
    """Guards a DeprecationWarning blamed on our own module (wrong stacklevel)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        PolicyMetadata()
    assert len(caught) == 1
    assert caught[0].filename == __file__
    assert "SimpleCheckpointManager" in str(caught[0].message)


def test_import_alone_does_not_warn() -> None:
    """Guards the thin stubs' module-level warning (fired on import, once, far from use)."""
    code = "import ckptcompat.policy, ckptcompat.policy.policy_store, ckptcompat.policy.mocks"
    subprocess.run([sys.executable, "-W", "error::DeprecationWarning", "-c", code], check=True)
