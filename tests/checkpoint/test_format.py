"""Safe format v1 payloads: what they may hold, how they validate, RNG streams."""

from __future__ import annotations

import io
import random
from typing import Any

import numpy as np
import pytest
import torch

from ckptcompat import torch_compat
from ckptcompat.agents import MockAgent
from ckptcompat.checkpoint.format import (
    AGENT_FORMAT,
    FORMAT_VERSION,
    build_agent_payload,
    build_trainer_payload,
    created_at_now,
    validate_agent_payload,
    validate_trainer_payload,
)
from ckptcompat.checkpoint.rng import capture_rng_state, restore_rng_state
from ckptcompat.errors import (
    AgentMismatchError,
    CheckpointError,
    CorruptCheckpointError,
    IncompatibleCheckpointError,
)

_PRIMITIVES = (dict, list, tuple, str, int, float, bool, type(None), torch.Tensor)


def _agent_payload(**overrides: Any) -> dict[str, Any]:
    torch.manual_seed(0)
    args: dict[str, Any] = {
        "run": "r",
        "epoch": 0,
        "agent_step": 0,
        "total_time_s": 0.0,
        "score": None,
    }
    args.update(overrides)
    return build_agent_payload(MockAgent(), **args)


def _round_trip(payload: dict[str, Any]) -> Any:
    buffer = io.BytesIO()
    torch_compat.save(payload, buffer)
    buffer.seek(0)
    return torch_compat.load(buffer)


def _assert_only_primitives(value: Any, where: str = "payload") -> None:
    assert type(value) in _PRIMITIVES, f"{where} is a {type(value)}"
    if type(value) is dict:
        for key, item in value.items():
            _assert_only_primitives(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for i, item in enumerate(value):
            _assert_only_primitives(item, f"{where}[{i}]")


def test_agent_payload_is_primitives_and_loads_weights_only() -> None:
    """Guards a str subclass (torch.__version__ is a TorchVersion) or an OrderedDict in the
    payload: each pickles as a global that weights_only=True refuses without an allowlist."""
    payload = _agent_payload(score=1.5, extra={"note": "x"})
    loaded = validate_agent_payload(_round_trip(payload), None)
    _assert_only_primitives(loaded)
    assert loaded["format"] == AGENT_FORMAT
    assert loaded["format_version"] == FORMAT_VERSION
    meta = loaded["metadata"]
    assert set(meta["saved_by"]) == {"torch", "numpy", "python", "ckptcompat"}
    assert meta["saved_by"]["torch"] == str(torch.__version__)
    assert meta["score"] == 1.5
    assert loaded["agent"]["class_path"] == "ckptcompat.agents.mock.MockAgent"
    assert set(loaded["state_dict"]) == {
        "actor.weight",
        "actor.bias",
        "critic.weight",
        "critic.bias",
    }


def test_source_date_epoch_makes_bytes_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    """Guards goldens that differ on regeneration because created_at is wall-clock time."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert created_at_now() == "2023-11-14T22:13:20Z"
    blobs = []
    for _ in range(2):
        buffer = io.BytesIO()
        torch_compat.save(_agent_payload(), buffer)
        blobs.append(buffer.getvalue())
    assert blobs[0] == blobs[1]


def test_newer_format_version_is_refused_with_the_fix() -> None:
    """Guards an old reader half-loading a file written by a newer ckptcompat."""
    payload = _agent_payload()
    payload["format_version"] = 3
    with pytest.raises(IncompatibleCheckpointError) as info:
        validate_agent_payload(_round_trip(payload), "x.pt")
    assert "checkpoint format_version 3 is newer than this ckptcompat supports (<= 1)" in str(
        info.value
    )
    assert "re-save with format_version=1" in str(info.value)


def test_foreign_payloads_are_not_agents() -> None:
    """Guards a bare state_dict or a trainer state being read as an agent checkpoint."""
    with pytest.raises(IncompatibleCheckpointError, match=r"not a ckptcompat\.agent"):
        validate_agent_payload({"actor.weight": torch.zeros(2, 4)}, "x.pt")
    with pytest.raises(IncompatibleCheckpointError, match=r"format='ckptcompat\.trainer_state'"):
        validate_agent_payload({"format": "ckptcompat.trainer_state"}, "x.pt")
    with pytest.raises(IncompatibleCheckpointError):
        validate_agent_payload([1, 2], "x.pt")


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("state_dict",), None),
        (("agent", "class_path"), 3),
        (("metadata", "epoch"), "0"),
        (("metadata", "epoch"), -1),
        (("metadata", "score"), "high"),
        (("metadata",), None),
        (("format_version",), "1"),
    ],
)
def test_missing_or_mistyped_fields_are_corrupt(path: tuple[str, ...], value: Any) -> None:
    """Guards a KeyError/TypeError traceback (or a silent default) on a damaged payload."""
    payload = _agent_payload()
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is None:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    with pytest.raises(CorruptCheckpointError, match=path[-1]):
        validate_agent_payload(payload, "x.pt")


def test_saved_config_must_be_primitives() -> None:
    """Guards a config holding objects that a later weights-only load would refuse."""
    payload = _agent_payload()
    payload["agent"]["config"]["observation_space"] = ("Box",)
    with pytest.raises(AgentMismatchError, match="observation_space"):
        validate_agent_payload(payload, "x.pt")


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"score": float("nan")}, "score must be a finite number"),
        ({"score": True}, "score must be a finite number"),
        ({"epoch": -1}, "epoch must be a non-negative int"),
        ({"epoch": 1.0}, "epoch must be a non-negative int"),
        ({"agent_step": None}, "agent_step must be a non-negative int"),
        ({"total_time_s": -1.0}, "total_time_s"),
        ({"extra": {"t": torch.zeros(1)}}, "cannot save extra"),
        ({"extra": {"n": np.float32(1)}}, "cannot save extra"),
    ],
)
def test_bad_metadata_is_refused_at_save(overrides: dict[str, Any], match: str) -> None:
    """Guards NaN scores breaking ranking, and non-primitive extras breaking the safe load."""
    with pytest.raises(CheckpointError, match=match):
        _agent_payload(**overrides)


def test_numpy_integers_are_accepted_as_counts() -> None:
    """Guards a training loop's np.int64 step counter failing the save."""
    payload = _agent_payload(epoch=np.int64(4), agent_step=np.int64(800))
    assert type(payload["metadata"]["epoch"]) is int
    assert payload["metadata"]["agent_step"] == 800


def _adam_with_state() -> tuple[torch.optim.Optimizer, Any]:
    agent = MockAgent()
    optimizer = torch.optim.Adam(agent.parameters(), lr=1e-3)
    agent.critic(torch.ones(2, 4)).sum().backward()
    optimizer.step()
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=3)


