"""Other CPUs on one machine: the bitwise checks under every kernel path this machine can force.

A machine cannot become another CPU, but it can take the code paths another CPU would take:
ATen's capability (``ATEN_CPU_CAPABILITY``), MKL's branch (``MKL_CBWR``) and instruction cap
(``MKL_ENABLE_INSTRUCTIONS``), oneDNN on/off and its ISA cap (``ONEDNN_MAX_CPU_ISA``), and
glibc's CPU features (``GLIBC_TUNABLES=glibc.cpu.hwcaps=-FMA,...``, which libm's FMA variants
are chosen by). :data:`PATHS` names them; a path this CPU cannot take is left out
(:func:`available_paths`).

Inside the reproducible-numerics mode (:mod:`ckptcompat.numerics`) every path must
give identical bytes; outside it (the control) the paths must give at least two different
results, or the emulation proved nothing. Both are checked by
``tests/harness/test_emulate.py`` (a probe per path) and, for the whole bitwise suite and
golden regeneration, by ``nox -s "emulate(t26)"`` (``python -m ckptcompat.harness.emulate``).

The probe (``python -m ckptcompat.harness.emulate --probe GOLDEN_DIR``) prints one JSON line:
the parameter digest after replaying the golden's stored PPO update of every agent, and the
digest of a freshly initialised RecurrentAgent (orthogonal init: a QR through LAPACK).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptcompat import numerics

__all__ = [
    "PATHS",
    "KernelPath",
    "PathResult",
    "available_paths",
    "main",
    "probe",
    "run_path",
]

_HIDE_FROM_LIBM = "glibc.cpu.hwcaps=-AVX512F,-AVX512VL,-AVX2,-FMA,-FMA4"


@dataclass(frozen=True)
class KernelPath:
    """One forced kernel path: environment variables set for the child process.

    Attributes:
        name: e.g. ``"aten-avx2+mkl-avx2"``.
        env: variables added to the child's environment.
        needs: CPU flags (``/proc/cpuinfo`` names) the path needs; absent -> not available.
    """

    name: str
    env: Mapping[str, str]
    needs: tuple[str, ...] = ()


#: Every kernel path the emulation forces. ``native`` is the machine's own choice.
PATHS: tuple[KernelPath, ...] = (
    KernelPath("native", {}),
    KernelPath("aten-default", {"ATEN_CPU_CAPABILITY": "default"}),
    KernelPath("aten-avx2", {"ATEN_CPU_CAPABILITY": "avx2"}, ("avx2",)),
    KernelPath("aten-avx512", {"ATEN_CPU_CAPABILITY": "avx512"}, ("avx512f",)),
    KernelPath("mkl-compatible", {"MKL_CBWR": "COMPATIBLE"}),
    KernelPath("mkl-avx2", {"MKL_CBWR": "AVX2"}, ("avx2",)),
    KernelPath("mkl-avx512", {"MKL_CBWR": "AVX512"}, ("avx512f",)),
    KernelPath("mkl-sse4_2-instructions", {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"}),
    KernelPath("onednn-off", {numerics.ONEDNN_ENV: "off"}),
    KernelPath("onednn-isa-sse41", {"ONEDNN_MAX_CPU_ISA": "SSE41"}),
    KernelPath("libm-without-fma-avx2-avx512", {"GLIBC_TUNABLES": _HIDE_FROM_LIBM}),
    KernelPath(
        "aten-avx2+mkl-avx2+onednn-off",
        {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", numerics.ONEDNN_ENV: "off"},
        ("avx2",),
    ),
)


def available_paths(paths: Sequence[KernelPath] = PATHS) -> list[KernelPath]:
    """The paths this CPU can take (its ``/proc/cpuinfo`` flags include every ``needs``)."""
    flags = set(numerics.fingerprint()["cpu_flags"])
    return [p for p in paths if set(p.needs) <= flags]


def _child_env(path: KernelPath, reproducible: bool) -> dict[str, str]:
    """This process's environment less any kernel pins, plus ``path`` (and the mode)."""
    pins = {*numerics.REPRODUCIBLE_ENV, numerics.ONEDNN_ENV, "MKL_ENABLE_INSTRUCTIONS",
            "ONEDNN_MAX_CPU_ISA", "GLIBC_TUNABLES"}  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in pins}
    env.update(path.env)
    if reproducible:
        return numerics.reproducible_env(env)
    env[numerics.MODE_ENV] = "native"
    return env


