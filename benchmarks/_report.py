"""Machine facts, the matrix timing reader and the BENCHMARKS.md renderer."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["goal_rows", "machine_facts", "render"]

_TOOLS = ("torch", "numpy", "gymnasium", "stable-baselines3", "sb3-contrib", "picklescan")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """Cores, memory, CPU model, load average now, the versions that matter, and the
    numerics fingerprint (:func:`ckptcompat.numerics.fingerprint`: kernel path, BLAS,
    oneDNN, threads) of this process. Call it after ``torch.set_num_threads``: the
    fingerprint records the thread count in effect."""
    from ckptcompat import numerics

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        int(line.split()[1]) * 1024
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "cpu_model": cpu,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in _TOOLS},
        "numerics": numerics.fingerprint(),
    }


def _s(x: float) -> str:
    return f"{x * 1000:.1f} ms" if x < 1 else f"{x:.2f} s"


def _met(met: bool | None) -> str:
    return "-" if met is None else ("yes" if met else "**no**")


_MANAGER_HEAD = (
    "| file | figure | baseline | median | min | max | baseline median | "
    "ratio median [min, max] | goal | met? |"
)
_DOCTOR_HEAD = (
    "| file | ours | other tool | tool median | tool min | tool max | doctor median | "
    "tool / doctor median [min, max] | goal | met? |"
)


def _timing_rows(rows: list[dict[str, Any]], head: str) -> list[str]:
    out = [head, "|" + "---|" * 10]
    for r in rows:
        s, b, q = r["seconds"], r["baseline_seconds"], r["ratio"]
        first = r["figure"] if r["section"][0] in "15" else "diagnose"
        out.append(
            f"| {r['file']} | {first} | {r['baseline']} | {_s(s['median'])} | "
            f"{_s(s['min'])} | {_s(s['max'])} | {_s(b['median'])} | {q['median']:.2f} "
            f"[{q['min']:.2f}, {q['max']:.2f}] | {r['goal'] or '-'} | {_met(r['met'])} |"
        )
    return out


def _mmm(x: dict[str, float]) -> str:
    return f"{x['median']:.1f} [{x['min']:.1f}, {x['max']:.1f}]"


def _matrix_lines(t: dict[str, Any] | None) -> list[str]:
    """Section 3: cold and warm ``nox -s matrix`` (see benchmarks/_matrix.py)."""
    lines = ["## 3. Matrix wall time", ""]
    if t is None:
        return [*lines, "Not measured in this run (`--sections` without `matrix`).", ""]
    phases = list(t["warm"]["phase_wall_s"])
    lines += [
        f"`nox -s matrix` run {len(t['runs']['warm'])} times warm (the `.nox` venvs exist) "
        "and as many times cold (a fresh `--envdir`: the matrix venv and the four cells' "
        "tests venvs are created from a warm uv cache), interleaved, after one discarded "
        "warm run. Seconds, median [min, max]; 'outside phases' is venv creation or sync, "
        "the golden check and the report.",
        "",
        "| run | whole command | sum of phases | outside phases | "
        + " | ".join(phases)
        + " | goal | met? |",
        "|" + "---|" * (6 + len(phases)),
    ]
    for kind in ("cold", "warm"):
        k = t[kind]
        goal, met = ("< 240 s", _met(k["wall_s"]["median"] < 240)) if kind == "warm" else ("-", "-")
        lines.append(
            f"| {kind} | {_mmm(k['wall_s'])} | {_mmm(k['phases_s'])} | "
            f"{_mmm(k['outside_phases_s'])} | "
            + " | ".join(_mmm(k["phase_wall_s"][ph]) for ph in phases)
            + f" | {goal} | {met} |"
        )
    lines += [
        "",
        "Per cell (median seconds; each phase is one process per cell, the DCP phase one "
        "per world size, `wsN`; cells in parallel 2 at a time; '-': the cell has no "
        "process in that phase, e.g. the remote phase's one process runs in the first "
        "cell and drives every cell's worker):",
        "",
        "| cell | run | processes (goal: one per phase and world size) | "
        + " | ".join(f"{ph} wall / CPU" for ph in phases)
        + " |",
        "|" + "---|" * (3 + len(phases)),
    ]
    for cell in t["warm"]["processes_per_cell"]:
        for kind in ("cold", "warm"):
            k = t[kind]
            n = k["processes_per_cell"][cell]
            slots = process_slots(k, cell)
            cells = []
            for ph in phases:
                here = [p for p in k["processes"] if p["cell"] == cell and p["phase"] == ph]
                cells.append(", ".join(_process_cell(p, len(here) > 1) for p in here) or "-")
            lines.append(
                f"| {cell} | {kind} | {n} for {slots} ({_met(n <= slots)}) | "
                + " | ".join(cells)
                + " |"
            )
    return [*lines, ""]


def process_slots(run: dict[str, Any], cell: str) -> int:
    """How many processes ``cell`` may have in one matrix run: one per (phase, world size)
    it takes part in (README: "one process per cell per phase"; the DCP phase runs once
    per world size). The driver's count above that means a phase started a cell twice."""
    here = [p for p in run["processes"] if p["cell"] == cell]
    return len({(p["phase"], p.get("world_size", 1)) for p in here})


