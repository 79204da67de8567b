"""Other CPUs emulated on this machine: the reproducible mode is independent of the kernel path.

Each case runs :func:`ckptcompat.harness.emulate.run_path` in child processes (a child per
path: the variables must be set before torch starts). ``nox -s "emulate(t26)"`` runs every
path, golden regeneration and the bitwise tests; this test runs a subset in every cell.
"""

from __future__ import annotations

import pytest

from ckptcompat.harness import emulate
from ckptcompat.harness.golden.read import GOLDEN_ROOT, generation_dir, read_golden

pytestmark = pytest.mark.slow

_INSIDE = ("native", "aten-avx512", "aten-avx2", "mkl-avx2", "onednn-isa-sse41",
           "libm-without-fma-avx2-avx512")  # fmt: skip
_CONTROL = ("native", "aten-default", "mkl-compatible", "onednn-off")


def _paths(names: tuple[str, ...]) -> list[emulate.KernelPath]:
    return [p for p in emulate.available_paths() if p.name in names]


def test_reproducible_mode_gives_one_result_on_every_kernel_path() -> None:
    """Guards goldens and bitwise checks that hold only on the CPU that made them (seen:
    eight digests of one stored recurrent PPO update under eight kernel settings, and every
    generation-1 regeneration test failing on an Intel Xeon): inside the mode, ATen
    capabilities, MKL branches, oneDNN ISA caps and a libm without FMA/AVX2/AVX-512 give the
    same replayed update and fresh init, equal to the committed generation-2 digests."""
    golden = read_golden(generation_dir(GOLDEN_ROOT, "t26"))
    results = [emulate.run_path(p, golden.root, reproducible=True) for p in _paths(_INSIDE)]
    assert len(results) >= 2
    assert len({r.digest for r in results}) == 1, [(r.path, r.detail) for r in results]
    assert {r.aten_capability for r in results} == {"DEFAULT"}
    for name, digest in results[0].detail["ppo_update"].items():
        if golden.producer["torch"].split("+")[0] == _torch_base():
            assert digest == golden.agent(name)["ppo_update"]["params_digest"], name


def test_control_kernel_paths_differ_outside_the_mode() -> None:
    """Guards an emulation that proves nothing (a forced path silently ignored): outside the
    mode the same replay gives more than one result across ATen, MKL and oneDNN paths.

    The paths run one at a time until two results differ: the claim is "more than one",
    so the paths after that cannot change the verdict (a child each, ~3 s of CPU)."""
    golden_dir = generation_dir(GOLDEN_ROOT, "t26")
    results: list[emulate.PathResult] = []
    for path in _paths(_CONTROL):
        results.append(emulate.run_path(path, golden_dir, reproducible=False))
        if len({r.digest for r in results}) >= 2:
            break
    assert len({r.digest for r in results}) >= 2, [(r.path, r.digest) for r in results]


def _torch_base() -> str:
    import torch

    return str(torch.__version__).split("+")[0]