# --------------------------------------------------------------------------- the probe
def probe(golden_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Digests of this process's numerics on one golden directory (run in a child process).

    Returns ``{"fingerprint": ..., "ppo_update": {agent: params digest after replaying the
    stored update}, "init": digest of a seeded RecurentAgent's fresh parameters}``.
    """
    import torch

    numerics.apply()
    from ckptcompat.agents.probe import params_digest
    from ckptcompat.agents.registry import build_agent
    from ckptcompat.harness.golden.read import read_golden
    from ckptcompat.harness.golden.verify import replay_ppo_update

    golden = read_golden(golden_dir)
    updates = {}
    for name in golden.agents:
        from ckptcompat import torch_compat

        rollout = torch_compat.load(golden.path(name, "rollout"))
        agent, _ = replay_ppo_update(golden.root, name, rollout)
        updates[name] = params_digest(agent)
    recurrent = golden.agent("recurrent") if "recurrent" in golden.agents else None
    init = None
    if recurrent is not None:
        torch.manual_seed(0)
        with torch.no_grad():
            init = params_digest(build_agent(recurrent["class_path"], recurrent["config"]))
    return {"fingerprint": numerics.fingerprint(), "ppo_update": updates, "init": init}


@dataclass(frozen=True)
class PathResult:
    """What one kernel path gave.

    Attributes:
        path: the path's name.
        reproducible: run inside the reproducible mode.
        digest: one digest over everything compared (probe digests, golden bytes).
        detail: the parts, e.g. ``{"ppo_update": {...}, "golden_files": "..."}``.
        aten_capability: the capability the child really ran with.
    """

    path: str
    reproducible: bool
    digest: str
    detail: dict[str, Any]
    aten_capability: str


def _run(args: list[str], env: Mapping[str, str], timeout_s: float = 600) -> str:
    proc = subprocess.run(
        [sys.executable, *args], env=dict(env), capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.stdout


def _tree_digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "MANIFEST.json"):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def run_path(
    path: KernelPath,
    golden_dir: Path,
    *,
    reproducible: bool,
    cell: str | None = None,
) -> PathResult:
    """Run the probe on ``golden_dir`` under ``path`` in a child process.

    With ``cell`` the child also regenerates that cell's goldens into a temp directory and
    the digest covers their bytes (MANIFEST aside: it names this machine's CPU).

    Raises:
        RuntimeError: a child process failed (its stderr tail is in the message).
    """
    env = _child_env(path, reproducible)
    out = json.loads(_run(["-m", "ckptcompat.harness.emulate", "--probe", str(golden_dir)],
                          env).strip().splitlines()[-1])  # fmt: skip
    detail: dict[str, Any] = {"ppo_update": out["ppo_update"], "init": out["init"]}
    if cell is not None:
        from ckptcompat.harness.golden.read import generation_dir

        with tempfile.TemporaryDirectory(prefix="ckptcompat-emulate-") as tmp:
            # The golden CLI refuses to produce outside the mode: only regenerate inside it.
            if reproducible:
                _run(["-m", "ckptcompat.harness.golden", tmp, cell], env)
                detail["golden_files"] = _tree_digest(generation_dir(tmp, cell))
    digest = hashlib.sha256(json.dumps(detail, sort_keys=True).encode()).hexdigest()
    return PathResult(
        path.name, reproducible, digest, detail, out["fingerprint"]["aten_capability"]
    )


# --------------------------------------------------------------------------- the CLI
def _pytest(path: KernelPath, keyword: str) -> int:
    env = _child_env(path, reproducible=True)
    args = ["-m", "pytest", "tests", "-k", keyword, "-q", "-p", "no:cacheprovider", "-x"]
    return subprocess.run([sys.executable, *args], env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    """``python -m ckptcompat.harness.emulate [--cell CELL] [--golden DIR] [--tests KEYWORD]``.

    Runs every available kernel path inside and outside the reproducible mode, prints a
    table of digests, and exits 1 unless the mode gave one digest (equal to the committed
    generation's bytes when ``--cell`` names a producer) and the control gave more than one.
    With ``--tests``, also runs the test suite's bitwise checks (a pytest ``-k`` expression)
    under every path in the mode. ``--probe DIR`` is the child's entry point.
    """
    parser = argparse.ArgumentParser(prog="python -m ckptcompat.harness.emulate")
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--cell", help="regenerate this producer cell's goldens per path")
    parser.add_argument("--golden", type=Path, help="golden directory the probe replays")
    parser.add_argument("--tests", help="pytest -k expression run under every path")
    args = parser.parse_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.probe), sort_keys=True))
        return 0
    from ckptcompat.harness.golden.read import GOLDEN_ROOT, generation_dir

    golden_dir = args.golden or generation_dir(GOLDEN_ROOT, args.cell or "t26")
    paths = available_paths()
    print(f"machine: {numerics.describe(numerics.fingerprint())}", flush=True)
    failures = []
    inside = [run_path(p, golden_dir, reproducible=True, cell=args.cell) for p in paths]
    outside = [run_path(p, golden_dir, reproducible=False) for p in paths]
    for title, rows in (("reproducible mode", inside), ("control, outside the mode", outside)):
        print(f"\n{title}:")
        for r in rows:
            updates = " ".join(f"{k}={v[:12]}" for k, v in sorted(r.detail["ppo_update"].items()))
            files = r.detail.get("golden_files", "")[:12]
            print(f"  {r.path:34} {r.aten_capability:8} {r.digest[:12]}  {updates}"
                  + (f" golden-bytes={files}" if files else ""), flush=True)  # fmt: skip
    if len({r.digest for r in inside}) != 1:
        failures.append("the reproducible mode gave different results on different paths")
    if len({r.digest for r in outside}) < 2:
        failures.append("the control gave one result: the forced paths did not take effect")
    if args.cell is not None:
        committed = _tree_digest(generation_dir(GOLDEN_ROOT, args.cell))
        if inside and inside[0].detail.get("golden_files") != committed:
            failures.append(f"regenerated goldens differ from committed {golden_dir}")
    if args.tests:
        for path in paths:
            print(f"\npytest -k {args.tests!r} under {path.name} (reproducible mode)", flush=True)
            if _pytest(path, args.tests) != 0:
                failures.append(f"bitwise tests failed under {path.name}")
    for failure in failures:
        print(f"FAIL: {failure}")
    print("emulation: " + ("FAILED" if failures else f"passed on {len(paths)} kernel paths"))
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