def _process_cell(process: dict[str, Any], show_world_size: bool) -> str:
    times = f"{process['wall_s']['median']:.1f} / {process['cpu_s']['median']:.1f}"
    return f"ws{process.get('world_size', 1)}: {times}" if show_world_size else times


def _numerics(machine: dict[str, Any]) -> str:
    from ckptcompat import numerics

    fp = machine.get("numerics")
    return (
        "not recorded (a report from before the fingerprint)"
        if fp is None
        else numerics.describe(fp)
    )


_TESTS_FIGURE = "`nox -s tests`, four cells, warm cache, 2 cores"


def _tests_row(t: dict[str, Any] | None) -> dict[str, Any]:
    """Issue 21 item 4's row from section 7 (benchmarks/_tests_time.py)."""
    if t is None:
        return {
            "figure": _TESTS_FIGURE,
            "goal": "<= 12 min",
            "measured": "not run (`--sections tests` runs the suite; `--tests-junit DIR` "
            "reads a finished run's reports)",
            "met": None,
        }
    failed = sum(c.get("failed", 0) for c in t["cells"].values())
    missing = [cell for cell, c in t["cells"].items() if "problem" in c]
    extra = f", {failed} failed" if failed else ""
    extra += f", no report for {', '.join(missing)}" if missing else ""
    return {
        "figure": _TESTS_FIGURE,
        "goal": t["goal"],
        "measured": f"{t['seconds'] / 60:.1f} min ({t['how']}{extra})",
        "met": t["met"],
    }


def _ratio(q: dict[str, float]) -> str:
    return f"{q['median']:.2f} [{q['min']:.2f}, {q['max']:.2f}]"


