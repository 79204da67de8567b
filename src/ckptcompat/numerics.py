"""The numerics fingerprint and the reproducible-numerics mode of the harness's own processes.

Why. The same torch on another CPU takes other kernels and differs in the last bits: ATen
dispatches its vectorised CPU kernels by the CPU's capability (``DEFAULT``/``AVX2``/
``AVX512``), MKL picks a code branch per CPU (Intel or AMD, AVX2 or AVX-512), oneDNN JIT-
compiles for the ISA it finds, and glibc's libm picks FMA variants by CPU features. Measured
on one machine (torch 2.4.1, the stored recurrent PPO update of the goldens): eight kernel
settings (``ATEN_CPU_CAPABILITY`` x ``MKL_CBWR`` x oneDNN on/off) gave eight parameter digests.
A bitwise claim is therefore only meaningful with a fingerprint of the kernel path.

The reproducible mode pins every one of those choices to a path every x86-64 CPU runs the same
way, and is set by the harness for the processes it starts (golden production, the producing-
cell replays, the regeneration tests, bitwise resume checks), never for a user's own training:

* ``ATEN_CPU_CAPABILITY=default``: ATen's baseline kernels (no AVX), compiled for every x86-64;
* ``MKL_CBWR=COMPATIBLE``: MKL's conditional-numerical-reproducibility branch, documented to
  give the same results on all Intel and compatible processors (AMD included);
* oneDNN off (``torch.backends.mkldnn.enabled = False``, applied by :func:`apply` after torch
  is imported -- torch has no environment variable for it -- which ``torch_compat`` calls
  at import, so every process of ours that computes, children included, gets it);
* one torch thread (the summation order of a parallel reduction depends on the thread count).

Proved, not assumed: :mod:`ckptcompat.harness.emulate` re-runs the bitwise checks and golden
regeneration under every kernel path this machine can force (ATen capabilities, MKL branches,
MKL instruction caps, oneDNN ISA caps, glibc hwcaps masks that hide FMA/AVX2/AVX-512 from
libm) and requires identical bytes inside the mode, and shows, as a control, that the paths
differ outside it. Where no such mode exists (not x86-64, or a BLAS other than MKL, e.g.
arm64 with OpenBLAS) a fingerprint is never "reproducible" and checks fall back to tolerances.
libm's results may differ between glibc releases, so the C library's version is part of what
must match.

This module (standard library only, below ``torch_compat``) imports neither torch nor numpy;
:func:`fingerprint` reads torch's state only when torch is already imported by the process.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "MODE_ENV",
    "ONEDNN_ENV",
    "REPRODUCIBLE_ENV",
    "Comparison",
    "apply",
    "compare",
    "describe",
    "fingerprint",
    "is_reproducible",
    "reproducible_env",
    "requested",
]

#: Set to ``reproducible`` by the harness in every process whose results must be bitwise.
MODE_ENV = "CKPTCOMPAT_NUMERICS"
#: ``off``/``on``: oneDNN for this process (the harness's kernel-path emulation sets it; the
#: reproducible mode always turns oneDNN off).
ONEDNN_ENV = "CKPTCOMPAT_ONEDNN"
#: Variables the mode sets (they must be in the environment before torch initialises).
REPRODUCIBLE_ENV: Mapping[str, str] = {
    MODE_ENV: "reproducible",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "COMPATIBLE",
}
#: CPU features worth naming in a fingerprint: what ATen, MKL, oneDNN and libm dispatch on.
_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "asimd", "sve",
)  # fmt: skip
#: Fingerprint fields that must agree for a bitwise comparison between reproducible-mode
#: processes: the CPU is deliberately absent, the rest decides which code runs.
_REPRODUCIBLE_KEY = (
    "machine", "libc", "aten_capability", "blas", "mkl_cbwr", "onednn", "threads",
)  # fmt: skip


def requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``environ`` (default ``os.environ``) asks for the reproducible mode."""
    env = os.environ if environ is None else environ
    return env.get(MODE_ENV, "") == REPRODUCIBLE_ENV[MODE_ENV]


