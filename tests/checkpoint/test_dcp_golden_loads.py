"""load_dcp on the committed DCP goldens of every default producer (fixtures/golden/dcp/).

Every cell: which pairs load is the point. The matrix's DCP phase resumes the same
directories through the trainer on one and two ranks; this is the single-process core.
"""

from __future__ import annotations

import pytest
import torch
from packaging.version import Version

from ckptcompat import torch_compat
from ckptcompat.agents.registry import build_agent
from ckptcompat.checkpoint.dcp import load_dcp
from ckptcompat.errors import AgentMismatchError, IncompatibleCheckpointError
from ckptcompat.harness import versions
from ckptcompat.harness.golden.dcp import RUNS, dcp_golden_dir
from ckptcompat.locator import GOLDEN_ROOT

PRODUCERS = [c.id for c in versions.DEFAULT]
HERE = Version(torch_compat.TORCH_VERSION.base_version)


@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("producer", PRODUCERS)
def test_load_dcp_of_each_producer_loads_or_says_why(producer: str, run: str) -> None:
    """Guards a DCP directory from another torch failing with an untyped error (seen: 2.4.1
    reading 2.15.0's .metadata raised a bare "ValueError: too many values to unpack
    (expected 5)" from TensorProperties.__setstate__): every producer x this torch either
    loads weights bitwise equal to the same run's safe file, or raises a typed error
    naming the cause -- IncompatibleCheckpointError for 2.15's .metadata on <= 2.6,
    AgentMismatchError naming decoupled_weight_decay for an older Adam read by >= 2.10."""
    root = dcp_golden_dir(GOLDEN_ROOT, producer) / run / "checkpoints"
    safe = torch_compat.load(root / f"{run}_v1.pt", map_location="cpu")
    agent = build_agent(safe["agent"]["class_path"], safe["agent"]["config"])
    optimizer = torch.optim.Adam(agent.parameters(), eps=1e-5)
    made_by = Version(versions.by_id(producer).torch)
    newer_format = made_by >= Version("2.10") > HERE
    older_adam = made_by < Version("2.10") <= HERE
    if newer_format:
        with pytest.raises(IncompatibleCheckpointError, match="too many values to unpack"):
            load_dcp(agent, optimizer, root / f"{run}_v1.dcp")
    elif older_adam:
        with pytest.raises(AgentMismatchError, match="decoupled_weight_decay"):
            load_dcp(agent, optimizer, root / f"{run}_v1.dcp")
    else:
        load_dcp(agent, optimizer, root / f"{run}_v1.dcp")
        loaded = agent.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in safe["state_dict"].items())
