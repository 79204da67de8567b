"""The steps of the cross-version scenarios: train, resume and evaluate one chain.

Each step returns one result record (:class:`~ckptcompat.harness.verdict.records.Record`);
:mod:`ckptcompat.harness.run.phases` runs a phase's steps in one process.

Checks, per record (outcome ``fail`` when one does not hold, ``error`` on an unexpected
exception, ``skip`` when the previous phase left nothing to continue from):

* train (one record per agent, over its runs for every consumer): each run reaches its
  epochs with finite losses, its last checkpoint reloads with the trained weights, its
  trainer state loads, and all runs of the agent are bitwise equal (same seed).
* resume (per producer and agent): X's weights arrive bitwise under Y, training continues
  to the target epoch with finite losses, the weights change, the new checkpoint reloads.
* evaluate (per producer, consumer and agent): Y's result evaluates under Z into Z's shard
  with ``(policy_key, policy_version) == (run, epoch)`` on every episode, the weights load
  bitwise, and greedy returns equal Y's own (Y == Z) or their mean is within 1%.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ckptcompat.agents.probe import params_digest
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from ckptcompat.checkpoint.uri import agent_filename, file_uri
from ckptcompat.errors import CheckpointError
from ckptcompat.evaluation.evaluator import evaluate_policy
from ckptcompat.evaluation.stats_db import SimulationStatsDB, StatsDBError
from ckptcompat.harness import versions
from ckptcompat.harness.run.scenarios import AGENTS, BUDGET, Budget, Chain, Layout
from ckptcompat.harness.verdict import records as results
from ckptcompat.harness.verdict.records import Record
from ckptcompat.rl.ppo import PPOConfig
from ckptcompat.rl.trainer import Trainer, TrainerConfig

__all__ = [
    "DEFAULT_SPECS",
    "EVAL_RETURN_REL",
    "AgentSpecs",
    "evaluate_step",
    "resume_step",
    "train_step",
]

#: Mean greedy return under Z vs under Y, relative (the goldens' ``eval_return_rel``).
EVAL_RETURN_REL = 0.01
_ARTIFACT, _LOADER = "safe_v1", "safe"

Problems = list[str]


class _Skip(Exception):
    """The previous phase left nothing for this step (its own record says why)."""


def _pin(cell: str) -> str:
    return versions.by_id(cell).torch


def _here() -> tuple[str, str]:
    return str(torch.__version__), np.__version__


def _finite(stats: Mapping[str, float]) -> bool:
    return bool(stats) and all(math.isfinite(float(v)) for v in stats.values())


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _read_sidecar(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise _Skip(f"nothing to continue from: {what} left no {path.name}")
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _checked(
    scenario: str,
    chain: Chain,
    body: Callable[[], tuple[Problems, dict[str, Any], dict[str, str | None]]],
) -> Record:
    """Run one step's ``body`` -> (problems, outputs, versions) and turn it into a record.

    ``versions`` holds producer/consumer/evaluator torch and producer/consumer numpy; on an
    exception the cell's pins stand in, so the record lands in the right matrix cell.
    """
    started = time.perf_counter()
    here_numpy = _here()[1]
    stages: dict[str, str | None] = {
        "producer_torch": _pin(chain.producer),
        "consumer_torch": _pin(chain.consumer),
        "evaluator_torch": _pin(chain.evaluator) if chain.evaluator else None,
        "producer_numpy": here_numpy,
        "consumer_numpy": here_numpy,
    }
    outputs: dict[str, Any] = {"run": chain.run}
    try:
        problems, extra, seen = body()
        stages |= seen
        outputs |= extra
        outcome, detail = ("fail", "; ".join(problems)) if problems else ("pass", "")
    except _Skip as exc:
        outcome, detail = "skip", str(exc)
    except (CheckpointError, StatsDBError) as exc:
        outcome, detail = "fail", f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # a harness or library bug: recorded, and the phase goes on
        where = traceback.extract_tb(exc.__traceback__)[-1]
        outcome = "error"
        detail = f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})"
    return results.make_record(
        scenario=scenario,
        artifact=_ARTIFACT,
        agent=chain.agent,
        loader=_LOADER,
        outcome=outcome,
        detail=detail[:2000],
        duration_s=time.perf_counter() - started,
        outputs=outputs,
        **stages,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- train
#: Agent label -> (class path, constructor kwargs); a team's come from its config.
AgentSpecs = Mapping[str, tuple[str, dict[str, Any]]]
DEFAULT_SPECS: AgentSpecs = {name: (path, {}) for name, path in AGENTS.items()}


def _train_run(
    chain: Chain, layout: Layout, budget: Budget, specs: AgentSpecs = DEFAULT_SPECS
) -> tuple[Problems, dict[str, Any]]:
    data_dir = layout.train_dir(chain.producer)
    class_path, kwargs = specs[chain.agent]
    config = TrainerConfig(
        env_id=budget.env_id,
        seed=budget.seed,
        checkpoint_every=1,
        agent_class_path=class_path,
        agent_kwargs=dict(kwargs),
        ppo=PPOConfig(**budget.ppo),
    )
    trainer = Trainer.start(config, chain.run, data_dir, progress=False)
    try:
        result = trainer.train(budget.train_epochs)
    finally:
        trainer.envs.close()
    problems: Problems = []
    if result.epoch != budget.train_epochs:
        problems.append(f"{chain.run}: stopped at epoch {result.epoch}, not {budget.train_epochs}")
    if not _finite(result.stats):
        problems.append(f"{chain.run}: non-finite losses {result.stats}")
    trained = params_digest(trainer.agent)
    manager = SimpleCheckpointManager(chain.run, data_dir, cache_size=0)
    if params_digest(manager.load_agent(result.epoch)) != trained:
        problems.append(f"{chain.run}: checkpoint v{result.epoch} reloads with other weights")
    state = manager.load_trainer_state(restore_rng=False)
    if state is None or state.epoch != result.epoch:
        problems.append(f"{chain.run}: no trainer state at epoch {result.epoch}")
    torch_v, numpy_v = _here()
    side = {
        "run": chain.run,
        "epoch": result.epoch,
        "agent_step": result.agent_step,
        "params_digest": trained,
        "torch": torch_v,
        "numpy": numpy_v,
    }
    _write_json(layout.sidecar(data_dir, chain.run), side)
    return problems, side


def train_step(
    agent: str,
    producer: str,
    cells: Sequence[str],
    layout: Layout,
    budget: Budget = BUDGET,
    specs: AgentSpecs = DEFAULT_SPECS,
) -> Record:
    """Train ``<agent>-<producer>-<Y>`` for every consumer Y under this torch; one record."""
    chain = Chain(agent, producer, producer)

    def body() -> tuple[Problems, dict[str, Any], dict[str, str | None]]:
        problems: Problems = []
        digests = {}
        side: dict[str, Any] = {}
        for consumer in cells:
            run_problems, side = _train_run(Chain(agent, producer, consumer), layout, budget, specs)
            problems += run_problems
            digests[side["run"]] = side["params_digest"]
        if len(set(digests.values())) > 1:
            problems.append(f"runs with one seed differ: {digests}")
        outputs = {
            "runs": sorted(digests),
            "epoch": side["epoch"],
            "agent_step": side["agent_step"],
            "params_digest": side["params_digest"],
        }
        return problems, outputs, {}

    record = _checked("train", chain, body)
    return dataclasses.replace(
        record, outputs={k: v for k, v in (record.outputs or {}).items() if k != "run"}
    )


# --------------------------------------------------------------------------- resume
def resume_step(chain: Chain, layout: Layout, budget: Budget = BUDGET) -> Record:
    """Resume X's run ``chain.run`` under this torch (a copy), then evaluate it for reference."""

    def body() -> tuple[Problems, dict[str, Any], dict[str, str | None]]:
        source_dir = layout.train_dir(chain.producer)
        trained = _read_sidecar(
            layout.sidecar(source_dir, chain.run), f"train under {chain.producer}"
        )
        data_dir = layout.resume_dir(chain.consumer)
        shutil.rmtree(data_dir / chain.run, ignore_errors=True)
        shutil.copytree(source_dir / chain.run, data_dir / chain.run)
        problems: Problems = []
        trainer = Trainer.resume(chain.run, data_dir, progress=False)
        try:
            before = params_digest(trainer.agent)
            if trainer.epoch != trained["epoch"]:
                problems.append(f"resumed at epoch {trainer.epoch}, trained to {trained['epoch']}")
            if before != trained["params_digest"]:
                problems.append(f"weights trained under {trained['torch']} load changed here")
            result = trainer.train(budget.resume_epochs)
        finally:
            trainer.envs.close()
        after = params_digest(trainer.agent)
        if result.epoch != budget.resume_epochs:
            problems.append(f"stopped at epoch {result.epoch}, not {budget.resume_epochs}")
        if not _finite(result.stats):
            problems.append(f"non-finite losses after resuming: {result.stats}")
        if after == before:
            problems.append("training on did not change the weights")
        manager = SimpleCheckpointManager(chain.run, data_dir, cache_size=0)
        if params_digest(manager.load_agent(result.epoch)) != after:
            problems.append(f"checkpoint v{result.epoch} reloads with other weights")
        reference = evaluate_policy(
            file_uri(
                data_dir / chain.run / "checkpoints" / agent_filename(chain.run, result.epoch)
            ),
            layout.reference_shard(chain.consumer),
            env_id=budget.env_id,
            episodes=budget.episodes,
            seed=budget.eval_seed,
        )
        torch_v, numpy_v = _here()
        side = {
            "run": chain.run,
            "epoch": result.epoch,
            "agent_step": result.agent_step,
            "params_digest": after,
            "params_digest_before": before,
            "stats": result.stats,
            "reference_returns": reference.episode_returns,
            "torch": torch_v,
            "numpy": numpy_v,
            "producer_torch": trained["torch"],
            "producer_numpy": trained["numpy"],
        }
        _write_json(layout.sidecar(data_dir, chain.run), side)
        seen = {"producer_torch": trained["torch"], "producer_numpy": trained["numpy"]}
        return problems, side, seen

    return _checked("resume", chain, body)


