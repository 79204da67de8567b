"""What limits each goal when it is missed: findings from profiling (pyinstrument, t215).

Kept next to the benchmark so a regenerated BENCHMARKS.md explains every miss it reports;
re-profile and update when the code these name changes.
"""

from __future__ import annotations

from typing import Any

__all__ = ["LIMITS", "missed_notes"]

#: goal key -> what limits it and what it would take.
LIMITS = {
    "manager save": (
        "Manager save is about 1.0x save+fsync at 1 GB and 1.0-1.3x at 100 MB depending on "
        "how busy the disk is. The CPU-side overhead is about 0.5 ms per save (payload, lock, "
        "index read; the xxh3 digest is taken by reading the file back while its fsync runs "
        "in a thread). What remains is file-system metadata: besides the baseline's one "
        "fsync, each save does two renames and three more journal commits (the directory "
        "after the checkpoint's rename, the index.json temp file, the directory after the "
        "index rename): about 0.3 ms each on an idle disk, 3-5 ms each while other processes "
        "commit, which adds 13-27 ms to a 100 MB save. Tried (branch i21save, not merged): "
        "the index temp file written and fsynced during the checkpoint's fsync and the "
        "digest read back by a thread trailing the writer; on a quiet machine, two "
        "interleaved rounds each of main and the branch gave 100 MB 1.09 / 1.06 (main) "
        "against 1.08 / 1.10 (branch) and 1 GB 1.02 / 0.96 against 1.06 / 0.96: no gain, "
        "so no extra thread in the crash-safety path. What it would take: fewer commits "
        "per save, e.g. one directory fsync after both renames with recovery of a listed "
        "file still under its temp name (its digest is in the index); a change to the "
        "crash-safety protocol that needs its own fault-injection tests."
    ),
    "manager load": (
        "Manager load builds the agent on the meta device and adopts the loaded tensors "
        "(`load_state_dict(assign=True)`), and verify=full hashes the bytes as torch reads "
        "them, so a load is one torch.load plus a few ms of agent construction; a miss here "
        "is the shared machine's noise (see the min/max), or an agent that takes the logged "
        "build-and-copy fallback (non-persistent buffers, tied weights)."
    ),
    "doctor torch_load": (
        "On the 4096-tensor file the doctor measured 26.6x torch_compat.load [19.9, 32.0] "
        "(2026-12-06, load average 4 on 2 cores), so a miss is the shared machine's noise. "
        "What it costs (cProfile, t215, ~15 ms): the C unpickler with inert placeholders "
        "~4 ms, the walk's regex tokenizer and the tensor-run regexes of the nesting check "
        "~4.5 ms, the zip directory ~1.2 ms, persistent ids and storage columns ~1.5 ms. The "
        "nesting check alone was 40 ms (one Python step per opcode) until runs of tensor "
        "records were taken one regex match each (scan/tensor_runs.py, ~1.5 ms)."
    ),
    "doctor torch_scan": (
        "On the few-tensor files (1 MB, 100 MB, 1 GB: the same 8-tensor pickle) the doctor is "
        "2.5-4x slower than torch's get_unsafe_globals_in_checkpoint, which reads data.pkl "
        "through the C++ zip reader and lists the GLOBAL opcodes of ~250 opcodes: about "
        "0.11 ms warm (0.4-0.5 ms right after the benchmark's gc.collect()). The doctor's "
        "~0.5 ms warm on the same file is about 0.35 ms of static scan (zip directory and "
        "five record reads, the opcode walk, the nesting check, the inert unpickler, the "
        "storage cross-check: each a few tens of us in Python) and ~0.1 ms for the "
        "predictions of 12 torch minors (computed once for both numpy majors when the "
        "numpy major cannot change them), plus the family, location and consumer checks. "
        "On the 4096-tensor file, where the per-opcode work dominates, the doctor is 1.5x "
        "faster than torch's scan. What it would take on small files: a fixed per-file "
        "cost under 0.1 ms, i.e. the scan in C (an extension module) or a cache of whole "
        "diagnoses keyed on the pickle bytes (only a win for stores of identical layouts). "
        "These files are the manager's format; a plain state_dict (torch.save(model."
        "state_dict())) walked its pickle a second time (pickletools.genops and the "
        "doctor's stack machine, for the key prefix and the library families), ~45% of "
        "its diagnosis: since 2026-12-07 a tensor mapping's root is rebuilt from the "
        "scan's pass, 0.89 -> 0.54 ms on an 8-tensor state_dict against torch's 0.11 ms "
        "(this table's rows do not move)."
    ),
    "doctor picklescan": (
        "The doctor (about 0.5 ms of CPU on a few-tensor file, flat in size) does several "
        "times picklescan's work per file (zip directory, record sizes, the nesting check, "
        "12 torch minors predicted); against picklescan in-process on these files it is "
        "about even: medians 0.83-1.20x over the runs of 2026-12-06/07 (the 1 GB row of "
        "the 05:24 UTC clean-clone run, 0.83 [0.18, 1.25], had one doctor round of 6.7 ms "
        "against a 1.4 ms median), and 20-24x faster on the 4096-tensor file."
    ),
    "doctor dir": (
        "`ckptcompat doctor DIR` needs about 0.75 CPU seconds in process (1,330 files per "
        "CPU second) and 1.0 as the command (imports included: 990 files per CPU second) "
        "for the 1,000-file store, measured 2026-12-06 on the AMD EPYC at load average 4 "
        "on 2 cores, where the wall time was 1.6-2x the CPU time. Per file (cProfile): "
        "about 55% the static scan, 17% the predictions for 12 torch minors, the rest "
        "reading the zip directory, the small records and printing. What it would take: "
        "a quiet machine for the command's wall clock to reach its CPU rate (~1,000/s), "
        "and beyond that a lower fixed per-file cost (see the torch_scan note) or a pool "
        "of worker processes (the scan is pure Python and CPU-bound), which this 2-core "
        "shared machine cannot show."
    ),
    "matrix": (
        "The warm matrix is one process per cell and phase (train, resume, evaluate, DCP "
        "once per world size; the remote phase one process in all), two cells at a time "
        "on 2 cores; each process pays `import torch` (~2 s) and the evaluate phase "
        "also loads every golden and corpus file. A miss means the machine was shared: the "
        "phases' CPU seconds (per-cell table) sum to well under the goal."
    ),
    "tests": (
        "What a cell's time is (pytest --durations, per-process CPU logs and a per-test "
        "timeline, issue 21 item 4): t215 runs all ~2,050 tests, the other cells ~1,310 "
        "(one-cell tests skipped). Most CPU is in test subprocesses, each paying `import "
        "torch` (1.5-2.2 s of CPU; 3.9 s without bytecode, so the cells install with "
        "UV_COMPILE_BYTECODE=1 and run pytest with PYTHONDONTWRITEBYTECODE emptied) and, "
        "when it builds an optimizer, `import torch._dynamo` (torch.optim's "
        "_disable_dynamo: 0.5 s in t24, 1.2 s in t215). Done on 2026-12-07: the fuzz run "
        "forks one child per case (67 -> 22 s of CPU for 250 cases); the emulation's "
        "control paths stop at the second distinct result; xdist schedules a module at a "
        "time in slow-first order (--dist loadscope --no-loadscope-reorder; --dist "
        "loadgroup does not group under pytest 9.2, pytest-xdist #1386); result records "
        "are validated by one jsonschema validator per process (jsonschema.validate "
        "re-checked the schema on every record: ~5 ms each, an evaluate phase 17.4 -> "
        "13.0 s); the DCP golden verification refuses after the first run that differs "
        "(no torchrun for a refused golden); learning seeds 1-2, the planted-fault fuzz "
        "run and the worker-outage tests run in one cell. Cells went from 222 / 237 / "
        "249 / 343 s (17.9 min) to 186 / 216 / 205 / 278 s (15.0 min, 01:47 UTC) and "
        "143 / 144 / 148 / 253 s (11.7 min, 03:20 UTC). Run-to-run noise on this shared "
        "machine is about 25%, so a run on a busy stretch can miss 12 min. What remains "
        "is per-cell work that depends on torch's version, each a few processes "
        "importing torch: the torchrun 2-rank fixture (~25-35 s), the golden productions "
        "(~2 x 11 s), the emulation's six kernel paths (~16-27 s), the CLI and phase "
        "chains (~10-14 s each). What it would take to go further: fewer processes per "
        "test (one trained run per session shared by the CLI, phase and evaluator tests) "
        "or a faster `import torch` (the CUDA wheels load ~2 GB of libraries)."
    ),
    "ppo": (
        "Ours-MLP vs sb3 PPO meets the goal. The recurrent row runs SplitLSTMAgent (the "
        "trainer's default since issue 21): separate actor and critic towers, found by "
        "experiment to close the return gap of RecurrentAgent's shared trunk (seed 0, "
        "20,480 steps: shared trunk 36.8, shared trunk + 64x64 heads 132.1, separate "
        "towers 262.2; RecurrentPPO 113-265 over 3 seeds), with one LSTM call per segment "
        "between episode starts. A miss here is a seed where RecurrentPPO's final return "
        "happens to be higher (returns at 20,480 steps vary 2x between seeds on both sides: "
        "see the learning curves in section 4a), or the steps/s ratio under load."
    ),
}


