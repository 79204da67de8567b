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
        "Manager save is within noise of save+fsync at 1 GB (the rounds spread widely) and "
        "about 1.0-1.2x at 100 MB across runs: profiling 100 MB saves shows the same "
        "torch.save and file fsync as the baseline, plus a fixed 10-15 ms per save: hashing "
        "while writing (xxh3, about 2%), the directory fsync after the rename, and the "
        "index.json update (its own atomic write: temp file, fsync, rename, directory "
        "fsync); the same fixed cost makes a 1 MB save about 3x. What it would take: the "
        "fixed cost is the crash-safety protocol (file durable before the index lists it), "
        "so only fewer fsyncs per save would help, e.g. one directory fsync covering the "
        "file rename before the index rename; below about 5 ms it meets 1.05 at 100 MB."
    ),
    "manager load": (
        "Manager load (verify=size/none) is about 2-4x torch_compat.load at 100 MB and 1 GB: "
        "profiling 100 MB loads shows about 57% of the time in `Parameter.copy_` inside "
        "`load_state_dict` (rebuild_agent copies every loaded tensor into a freshly allocated "
        "agent, so each byte is faulted in and copied once more) and about 43% in torch.load. "
        "The digest (verify=full) adds about 25-30 ms per 100 MB (xxh3 at about 3.5 GB/s here), "
        "close to torch.load's own 35-60 ms. What it would take: rebuild the agent on the "
        "meta device (or skip parameter init) and `load_state_dict(saved, strict=True, "
        "assign=True)` after the dtype/shape checks, so the loaded tensors are adopted "
        "instead of copied (torch >= 2.1, every cell); that should meet 1.05 for "
        "verify=size. verify=full cannot reach 1.25 while the digest is a separate pass of "
        "almost the load's cost: it would have to overlap the load (hash in a thread, or "
        "verify the bytes torch reads) or use mmap=True loads so the read is not paid twice."
    ),
    "doctor torch_load": (
        "On the 4096-tensor file the doctor is only about 2x faster than torch_compat.load "
        "(goal 20x) and about 6x slower than torch's own get_unsafe_globals_in_checkpoint: "
        "profiling shows about 70% in `pickle_facts` (doctor/pickle_walk.py, a pure-Python "
        "pickle machine stepping every opcode from `pickletools.genops`), and about 25% in "
        "`scan` (a second walk: the inert unpickler plus `_walk`); the zip central directory "
        "is parsed twice. What it would take: one walk of data.pkl that yields the scan and "
        "the pickle facts together, driven by the C unpickler's `find_class`/"
        "`persistent_load` hooks (as inert_load already does) instead of a Python loop per "
        "opcode, and the zip entries read once."
    ),
    "doctor picklescan": (
        "On the few-tensor files the doctor (about 2-3 ms, flat in size) is slower than "
        "picklescan in-process (about 1 ms) though far faster than its CLI: profiling 1 MB "
        "files shows about 58% of diagnose in `_installed()` (two "
        "`importlib.metadata.version` look-ups per call, which scan every distribution on "
        "sys.path), about 20% in the second pickle walk and about 8% in predict for 12 torch "
        "minors. What it would take: cache `_installed` per process (functools.cache) and "
        "the single walk above; that brings it to about 1 ms."
    ),
    "ppo": (
        "Ours is the trainer's RecurrentAgent (LSTM), since we have no MLP agent, so the row "
        "against sb3 PPO MlpPolicy (about 0.2x) mostly measures an LSTM against an MLP. "
        "Against RecurrentPPO, the like-for-like row: with 8 envs ours is faster at a higher "
        "return; with 1 env it is about as fast but its return stays far lower at this budget "
        "(sb3's defaults differ from ours: we normalise observations, and these sb3-like "
        "hyperparameters, 4 epochs on one 128-step minibatch, are not our tuned defaults of "
        "8 envs x 32 steps x 20 epochs; a learning problem at 1 env is not ruled out and "
        "deserves its own issue). Profiling 1 env (2,048 steps): about 64% in ppo_update "
        "(the LSTM re-run step by step over the 128-step sequence, then its backward) and "
        "about 36% in the rollout (one LSTM step per env step, plus Categorical construction, "
        "validation and sampling, about 0.8 ms per step). What it would take: run the LSTM "
        "in one call over each segment between dones in the update, "
        "`Categorical(validate_args=False)` in the rollout, an MLP agent class for the MLP "
        "row, and a longer budget (the issue suggests 20k+ env steps, 5 runs) to compare "
        "returns."
    ),
}


def _key(row: dict[str, Any]) -> str:
    if row["section"].startswith("1"):
        return "manager load" if "load" in row["figure"] else "manager save"
    return "doctor picklescan" if "picklescan" in row["baseline"] else "doctor torch_load"


def missed_notes(report: dict[str, Any]) -> list[str]:
    """The LIMITS entries for the goals this report missed (in LIMITS order)."""
    rows = report.get("manager", []) + report.get("doctor", [])
    missed = {_key(r) for r in rows if r.get("met") is False}
    if any(r["met"] is False for r in report.get("ppo", {}).get("rows", [])):
        missed.add("ppo")
    matrix = report.get("matrix")
    if matrix and (
        matrix["warm"]["wall_s"]["median"] >= 240
        or max(matrix["warm"]["processes_per_cell"].values()) > 3
    ):
        missed.add("matrix")
    notes = [LIMITS[k] for k in LIMITS if k in missed]
    notes += [f"{k}: missed, not profiled yet." for k in sorted(missed - set(LIMITS))]
    return notes