def goal_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal this report can judge, one row each: ``figure``, ``goal``, ``measured``
    (a ratio median [min, max], seconds or a count, as text) and ``met`` (True, False, or
    None when the section did not run). Sections not run give one row each saying so, so
    the table never silently drops a goal."""
    rows: list[dict[str, Any]] = []
    for section in ("manager", "doctor", "crc"):
        for r in report.get(section, []):
            if r.get("goal") is None:
                continue
            # Doctor rows are tool / doctor (higher is better); the others ours / baseline.
            what = (
                f"{r['baseline']} / doctor"
                if section == "doctor"
                else f"{r['figure']} / {r['baseline']}"
            )
            rows.append(
                {
                    "figure": f"{r['file']}: {what}",
                    "goal": r["goal"],
                    "measured": _ratio(r["ratio"]),
                    "met": r["met"],
                }
            )
    if "doctor_flat" in report:
        flat = report["doctor_flat"]
        rows.append(
            {
                "figure": "doctor flat in tensor bytes (largest / smallest median)",
                "goal": "<= 2",
                "measured": flat.split(" = ", 1)[-1].split(" ", 1)[0],
                "met": "yes)" in flat,
            }
        )
    matrix = report.get("matrix")
    if matrix:
        warm = matrix["warm"]
        rows.append(
            {
                "figure": "`nox -s matrix`, warm, whole command (s)",
                "goal": "< 240 s",
                "measured": _mmm(warm["wall_s"]),
                "met": warm["wall_s"]["median"] < 240,
            }
        )
        counts = {c: (n, process_slots(warm, c)) for c, n in warm["processes_per_cell"].items()}
        rows.append(
            {
                "figure": "matrix: phase processes per cell (warm)",
                "goal": "one per phase and DCP world size",
                "measured": ", ".join(f"{c} {n} for {s}" for c, (n, s) in counts.items()),
                "met": all(n <= s for n, s in counts.values()),
            }
        )
    if "doctor_dir" in report:
        d = report["doctor_dir"]
        rows.append(
            {
                "figure": f"`ckptcompat doctor DIR` over {d['count']} small checkpoints "
                "(one process, wall clock)",
                "goal": d["goal"],
                "measured": _mmm(d["files_per_s"]["ckptcompat doctor DIR (command)"]) + " files/s",
                "met": d["met"],
            }
        )
    for r in report.get("ppo", {}).get("rows", []):
        rows.append(
            {
                "figure": f"PPO {r.get('ours_name', 'ours')} vs {r['theirs_name']}, "
                f"{r['num_envs']} env(s): steps/s ratio; return ours / theirs",
                "goal": "ratio >= 1.0 and return >=",
                "measured": f"{_ratio(r['ratio'])}; {r['return_ours']:.1f} / "
                f"{r['return_theirs']:.1f}",
                "met": r["met"],
            }
        )
    for section in ("manager", "doctor", "doctor_dir", "matrix", "ppo"):
        if section not in report:
            rows.append(
                {
                    "figure": f"section `{section}`",
                    "goal": "its goals",
                    "measured": "not run (`--sections`)",
                    "met": None,
                }
            )
    if "curves" in report:
        rows.append(curves_row(report["curves"]))
    else:
        rows.append(
            {
                "figure": "section `curves` (the recurrent agent vs RecurrentPPO on 3 seeds)",
                "goal": "its goal",
                "measured": "not run (`--sections`)",
                "met": None,
            }
        )
    rows.append(_tests_row(report.get("tests")))
    return rows


def curves_row(c: dict[str, Any]) -> dict[str, Any]:
    """The recurrent goal judged on the learning curves: final return (mean of the last 20
    training episodes) ours >= RecurrentPPO's on every seed, and the median per-seed
    steps/s ratio >= 1.0."""
    finals = [
        (o["seed"], o["points"][-1]["return"], t["points"][-1]["return"])
        for o, t in zip(c["ours"], c["theirs"], strict=True)
    ]
    speed = sorted(
        o["env_steps_per_s"] / t["env_steps_per_s"]
        for o, t in zip(c["ours"], c["theirs"], strict=True)
    )
    median = statistics.median(speed)
    agent = c["agent"].rsplit(".", 1)[-1]
    return {
        "figure": f"{agent} vs sb3-contrib RecurrentPPO, CartPole-v1, {c['env_steps']} steps, "
        f"1 env, {len(finals)} seeds: steps/s ratio; final return per seed ours / theirs",
        "goal": ">= 1.0x and return >= on each seed",
        "measured": f"{median:.2f} [{speed[0]:.2f}, {speed[-1]:.2f}]; "
        + ", ".join(f"s{seed} {o:.1f} / {t:.1f}" for seed, o, t in finals),
        "met": median >= 1.0 and all(o >= t for _, o, t in finals),
    }


def _curves_lines(c: dict[str, Any] | None) -> list[str]:
    """Section 4a: return vs env steps, ours (the trainer's default agent) vs RecurrentPPO."""
    if c is None:
        return []
    from _ppo_curves import table

    row = curves_row(c)
    agent = c["agent"].rsplit(".", 1)[-1]
    lines = [
        f"### 4a. Learning curves: {agent} (the trainer's default agent) vs RecurrentPPO",
        "",
        f"CartPole-v1, 1 env, {c['env_steps']} env steps, the settings above on both sides, "
        "seeds interleaved (benchmarks/_ppo_curves.py); return = mean of the last 20 "
        "training episodes at each point.",
        "",
    ]
    if c.get("picture"):
        lines += [f"![return vs env steps, one line per seed]({c['picture']})", ""]
    return [
        *lines,
        *table(c),
        "",
        f"{row['measured']}: goal {row['goal']}: {_met(row['met'])}.",
        "",
    ]


def _measured_lines(report: dict[str, Any]) -> list[str]:
    """When each section was measured: one run writes all of them, ``--sections`` only its
    own (the others are kept from the previous report of the same machine)."""
    measured = report.get("measured") or {}
    if not measured:
        return []
    lines = ["| section | measured at | load average at start | command |", "|---|---|---|---|"]
    for section, m in sorted(measured.items(), key=lambda kv: kv[1]["started_at"]):
        lines.append(
            f"| {section} | {m['started_at']} | {m['load_average']} | `{m.get('command')}` |"
        )
    return ["Sections measured (same CPU and numerics fingerprint):", "", *lines, ""]


def _tests_lines(t: dict[str, Any] | None) -> list[str]:
    """Section 7: the test suite's time per cell."""
    if t is None:
        return []
    lines = [
        "## 7. Test suite time",
        "",
        f"{t['how']}: {t['seconds']:.0f} s ({t['seconds'] / 60:.1f} min); goal {t['goal']}: "
        f"{_met(t['met'])}."
        + ("" if t["exit_code"] is None else f" `nox -s tests` exit code {t['exit_code']}."),
        "",
        "| cell | tests | failed | skipped (one-cell tests run in t215 only) | pytest seconds |",
        "|---|---|---|---|---|",
    ]
    for cell, c in t["cells"].items():
        if "problem" in c:
            lines.append(f"| {cell} | {c['problem']} | - | - | - |")
            continue
        lines.append(
            f"| {cell} | {c['tests']} | {c['failed']} | {c['skipped']} | "
            f"{c.get('pytest_seconds', 0.0):.0f} |"
        )
    return [*lines, ""]


def _goal_table(report: dict[str, Any]) -> list[str]:
    rows = goal_rows(report)
    met = sum(r["met"] is True for r in rows)
    missed = sum(r["met"] is False for r in rows)
    lines = [
        "## Goals",
        "",
        f"{met} met, {missed} missed, {len(rows) - met - missed} not judged in this run "
        "(the sections below give every figure; 'Goals missed' says what limits each miss).",
        "",
        "| figure | goal | measured | met? |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['figure']} | {r['goal']} | {r['measured']} | "
        f"{'not judged' if r['met'] is None else _met(r['met'])} |"
        for r in rows
    ]
    return [*lines, ""]


def render(report: dict[str, Any]) -> str:
    """BENCHMARKS.md from the bench report."""
    m = report["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{report['command']}` (do not edit by hand). Every figure is the median of "
        f"{report['runs']} interleaved runs (A, B, A, B, ...) after one discarded warm-up round, "
        "with min and max; ratios are per-round ratios to the baseline of the same round.",
        "",
        f"**CPU:** {m['cpu_model']}. **Numerics fingerprint:** {_numerics(m)}.",
        "",
        *_measured_lines(report),
        *_goal_table(report),
        "## Machine",
        "",
        f"- {m['cores']} cores, {m['memory_bytes'] / 2**30:.1f} GiB memory, {m['cpu_model']}",
        f"- load average at start: {m['load_average_at_start']} (shared machine: absolute "
        "times are noisy, compare ratios)",
        f"- python {m['python']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- started {m['started_at']}, {m['platform']}",
        "",
    ]
    if report.get("quick"):
        lines += [
            "**Quick smoke run (`--quick`): smaller files and fewer runs; the size goals "
            "at 100 MB / 1 GB are not evaluated.**",
            "",
        ]
    if "manager" in report:
        lines += [
            "## 1. Manager save/load overhead",
            "",
            "Ratio = manager / baseline (lower is better).",
            "",
            *_timing_rows(report["manager"], _MANAGER_HEAD),
            "",
        ]
    if "doctor" in report:
        lines += [
            "## 2. Doctor speed",
            "",
            "Ratio = tool seconds / doctor seconds (higher: the doctor is faster). "
            f"Doctor flat in tensor bytes: {report.get('doctor_flat', '-')}",
            "",
            *_timing_rows(report["doctor"], _DOCTOR_HEAD),
            "",
            "### What each tool reports (fixtures/corpus, fixtures/malicious)",
            "",
            f"Doctor: predicted `torch.load(weights_only=True)` outcome on torch "
            f"{m['versions']['torch']}; picklescan: its verdict; torch: "
            "`get_unsafe_globals_in_checkpoint`.",
            "",
            "| file | doctor (weights_only) | picklescan | torch unsafe globals |",
            "|---|---|---|---|",
        ]
        for r in report.get("corpus", []):
            g = r["torch_unsafe_globals"]
            g = ", ".join(g) or "(none)" if isinstance(g, list) else g
            lines.append(f"| {r['file']} | {r['doctor']} | {r['picklescan']} | {g} |")
        lines.append("")
    lines += _matrix_lines(report.get("matrix"))
    if "ppo" in report:
        p = report["ppo"]
        lines += [
            "## 4. PPO on CartPole-v1",
            "",
            f"{p['env_steps']} env steps per run, the issue's reference settings on both "
            f"sides `{json.dumps(p['hyper'])}` (batch_size is the minibatch size; 128 with "
            "1 env), one torch thread. Pairs, interleaved per seed: our MLPAgent vs sb3 PPO "
            "MlpPolicy (both 64x64 tanh, separate actor and critic) and our SplitLSTMAgent, "
            "the trainer's default (separate actor and critic towers: 64-wide encoder, "
            "64-unit LSTM, 64x64 tanh head each) vs sb3-contrib "
            "RecurrentPPO MlpLstmPolicy. Ratio = ours / theirs env-steps/s; return = mean "
            "of the last 20 training episodes, median over seeds (see benchmarks/_ppo.py).",
            "",
            "| envs | ours | theirs | ours steps/s median [min, max] | theirs steps/s median "
            "[min, max] | ratio median [min, max] | return ours / theirs | goal | met? |",
            "|" + "---|" * 9,
        ]
        for r in p["rows"]:
            o, th, q = r["ours"], r["theirs"], r["ratio"]
            lines.append(
                f"| {r['num_envs']} | {r.get('ours_name', 'ours')} | {r['theirs_name']} | "
                f"{o['median']:.0f} [{o['min']:.0f}, "
                f"{o['max']:.0f}] | {th['median']:.0f} [{th['min']:.0f}, {th['max']:.0f}] | "
                f"{q['median']:.2f} [{q['min']:.2f}, {q['max']:.2f}] | "
                f"{r['return_ours']:.1f} / {r['return_theirs']:.1f} | ratio >= 1.0 and return >= | "
                f"{_met(r['met'])} |"
            )
        lines.append("")
    lines += _curves_lines(report.get("curves"))
    if "crc" in report:
        lines += [
            "## 5. CRC-32 check on load",
            "",
            "torch never checks the CRC-32s its zip files store; `torch_compat.load` checks "
            'every record torch reads, in the same pass (the indexed `verify="full"` load '
            "checks its digest instead). Ratio = load with the check / the same load with "
            "`check_crc=False` (lower is better). The check costs what zlib's CRC-32 "
            "costs per byte read (~4 GB/s on these cores, against ~30 GB/s for the "
            "manager's xxh3 digest), plus parsing the zip directory once more and one "
            "Python call per read (the small files).",
            "",
            *_timing_rows(report["crc"], _MANAGER_HEAD),
            "",
        ]
    if "doctor_dir" in report:
        d = report["doctor_dir"]
        lines += [
            "## 6. Doctor over a directory",
            "",
            f"`ckptcompat doctor DIR` over {d['count']} safe-format checkpoints in ten run "
            f"folders ({d['bytes'] / 1e6:.1f} MB in all): files per second, median [min, max]; "
            "'in process' is the code behind the command, 'command' a fresh process per "
            "round (imports included). Ratio = loading every file with torch_compat.load / "
            "the doctor in process (higher: the doctor is cheaper).",
            "",
            "| variant | seconds median [min, max] | files/s median [min, max] | "
            "CPU seconds | files per CPU second |",
            "|---|---|---|---|---|",
        ]
        for name, secs in d["seconds"].items():
            cpu = d.get("cpu_seconds", {}).get(name)
            per_cpu = d.get("cpu_files_per_s", {}).get(name)
            lines.append(
                f"| {name} | {_mmm(secs)} | {_mmm(d['files_per_s'][name])} | "
                f"{'-' if cpu is None else _mmm(cpu)} | "
                f"{'-' if per_cpu is None else _mmm(per_cpu)} |"
            )
        lines += [
            "",
            f"Load / doctor: {_ratio(d['ratio'])}. Goal {d['goal']}, the command's "
            "wall clock: "
            f"{_met(d['met'])}.",
            "",
        ]
    lines += _tests_lines(report.get("tests"))
    if report.get("notes"):
        lines += ["## Goals missed: what limits them", "", *[f"- {n}" for n in report["notes"]], ""]
    return "\n".join(lines)