def _key(row: dict[str, Any]) -> str:
    if row["section"].startswith("5"):
        return "crc"
    if row["section"].startswith("1"):
        return "manager load" if "load" in row["figure"] else "manager save"
    if "picklescan" in row["baseline"]:
        return "doctor picklescan"
    if "unsafe_globals" in row["baseline"]:
        return "doctor torch_scan"
    return "doctor torch_load"


def missed_notes(report: dict[str, Any]) -> list[str]:
    """The LIMITS entries for the goals this report missed (in LIMITS order)."""
    rows = report.get("manager", []) + report.get("doctor", []) + report.get("crc", [])
    missed = {_key(r) for r in rows if r.get("met") is False}
    if any(r["met"] is False for r in report.get("ppo", {}).get("rows", [])):
        missed.add("ppo")
    if "curves" in report:
        from _report import curves_row

        if curves_row(report["curves"])["met"] is False:
            missed.add("ppo")
    matrix = report.get("matrix")
    if matrix:
        from _report import process_slots
    if matrix and (
        matrix["warm"]["wall_s"]["median"] >= 240
        or any(
            n > process_slots(matrix["warm"], cell)
            for cell, n in matrix["warm"]["processes_per_cell"].items()
        )
    ):
        missed.add("matrix")
    if report.get("doctor_dir", {}).get("met") is False:
        missed.add("doctor dir")
    if report.get("tests", {}).get("met") is False:
        missed.add("tests")
    notes = [LIMITS[k] for k in LIMITS if k in missed]
    notes += [f"{k}: missed, not profiled yet." for k in sorted(missed - set(LIMITS))]
    return notes
