"""Rebuild a saved agent and adopt its loaded tensors instead of copying them.

The agent is built from the registry by ``class_path`` + saved config (never the code's
current defaults), then ``load_state_dict(strict=True)``. Building it normally allocates
and initialises every parameter only for ``load_state_dict`` to overwrite it, and the
copy costs as much as ``torch.load`` itself (about 57% of a 100 MB load). So the agent is
built on the meta device (shapes and dtypes, no memory, no init, no draws from torch's
global generator) and ``load_state_dict(..., assign=True)`` (torch >= 2.1) makes the
tensors ``torch.load`` just read the agent's parameters and buffers; parameters stay
``nn.Parameter`` with the ``requires_grad`` the constructor gave them.

Two ways (:func:`plan_rebuild` says which and why):

* ``"meta"``: build on meta, adopt. Taken when the meta build succeeds, every tensor the
  agent holds is in the state_dict, no tensor is tied to several names (adopting would
  untie them) and no two saved tensors share storage (adopting would alias two
  independent parameters, so updating one would change the other). After the load no
  tensor may be left on meta, in the parameters, the buffers or any tensor attribute of
  a submodule (a view of a parameter taken in the constructor, a custom
  ``_load_from_state_dict`` that copies): otherwise the copy way starts again.
* ``"copy"``: build normally (allocation, init), ``copy_`` into the agent's own
  tensors, as before. Everything else: constructors that read tensor values,
  non-persistent buffers, tied weights, aliased saved tensors. Adopting into a normally
  built agent is not offered: whatever the constructor derived from the initial
  parameters (views, cached transposes) would silently keep the initial values, where
  on meta it is caught.

Neither way lets the returned agent share memory with anything but itself: the adopted
tensors were read for this call only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from ckptcompat.agents.registry import build_agent
from ckptcompat.errors import AgentMismatchError

__all__ = ["Device", "RebuildPlan", "plan_rebuild", "rebuild_agent"]

Device = str | torch.device
RebuildWay = Literal["meta", "copy"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RebuildPlan:
    """How an agent is rebuilt: the built (not yet loaded) agent, the way, and why.

    Attributes:
        agent: built from the saved class_path + config (on meta for ``"meta"``).
        way: ``"meta"`` or ``"copy"`` (see the module docstring).
        reason: why the way is not ``"meta"``; ``""`` when it is.
    """

    agent: nn.Module
    way: RebuildWay
    reason: str


def _named_tensors(agent: nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    yield from agent.named_parameters(remove_duplicate=False)
    yield from agent.named_buffers(remove_duplicate=False)


def _tied(agent: nn.Module) -> list[str]:
    """Names that reach a tensor already reached by an earlier name."""
    seen: set[int] = set()
    tied = []
    for name, tensor in _named_tensors(agent):
        if id(tensor) in seen:
            tied.append(name)
        seen.add(id(tensor))
    return tied


def _shared_storage(saved: dict[str, Any]) -> list[str]:
    """Saved tensor names whose storage an earlier saved tensor also uses."""
    seen: set[int] = set()
    shared = []
    for name, value in saved.items():
        if isinstance(value, torch.Tensor) and value.device.type != "meta":
            pointer = value.untyped_storage().data_ptr()
            if pointer and pointer in seen:
                shared.append(name)
            seen.add(pointer)
    return shared


def _meta_tensors(agent: nn.Module) -> list[str]:
    """Tensors still on the meta device: parameters, buffers and plain tensor attributes
    of every submodule (also inside a list, tuple or dict attribute, e.g. an LSTM's
    ``_flat_weights``)."""
    left = [name for name, tensor in _named_tensors(agent) if tensor.is_meta]
    for prefix, module in agent.named_modules():
        for attr, value in vars(module).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue  # reported above by name
            values = value.values() if isinstance(value, dict) else value
            if not isinstance(value, list | tuple | dict):
                values = (value,)
            if any(isinstance(v, torch.Tensor) and v.is_meta for v in values):
                left.append(f"{prefix}.{attr}" if prefix else attr)
    return left


def _built(class_path: str, config: dict[str, Any], why: str) -> RebuildPlan:
    """A normally built agent, to be loaded the copy way because of ``why``."""
    return RebuildPlan(build_agent(class_path, config), "copy", why)


def plan_rebuild(class_path: str, config: dict[str, Any], saved: dict[str, Any]) -> RebuildPlan:
    """Build the agent for ``saved`` the cheapest safe way (see the module docstring).

    Raises:
        AgentMismatchError: the class cannot be found or rejects the config (raised by
            the normal build, so the message is the same whatever the way).
    """
    try:
        with torch.device("meta"):
            agent = build_agent(class_path, config)
    except Exception as exc:  # the normal build below raises what matters
        return _built(class_path, config, f"the constructor fails on meta ({type(exc).__name__})")
    if unrestored := [name for name, _ in _named_tensors(agent) if name not in saved]:
        why = f"tensors the state_dict does not restore (non-persistent?): {unrestored[:5]}"
        return _built(class_path, config, why)
    if tied := _tied(agent):
        return _built(class_path, config, f"tied tensors {tied[:5]} would be untied")
    if shared := _shared_storage(saved):
        return _built(class_path, config, f"saved tensors {shared[:5]} share storage")
    return RebuildPlan(agent, "meta", "")


def _check_dtypes(agent: nn.Module, saved: dict[str, Any], class_path: str, path: Any) -> None:
    expected = dict(_named_tensors(agent))
    wrong_dtype = [
        f"{name}: saved {value.dtype}, built {expected[name].dtype}"
        for name, value in saved.items()
        if isinstance(value, torch.Tensor)
        and isinstance(expected.get(name), torch.Tensor)
        and value.dtype != expected[name].dtype
    ]
    if wrong_dtype:
        # copy_ would cast silently and assign would change the agent's dtype; a dtype
        # change means another agent.
        raise AgentMismatchError(
            f"saved tensors of {class_path} have other dtypes than the rebuilt agent",
            path=path,
            found="; ".join(wrong_dtype[:5]),
            fix="load with the code version that saved the checkpoint",
        )


def _load(plan: RebuildPlan, saved: dict[str, Any], class_path: str, path: Any) -> None:
    _check_dtypes(plan.agent, saved, class_path, path)
    try:
        plan.agent.load_state_dict(saved, strict=True, assign=plan.way == "meta")
    except RuntimeError as exc:
        raise AgentMismatchError(
            f"the saved state_dict does not fit {class_path} rebuilt from its config",
            path=path,
            expected="the same keys and shapes",
            found=" ".join(str(exc).split())[:600],
            fix="load with the code version that saved the checkpoint, or migrate it",
        ) from exc


def rebuild_agent(payload: dict[str, Any], path: Path | None, device: Device = "cpu") -> nn.Module:
    """Build the saved class from its saved config, then ``load_state_dict(strict=True)``.

    On the meta way the payload's tensors become the agent's: do not use the payload
    afterwards. Logs the way at DEBUG level (``ckptcompat.checkpoint.rebuild``)
    with the reason when it is not ``"meta"``.

    Args:
        payload: a payload that passed ``validate_agent_payload``.
        path: the file, for messages.
        device: where the returned agent lives.

    Raises:
        AgentMismatchError: unknown class_path, a config the class rejects, missing or
            unexpected keys, other shapes or dtypes.
    """
    class_path, config = payload["agent"]["class_path"], payload["agent"]["config"]
    saved = payload["state_dict"]
    plan = plan_rebuild(class_path, config, saved)
    _load(plan, saved, class_path, path)
    if plan.way == "meta" and (left := _meta_tensors(plan.agent)):
        # A custom _load_from_state_dict, or a tensor attribute not refreshed from its
        # parameter, left meta tensors behind: start again from a normally built agent.
        plan = _built(class_path, config, f"meta tensors left after loading: {left[:5]}")
        _load(plan, saved, class_path, path)
    _log.debug("rebuilt %s from %s the %s way %s", class_path, path, plan.way, plan.reason)
    return plan.agent.to(device)
