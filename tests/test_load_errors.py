"""parse_weights_only_error on the recorded wordings of torch 2.3-2.15.

The cells exercise their own wording in test_torch_compat.py; these strings (copied from
/work/shared/reference/torch_versions.md section 5 and from the 2.15 source) pin the
versions no default cell runs, e.g. 2.7's stripped ``builtins.`` and 2.9's blank line.
"""

from __future__ import annotations

import pickle

import pytest

from ckptcompat.load_errors import parse_weights_only_error

pytestmark = pytest.mark.one_cell  # pure string parsing: no torch behaviour involved

_UNSAFE = (
    "Re-running `torch.load` with `weights_only` set to `False` will likely succeed, "
    "but it can result in arbitrary code execution. Do it only if you got the file from "
    "a trusted source."
)
_DOCS = (
    "\n\nCheck the documentation of torch.load to learn more about types accepted by "
    "default with weights_only https://pytorch.org/docs/stable/generated/torch.load.html."
)


def _wrap_global(inner: str, v26: bool = True) -> str:
    lead = "In PyTorch 2.6, we changed the default value ... " if v26 else ""
    return (
        "Weights only load failed. This file can still be loaded, to do so you have two "
        "options, \x1b[1mdo those steps only if you trust the source of the checkpoint\x1b[0m. "
        f"\n\t(1) {lead}{_UNSAFE}\n\t(2) Alternatively, to load with `weights_only=True` please "
        f"check the recommended steps in the following error message.\n\tWeightsUnpickler "
        f"error: {inner}{_DOCS}"
    )


def _wrap_other(inner: str, blank_line: bool) -> str:
    sep = "\n\n" if blank_line else ""
    return (
        f"Weights only load failed. {_UNSAFE}\n Please file an issue with the following so "
        "that we can make `weights_only=True` compatible with your use case: "
        f"WeightsUnpickler error: {sep}{inner}{_DOCS}"
    )


@pytest.mark.parametrize(
    ("message", "kind", "globals_", "operand"),
    [
        pytest.param(
            _wrap_global(
                "Unsupported global: GLOBAL argparse.Namespace was not an allowed global by "
                "default. Please use `torch.serialization.add_safe_globals([Namespace])` to "
                "allowlist this global if you trust this class/function.",
                v26=False,
            ),
            "unsupported_global",
            ("argparse.Namespace",),
            None,
            id="2.4-short-suggestion",
        ),
        pytest.param(
            _wrap_global(
                "Unsupported global: GLOBAL getattr was not an allowed global by default. "
                "Please use `torch.serialization.add_safe_globals([getattr])` or the "
                "`torch.serialization.safe_globals([getattr])` context manager to allowlist "
                "this global if you trust this class/function."
            ),
            "unsupported_global",
            ("builtins.getattr",),
            None,
            id="2.7-builtins-stripped",
        ),
        pytest.param(
            _wrap_global(
                "Unsupported global: GLOBAL ultralytics.nn.tasks.DetectionModel was not an "
                "allowed global by default. Please use `torch.serialization.add_safe_globals("
                "[ultralytics.nn.tasks.DetectionModel])` ..."
            ),
            "unsupported_global",
            ("ultralytics.nn.tasks.DetectionModel",),
            None,
            id="2.7-dotted-suggestion",
        ),
        pytest.param(
            _wrap_other("Unsupported operand 118", blank_line=True),
            "unsupported_operand",
            (),
            118,
            id="2.9-blank-line-lfs",
        ),
        pytest.param(
            _wrap_other("Unsupported operand 149", blank_line=False),
            "unsupported_operand",
            (),
            149,
            id="2.6-protocol-4",
        ),
        pytest.param(
            _wrap_other(
                "Can only build Tensor, parameter or OrderedDict objects, but got "
                "<class 'numpy.dtypes.Int64DType'>",
                blank_line=False,
            ),
            "can_only_build",
            ("numpy.dtypes.Int64DType",),
            None,
            id="2.4-build",
        ),
        pytest.param(
            _wrap_other(
                "Trying to instantiate unsupported class <class 'mypkg.Agent'>", blank_line=False
            ),
            "can_only_build",
            ("mypkg.Agent",),
            None,
            id="2.4-newobj",
        ),
        pytest.param(
            _wrap_other(
                "Can only create new object for nn.Parameter or classes allowlisted via "
                "`add_safe_globals` but got <class 'mypkg.Agent'>",
                blank_line=True,
            ),
            "can_only_build",
            ("mypkg.Agent",),
            None,
            id="2.9-newobj",
        ),
        pytest.param(
            _wrap_other(
                "Can only SETITEMS for dict, collections.OrderedDict, collections.Counter, "
                "but got <class 'collections.defaultdict'>",
                blank_line=True,
            ),
            "setitem_restriction",
            ("collections.defaultdict",),
            None,
            id="2.10-setitems",
        ),
        pytest.param(
            "Weights only load failed. ...\n\nTrying to load unsupported GLOBAL posix.system "
            "whose module posix is blocked." + _DOCS,
            "blocked_module",
            ("posix.system",),
            None,
            id="2.5-blocked",
        ),
        pytest.param(
            "Weights only load failed. Re-running ... WeightsUnpickler error: Unsupported "
            "class argparse.Namespace",
            "unsupported_global",
            ("argparse.Namespace",),
            None,
            id="2.3-unsupported-class",
        ),
        pytest.param(
            "Cannot use ``weights_only=True`` with TorchScript archives passed to "
            "``torch.load``. In PyTorch 2.6, we changed ...",
            "torchscript",
            (),
            None,
            id="2.6-torchscript",
        ),
        pytest.param(
            _wrap_other(
                "Object created by NEWOBJ was not initialized by BUILD; the pickle data is "
                "likely corrupt or malicious",
                blank_line=True,
            ),
            "other",
            (),
            None,
            id="2.15-newobj-without-build",
        ),
    ],
)
def test_wordings(message: str, kind: str, globals_: tuple[str, ...], operand: int | None) -> None:
    """Guards the parser against each recorded wording (see the ids)."""
    failure = parse_weights_only_error(pickle.UnpicklingError(message))
    assert failure.kind == kind
    assert failure.globals == globals_
    assert failure.operand == operand
    assert "Check the documentation" not in failure.message