# --------------------------------------------------------------------------- evaluate
def _shard_rows(shard: Path, simulation_id: str) -> list[dict[str, Any]]:
    db = SimulationStatsDB(shard, read_only=True)
    try:
        return db.query(
            "SELECT ap.policy_key, ap.policy_version, ap.policy_uri FROM agent_policies ap "
            "JOIN episodes e ON e.id = ap.episode_id WHERE e.simulation_id = ?",
            [simulation_id],
        )
    finally:
        db.close()


def evaluate_step(chain: Chain, layout: Layout, budget: Budget = BUDGET) -> Record:
    """Evaluate Y's resumed ``chain.run`` under this torch into this cell's shard."""
    assert chain.evaluator is not None

    def body() -> tuple[Problems, dict[str, Any], dict[str, str | None]]:
        data_dir = layout.resume_dir(chain.consumer)
        resumed = _read_sidecar(
            layout.sidecar(data_dir, chain.run), f"resume under {chain.consumer}"
        )
        epoch = int(resumed["epoch"])
        uri = file_uri(data_dir / chain.run / "checkpoints" / agent_filename(chain.run, epoch))
        shard = layout.shard(chain.evaluator)  # type: ignore[arg-type]
        shard.parent.mkdir(parents=True, exist_ok=True)
        result = evaluate_policy(
            uri, shard, env_id=budget.env_id, episodes=budget.episodes, seed=budget.eval_seed
        )
        problems: Problems = []
        if (result.policy_key, result.policy_version) != (chain.run, epoch):
            problems.append(
                f"keyed ({result.policy_key}, {result.policy_version}), "
                f"expected ({chain.run}, {epoch})"
            )
        rows = _shard_rows(shard, result.simulation_id)
        keys = {(r["policy_key"], r["policy_version"]) for r in rows}
        if len(rows) != budget.episodes or keys != {(chain.run, epoch)}:
            problems.append(
                f"shard holds {len(rows)} episodes keyed {sorted(keys)}, expected "
                f"{budget.episodes} keyed ({chain.run}, {epoch})"
            )
        if params_digest(SimpleCheckpointManager.load_from_uri(uri)) != resumed["params_digest"]:
            problems.append(f"weights saved under {resumed['torch']} load changed here")
        returns, reference = result.episode_returns, resumed["reference_returns"]
        if chain.evaluator == chain.consumer:
            if returns != reference:
                problems.append(f"greedy returns {returns} != {reference} in the same cell")
        else:
            want = math.fsum(reference) / len(reference)
            if not math.isclose(result.mean_return, want, rel_tol=EVAL_RETURN_REL):
                problems.append(
                    f"mean return {result.mean_return:.3f} vs {want:.3f} under "
                    f"{resumed['torch']} (rel tol {EVAL_RETURN_REL})"
                )
        outputs = {
            "uri": uri,
            "epoch": epoch,
            "policy_key": result.policy_key,
            "policy_version": result.policy_version,
            "episode_returns": returns,
            "reference_returns": reference,
            "db": str(shard),
        }
        seen = {
            "producer_torch": resumed["producer_torch"],
            "consumer_torch": resumed["torch"],
            "producer_numpy": resumed["producer_numpy"],
            "consumer_numpy": resumed["numpy"],
        }
        return problems, outputs, seen

    return _checked("evaluate", chain, body)
