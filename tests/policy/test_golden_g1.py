"""Old-style G1 files written by other torch cells, read back through the deprecated PolicyStore."""

from __future__ import annotations

import pytest

from ckptcompat.errors import IncompatibleCheckpointError
from ckptcompat.harness.golden import read as golden_read
from ckptcompat.harness.golden import verify as golden_verify
from ckptcompat.harness.versions import GOLDEN_PRODUCERS
from ckptcompat.policy import PolicyStore
from ckptcompat.torch_compat import HAS_ALIASED_SAFE_GLOBALS


@pytest.mark.golden
@pytest.mark.parametrize("agent", ["mock", "recurrent"])
@pytest.mark.parametrize("producer", [c.id for c in GOLDEN_PRODUCERS])
def test_policy_store_reads_g1_from_every_producer(producer: str, agent: str, tmp_path) -> None:
    """Guards G1 (a whole pickled PolicyRecord, model_NNNN.pt) written by another torch
    becoming unreadable through the old API once torch defaults to weights_only=True.

    The record comes back with its metadata and a policy whose greedy probe outputs match
    the producer's manifest. numpy-1 pickles (t24np1) need torch 2.6+'s allowlist aliases;
    on 2.4/2.5 the store must say so with IncompatibleCheckpointError, not load something.
    """
    golden = golden_read.read_golden(golden_read.GOLDEN_ROOT / producer)
    path = golden.path(agent, "g1")
    with pytest.deprecated_call():
        store = PolicyStore(device="cpu", data_dir=tmp_path)
    numpy1 = golden.producer["numpy"].startswith("1.")
    if numpy1 and not HAS_ALIASED_SAFE_GLOBALS:
        with pytest.raises(IncompatibleCheckpointError, match="alias"), pytest.deprecated_call():
            store.policy_record(str(path), "latest")
        return
    with pytest.deprecated_call():
        record = store.policy_record(str(path), "latest")
    expected = golden.agent(agent)
    assert record.metadata.epoch == expected["epoch"]
    assert record.metadata.agent_step == expected["agent_step"]
    assert golden_verify.probe_problems(golden, agent, record.policy) == []
