"""The curated allowlist (scan/allowlist.py)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ckptcompat.scan import allowlist
from ckptcompat.scan.danger import is_dangerous


def test_protocol_2_names_are_normalised_like_torch_does() -> None:
    """Guards '__builtin__.set' (how protocol 2 spells builtins) counting as an offender."""
    assert allowlist.normalise("__builtin__.set") == "builtins.set"
    assert allowlist.normalise("copy_reg._reconstructor") == "copyreg._reconstructor"
    assert allowlist.partition(["__builtin__.set"]) == (["builtins.set"], [])


def test_partition_keeps_order_and_names_every_offender() -> None:
    """Guards offenders being reported one at a time (torch's own error names only one)."""
    curated, offenders = allowlist.partition(
        ["collections.OrderedDict", "x.Y", "builtins.getattr", "x.Y", "posix.system"]
    )
    assert curated == ["collections.OrderedDict"]
    assert offenders == ["x.Y", "builtins.getattr", "posix.system"]


@pytest.mark.parametrize(
    "name",
    ["builtins.eval", "builtins.exec", "builtins.getattr", "os.system", "posix.system",
     "subprocess.Popen", "importlib.import_module", "runpy.run_path", "pickle.loads",
     "__builtin__.eval", "nt.system"],
)  # fmt: skip
def test_dangerous_globals_are_never_curated(name: str) -> None:
    """Guards a code-executing global slipping onto the allowlist."""
    assert is_dangerous(name)
    assert allowlist.partition([name]) == ([], [allowlist.normalise(name)])


def test_curated_entries_are_not_dangerous() -> None:
    """Guards the table itself listing a dangerous name."""
    assert not [e.name for e in allowlist.CURATED if is_dangerous(e.name)]


def test_resolve_refuses_unlisted_names_before_importing() -> None:
    """Guards resolve() importing a module a file names that is not on the list."""
    code = (
        "import sys\n"
        "from ckptcompat.scan import allowlist\n"
        "try:\n    allowlist.resolve(['json.decoder.JSONDecoder'])\n"
        "except KeyError:\n    print('refused', 'json.decoder' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["refused", "False"]


def test_numpy_spellings_resolve_to_the_running_numpy() -> None:
    """Guards numpy-1 files ('numpy.core.*') being unallowlistable under numpy 2 on 2.6+."""
    major = int(np.__version__.split(".")[0])
    other = "numpy.core" if major >= 2 else "numpy._core"
    own = "numpy._core" if major >= 2 else "numpy.core"
    [aliased] = allowlist.resolve([f"{other}.multiarray._reconstruct"])
    assert aliased == (np.ndarray.__reduce__(np.zeros(1))[0], f"{other}.multiarray._reconstruct")
    [plain] = allowlist.resolve([f"{own}.multiarray._reconstruct"])
    assert not isinstance(plain, tuple)


def test_numpy_dtype_brings_the_concrete_dtype_classes() -> None:
    """Guards 'Can only build ... numpy.dtypes.Float32DType' after allowlisting numpy.dtype."""
    entries = allowlist.resolve(["numpy.dtype"])
    assert type(np.dtype(np.float32)) in entries
    assert type(np.dtype(np.uint32)) in entries  # np.random.get_state() needs it


def test_allowlist_imports_no_policy_module() -> None:
    """Guards the dependency direction: checkpoint/ never imports policy/."""
    code = (
        "import sys, ckptcompat.scan.allowlist\n"
        "print(any(m.startswith('ckptcompat.policy') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("group", ["agent", "torch.nn", "gymnasium", "numpy", "stdlib"])
def test_every_curated_name_resolves_here(group: str) -> None:
    """Guards a stale entry (class renamed or moved) that would fail only at load time."""
    names = [e.name for e in allowlist.CURATED if e.group == group]
    assert names
    assert len(allowlist.resolve(names)) >= len(names)


def test_numpy_random_pickling_helpers_are_not_dangerous() -> None:
    """Guards the ``_pickle`` component row flagging numpy's generator ctors
    (``numpy.random._pickle.__generator_ctor``...): every file holding a numpy Generator
    was called unsafe, and ckptcompat's load refused it even allowlisted on torch < 2.10.
    Only those three names are exempt: anything else under ``_pickle`` stays refused."""
    for fn in ("__bit_generator_ctor", "__generator_ctor", "__randomstate_ctor"):
        assert not is_dangerous(f"numpy.random._pickle.{fn}")
    for name in ("numpy.random._pickle.loads", "_pickle.loads", "pickle.loads", "numpy.load"):
        assert is_dangerous(name), name
