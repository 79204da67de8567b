"""The in-cell checks of a team's goldens and checkpoints (evaluate phase, ``--config``).

Run by ``python -m ckptcompat.harness.run.phases evaluate CELL --config PATH`` after the team's
round trips, in the same process (one torch process per phase and cell). One record each:

* ``golden/<kind>/<agent>/<loader>/<producer>-><this cell>->-`` for every golden of the team
  (``<team>/ckptcompat/golden/<producer>/``): ``safe_v1`` through the manager and
  ``g1``/``g2``/``state_dict`` through the allowlist reader, each loaded agent's greedy probe
  outputs compared with the manifest; then a plain ``torch.load`` (``naive``) of each file.
* ``checkpoints/<file>/<agent>/<loader>/-><this cell>->-`` for every file of the team's
  ``checkpoints`` directory: ``naive`` (plain ``torch.load``), ``allowlist`` (``migrate`` to
  safe format v1 without ``--trust``, then a safe load with equal greedy outputs), and
  ``doctor/<file>/...`` (doctor's prediction for this torch agrees with the plain load).

Naive loads run last: a whole-object unpickle may import anything the file names, and only
files of the team's own repository are loaded (never the malicious corpus).
"""

from __future__ import annotations

import re
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckptcompat import doctor, torch_compat
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.migrate import migrate
from ckptcompat.errors import CheckpointError
from ckptcompat.harness.golden.read import GoldenError, golden_dirs, read_golden
from ckptcompat.harness.golden.records import artifact_name
from ckptcompat.harness.golden.verify import load_legacy_agent, load_safe_agent, probe_problems
from ckptcompat.harness.team import TeamConfig
from ckptcompat.harness.verdict import records as results
from ckptcompat.rl.trainer_setup import env_space_configs

__all__ = ["LEGACY_KINDS", "checkpoint_checks", "golden_checks", "run"]

LEGACY_KINDS = ("g1", "g2", "state_dict")
_SUFFIX = re.compile(r"\.pt$")

Specs = Mapping[str, tuple[str, dict[str, Any]]]
Record = Callable[..., None]