def reproducible_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """``base`` (default ``os.environ``) with the mode's variables set, for a child process.

    Values already in ``base`` for those variables (a machine's or user's
    ``ATEN_CPU_CAPABILITY=avx2``) are overridden: the mode decides the kernel path.
    """
    return {**(os.environ if base is None else base), **REPRODUCIBLE_ENV}


def apply() -> bool:
    """Apply the torch flags of this process's requested mode; True when the mode is on.

    Called by ``torch_compat`` at import (and by the harness's entry points), after
    ``import torch``, before computing; idempotent. In the reproducible mode: oneDNN off and
    one torch thread. Outside it only ``CKPTCOMPAT_ONEDNN=off|on`` is honoured (the
    emulation's control runs); a user's process that sets neither is left untouched.
    """
    import torch

    if requested():
        torch.backends.mkldnn.enabled = False
        torch.set_num_threads(1)
        return True
    onednn = os.environ.get(ONEDNN_ENV, "").lower()
    if onednn in ("off", "on"):
        torch.backends.mkldnn.enabled = onednn == "on"
    return False


# ------------------------------------------------------------------------ the fingerprint
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of /proc/cpuinfo (empty where absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


@functools.cache
def _cpu() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    model = info.get("model name") or info.get("Processor") or platform.processor() or "unknown"
    ident = "/".join(info[k] for k in ("cpu family", "model", "stepping", "CPU part") if k in info)
    return {
        "cpu_vendor": info.get("vendor_id") or info.get("CPU implementer") or "unknown",
        "cpu_model": f"{model} ({ident})" if ident else model,
        "cpu_flags": [f for f in _FLAGS if f in flags],
    }


@functools.cache
def _blas(torch: Any) -> tuple[str, str | None]:
    """(BLAS name, MKL version) from ``torch.__config__.show()``: fixed per torch build."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([\w.\-]+)", config)
    return (blas.group(1) if blas else "unknown"), (mkl.group(1) if mkl else None)


def _torch_facts() -> dict[str, Any]:
    """Kernel-path facts of the torch already imported here (None values without torch)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return dict.fromkeys(
            ("torch", "aten_capability", "blas", "blas_version", "mkl_cbwr", "onednn", "threads")
        )
    blas_name, blas_version = _blas(torch)
    capability = str(torch.backends.cpu.get_cpu_capability()).upper()
    onednn = "absent"
    if torch.backends.mkldnn.is_available():
        onednn = "on" if torch.backends.mkldnn.enabled else "off"
    return {
        "torch": str(torch.__version__),
        # torch < 2.15 reports the baseline path as "NO AVX", 2.15 as "DEFAULT".
        "aten_capability": "DEFAULT" if capability == "NO AVX" else capability,
        "blas": blas_name,
        "blas_version": blas_version,
        "mkl_cbwr": (os.environ.get("MKL_CBWR") or "AUTO") if blas_name == "mkl" else None,
        "onednn": onednn,
        "threads": int(torch.get_num_threads()),
    }


def fingerprint() -> dict[str, Any]:
    """The numerics fingerprint of this process: what decides which kernels compute.

    Keys: ``machine`` (``x86_64``), ``system``, ``libc`` (``glibc 2.36``), ``cpu_vendor``,
    ``cpu_model`` (with family/model/stepping), ``cpu_flags`` (the SIMD features among
    :data:`_FLAGS`), ``torch``, ``aten_capability`` (``DEFAULT``/``AVX2``/``AVX512``...),
    ``blas`` (``mkl``, ``openblas``...), ``blas_version``, ``mkl_cbwr`` (MKL's branch,
    ``AUTO`` when unset), ``onednn`` (``on``/``off``/``absent``), ``threads`` (torch's
    intra-op threads), ``glibc_tunables``, ``mode`` (``reproducible`` or ``native``) and
    ``reproducible`` (bool, :func:`is_reproducible`). Torch's fields are None when torch is
    not imported in this process. JSON primitives only.
    """
    libc, libc_version = platform.libc_ver()
    fp: dict[str, Any] = {
        "machine": platform.machine(),
        "system": platform.system(),
        "libc": f"{libc} {libc_version}".strip() or "unknown",
        **_cpu(),
        **_torch_facts(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES") or None,
        "mode": "reproducible" if requested() else "native",
    }
    fp["reproducible"] = is_reproducible(fp)
    return fp


def is_reproducible(fp: Mapping[str, Any]) -> bool:
    """True when ``fp`` was taken in the reproducible mode with every pin in effect.

    Needs an x86-64 machine with MKL as torch's BLAS (no CPU-independent branch exists for
    other BLAS libraries), ATen on its baseline kernels, MKL on ``COMPATIBLE``, oneDNN not in
    use and one thread.
    """
    return bool(
        fp.get("mode") == "reproducible"
        and fp.get("machine") in ("x86_64", "AMD64")
        and fp.get("aten_capability") == "DEFAULT"
        and fp.get("blas") == "mkl"
        and str(fp.get("mkl_cbwr") or "").startswith("COMPATIBLE")
        and fp.get("onednn") in ("off", "absent")
        and fp.get("threads") == 1
    )


def describe(fp: Mapping[str, Any] | None) -> str:
    """One line naming a fingerprint's kernel path, e.g.
    ``AVX512/mkl AUTO/oneDNN on/2 threads, AMD EPYC (25/17/1), glibc 2.36``."""
    if not fp:
        return "not recorded"
    blas = f"{fp.get('blas')} {fp.get('mkl_cbwr')}" if fp.get("mkl_cbwr") else fp.get("blas")
    mode = "reproducible mode, " if fp.get("reproducible") else ""
    return (
        f"{mode}{fp.get('aten_capability')}/{blas}/oneDNN {fp.get('onednn')}/"
        f"{fp.get('threads')} thread(s), {fp.get('cpu_model')} ({fp.get('machine')}), "
        f"{fp.get('libc')}"
    )


@dataclass(frozen=True)
class Comparison:
    """Whether two processes' results may be compared bit for bit, and why (not).

    Attributes:
        bitwise: True when the same inputs must give the same bits in both.
        reason: why not, e.g. ``"bitwise not compared: producer AVX512/mkl AUTO/..., here
            DEFAULT/mkl COMPATIBLE/..."``; empty when ``bitwise``.
    """

    bitwise: bool
    reason: str


def compare(producer: Mapping[str, Any] | None, here: Mapping[str, Any]) -> Comparison:
    """May results of ``producer``'s process be compared bitwise with this one's (``here``)?

    Both reproducible: yes when machine, C library, kernel choices and threads agree (the
    CPU may differ; that is the mode's point). Otherwise only when the whole fingerprint
    (CPU model and features included) agrees. A producer that recorded no fingerprint
    (golden generation 1) is never compared bitwise.
    """
    if not producer:
        return Comparison(False, "bitwise not compared: the producer recorded no numerics "
                                 f"fingerprint; here {describe(here)}")  # fmt: skip
    if is_reproducible(producer) and is_reproducible(here):
        differing = [k for k in _REPRODUCIBLE_KEY if producer.get(k) != here.get(k)]
    else:
        ignore = {"torch", "reproducible", "mode", "system", "blas_version"}
        keys = (set(producer) | set(here)) - ignore
        differing = sorted(k for k in keys if producer.get(k) != here.get(k))
    if not differing:
        return Comparison(True, "")
    return Comparison(
        False,
        f"bitwise not compared: producer {describe(producer)}, here {describe(here)} "
        f"(differ in {', '.join(differing)})",
    )