def test_trainer_payload_loads_weights_only_and_validates() -> None:
    """Guards optimizer/scheduler state or np.random's ndarray state needing an allowlist."""
    optimizer, scheduler = _adam_with_state()
    payload = build_trainer_payload(
        optimizer, run="r", epoch=0, agent_step=5, scheduler=scheduler, extra={"k": [1, 2]}
    )
    loaded = validate_trainer_payload(_round_trip(payload), None)
    _assert_only_primitives(loaded)
    assert loaded["epoch"] == 0
    assert loaded["scheduler"]["step_size"] == 3
    assert loaded["extra"] == {"k": [1, 2]}
    payload["format_version"] = 2
    with pytest.raises(IncompatibleCheckpointError, match="format_version 2 is newer"):
        validate_trainer_payload(payload, None)


def test_trainer_extra_must_be_primitives() -> None:
    """Guards tensors or objects smuggled into the trainer state's extra."""
    optimizer, _ = _adam_with_state()
    with pytest.raises(CheckpointError, match="cannot save extra"):
        build_trainer_payload(optimizer, run="r", epoch=0, agent_step=0, extra={"x": object()})


def _draws() -> tuple[list[float], list[float], list[float]]:
    return (
        torch.rand(5).tolist(),
        [*np.random.rand(3).tolist(), float(np.random.randn())],  # randn caches a gaussian
        [random.random(), random.gauss(0, 1)],
    )


def test_rng_states_round_trip_through_a_weights_only_load() -> None:
    """Guards a resumed run drawing different random numbers than the uninterrupted one."""
    np.random.randn()  # leave a cached gaussian in numpy's state (has_gauss=1)
    random.gauss(0, 1)
    state = _round_trip(capture_rng_state())
    first = _draws()
    restore_rng_state(state)
    assert _draws() == first


def test_malformed_rng_state_changes_no_generator() -> None:
    """Guards a half-restored RNG (torch set, numpy failed) after a damaged trainer file."""
    state = capture_rng_state()
    state["python"] = [3, [0, 1], None]
    before = torch.get_rng_state()
    with pytest.raises(CorruptCheckpointError, match="python RNG state"):
        restore_rng_state(state)
    assert torch.equal(torch.get_rng_state(), before)