def _outcome(body: Callable[[], list[str] | str]) -> tuple[str, str]:
    """Run ``body`` -> problems (or a detail): pass/fail, fail on a typed refusal, else error."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 2.4/2.5 warn on the weights_only default
            got = body()
    except (CheckpointError, GoldenError) as exc:
        return "fail", f"{type(exc).__name__}: {str(exc)[:500]}"
    except Exception as exc:  # recorded as the outcome
        return "error", f"{type(exc).__name__}: {str(exc)[:500]}"
    if isinstance(got, str):
        return "pass", got
    return ("fail", "; ".join(got)) if got else ("pass", "")


def _naive(path: Path) -> str:
    obj = torch_compat.naive_load(path, map_location="cpu")
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def golden_checks(team: TeamConfig, emit: Record) -> None:
    """Check every golden producer directory of the team under this torch."""
    producers = golden_dirs(team.golden_dir)
    naive = []
    for root in producers:
        golden = read_golden(root)
        stages = {
            "producer_torch": golden.producer["torch"],
            "producer_numpy": golden.producer["numpy"],
        }
        for name in golden.agents:
            epoch = golden.agent(name)["epoch"]

            def safe(name: str = name, epoch: int = epoch, golden: Any = golden) -> list[str]:
                return probe_problems(golden, name, load_safe_agent(golden.root, name, epoch))

            emit("golden", artifact_name(golden, "safe_v1"), name, "safe", safe, **stages)
            for kind in LEGACY_KINDS:

                def legacy(name: str = name, kind: str = kind, golden: Any = golden) -> list[str]:
                    return probe_problems(golden, name, load_legacy_agent(golden, name, kind))

                emit("golden", artifact_name(golden, kind), name, "allowlist", legacy, **stages)
            for kind in ("safe_v1", *LEGACY_KINDS):
                naive.append((artifact_name(golden, kind), name, golden.path(name, kind), stages))
    for artifact, name, path, stages in naive:
        emit("golden", artifact, name, "naive", lambda p=path: _naive(p), **stages)


def _agent_for(path: Path, specs: Specs) -> str:
    """The team agent a checkpoint file belongs to: the longest label its name starts with."""
    matches = [name for name in specs if path.name.startswith(name)]
    return max(matches, key=len) if matches else next(iter(specs))


def checkpoint_checks(team: TeamConfig, specs: Specs, emit: Record, scratch: Path) -> None:
    """naive, allowlist (migrate) and doctor checks of every file in the team's checkpoints."""
    if team.checkpoints is None:
        return
    files = sorted(p for p in team.checkpoints.iterdir() if p.is_file() and p.suffix == ".pt")
    naive_outcomes = {}
    for path in files:
        agent = _agent_for(path, specs)
        class_path, config = specs[agent]
        artifact = _SUFFIX.sub("", path.name).replace("/", "_")

        def migrated(
            path: Path = path, class_path: str = class_path, config: Any = config
        ) -> list[str]:
            dst = scratch / f"{path.stem}.safe.pt"
            dst.unlink(missing_ok=True)
            report = migrate(
                path,
                dst,
                run=re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem),
                epoch=0,
                class_path=class_path,
                # With the env's spaces, as the trainer built the agent (agent_config_for):
                # the bare [tool.ckptcompat] config failed "missing 2 required positional
                # arguments" for an agent whose spaces are required (a new user's trial).
                config={**config, **env_space_configs(team.env_id)},
            )
            SimpleCheckpointManager.load_from_uri(report.destination)
            return [] if report.outputs_equal else ["greedy outputs differ after migration"]

        emit("checkpoints", artifact, agent, "allowlist", migrated)
    for path in files:  # naive loads last (see the module docstring)
        agent = _agent_for(path, specs)
        artifact = _SUFFIX.sub("", path.name)
        naive_outcomes[path] = emit(
            "checkpoints", artifact, agent, "naive", lambda p=path: _naive(p)
        )
    for path in files:

        def predicted(path: Path = path) -> list[str]:
            verdict = doctor.diagnose(path).for_torch(str(torch.__version__)).plain
            loads = verdict.outcome in ("loads", "runs_code")
            actual = naive_outcomes[path] == "pass"
            if loads != actual:
                return [
                    f"doctor predicted {verdict.outcome} ({verdict.why}); "
                    f"plain load {naive_outcomes[path]}"
                ]
            return []

        emit("doctor", _SUFFIX.sub("", path.name), _agent_for(path, specs), "naive", predicted)


def run(cell: str, team: TeamConfig, specs: Specs, records_file: Path, goldens: bool = True) -> int:
    """Run the team's golden and checkpoint checks here; append their records. Returns 0."""
    here_torch, here_numpy = str(torch.__version__), np.__version__

    def emit(
        scenario: str,
        artifact: str,
        agent: str,
        loader: str,
        body: Callable[[], list[str] | str],
        producer_torch: str | None = None,
        producer_numpy: str | None = None,
    ) -> str:
        started = time.perf_counter()
        outcome, detail = _outcome(body)
        record = results.make_record(
            scenario=scenario,
            artifact=artifact,
            agent=agent,
            loader=loader,
            outcome=outcome,  # type: ignore[arg-type]
            producer_torch=producer_torch,
            consumer_torch=here_torch,
            producer_numpy=producer_numpy,
            consumer_numpy=here_numpy,
            detail=detail[:2000],
            duration_s=time.perf_counter() - started,
        )
        results.append_record(records_file, record)
        print(
            f"{outcome:<5} {record.cell_key}"
            + (f"\n      {detail[:300]}" if outcome != "pass" else ""),
            flush=True,
        )
        return outcome

    if goldens:
        golden_checks(team, emit)
    with tempfile.TemporaryDirectory(prefix=f"ckptcompat-team-{cell}-") as scratch:
        checkpoint_checks(team, specs, emit, Path(scratch))
    return 0
