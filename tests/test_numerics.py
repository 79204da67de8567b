"""Tests of ckptcompat.numerics: the fingerprint, the mode and bitwise comparability."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

from ckptcompat import numerics

_REPRO: dict[str, Any] = {
    "machine": "x86_64", "system": "Linux", "libc": "glibc 2.36", "cpu_vendor": "AuthenticAMD",
    "cpu_model": "AMD EPYC (25/17/1)", "cpu_flags": ["avx2", "avx512f"], "torch": "2.6.0",
    "aten_capability": "DEFAULT", "blas": "mkl", "blas_version": "2024.2", "mkl_cbwr":
    "COMPATIBLE", "onednn": "off", "threads": 1, "glibc_tunables": None, "mode": "reproducible",
}  # fmt: skip


def _fp(**changes: Any) -> dict[str, Any]:
    fp = {**_REPRO, **changes}
    fp["reproducible"] = numerics.is_reproducible(fp)
    return fp


def test_this_suite_runs_in_the_reproducible_mode() -> None:
    """Guards the suite's bitwise checks running on this machine's own kernel path (they
    would then hold only on the CPU that made the goldens): conftest sets the mode, and
    every pin is really in effect in this process (baseline ATen kernels, MKL's COMPATIBLE
    branch, oneDNN off, one thread)."""
    if os.environ.get(numerics.MODE_ENV) == "native":
        pytest.skip("CKPTCOMPAT_NUMERICS=native: the emulation's control run")
    fp = numerics.fingerprint()
    assert fp["reproducible"], numerics.describe(fp)
    assert fp["aten_capability"] == "DEFAULT" and fp["mkl_cbwr"] == "COMPATIBLE"
    assert not torch.backends.mkldnn.enabled and torch.get_num_threads() == 1


def test_fingerprint_names_the_kernel_path() -> None:
    """Guards a fingerprint that cannot tell two machines apart: it names the CPU, the ATen
    capability, the BLAS and its branch, oneDNN, threads and the C library, as JSON."""
    fp = numerics.fingerprint()
    for key in ("machine", "libc", "cpu_vendor", "cpu_model", "cpu_flags", "aten_capability",
                "blas", "mkl_cbwr", "onednn", "threads", "mode", "reproducible"):  # fmt: skip
        assert key in fp, key
    assert fp["torch"] == str(torch.__version__)
    assert fp["aten_capability"] != "NO AVX"  # normalised across torch versions


@pytest.mark.one_cell
def test_reproducible_needs_every_pin() -> None:
    """Guards claiming reproducibility with a pin missing: any of another ATen capability,
    MKL's automatic branch, oneDNN on, two threads, a non-MKL BLAS (arm64's OpenBLAS) or
    an aarch64 machine makes the fingerprint not reproducible. One cell: pure logic."""
    assert _fp()["reproducible"]
    for change in ({"aten_capability": "AVX2"}, {"mkl_cbwr": "AUTO"}, {"onednn": "on"},
                   {"threads": 2}, {"blas": "openblas", "mkl_cbwr": None},
                   {"machine": "aarch64"}, {"mode": "native"}):  # fmt: skip
        assert not _fp(**change)["reproducible"], change


@pytest.mark.one_cell
def test_compare_ignores_the_cpu_only_inside_the_mode() -> None:
    """Guards the gate failing on hardware: two reproducible fingerprints from an AMD EPYC
    and an Intel Xeon with AMX are bitwise comparable; outside the mode the CPU counts; a
    producer without a fingerprint (golden generation 1) or another glibc (libm may round
    differently) is never compared bitwise, and the reason names both sides. One cell."""
    intel = _fp(cpu_vendor="GenuineIntel", cpu_model="Intel Xeon (6/143/8)",
                cpu_flags=["avx2", "avx512f", "amx_tile"])  # fmt: skip
    assert numerics.compare(_fp(), intel).bitwise
    native_amd = _fp(mode="native", aten_capability="AVX512", mkl_cbwr="AUTO", onednn="on")
    native_intel = {**native_amd, "cpu_model": "Intel Xeon (6/143/8)"}
    assert numerics.compare(native_amd, dict(native_amd)).bitwise
    result = numerics.compare(native_amd, native_intel)
    assert not result.bitwise and "cpu_model" in result.reason
    assert "bitwise not compared" in result.reason and "Intel Xeon" in result.reason
    assert not numerics.compare(None, _fp()).bitwise
    assert "libc" in numerics.compare(_fp(), _fp(libc="glibc 2.39")).reason
    assert not numerics.compare(_fp(), native_amd).bitwise


@pytest.mark.one_cell
def test_reproducible_env_overrides_a_machines_own_pins() -> None:
    """Guards a preset ATEN_CPU_CAPABILITY=avx512 (a CI runner's, a user's) winning over the
    mode in a child process. One cell: pure logic."""
    env = numerics.reproducible_env({"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AVX2"})
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["MKL_CBWR"] == "COMPATIBLE"
    assert numerics.requested(env) and not numerics.requested({})
