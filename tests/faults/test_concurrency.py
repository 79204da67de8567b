"""Concurrent readers and writers of one run (docs/design.md section 4: atomic writes, one writer).

A reader process loads ``<run>:latest`` in a loop while a writer process saves new epochs:
it must never see a partial file (CorruptCheckpointError), an index it cannot parse, or a
checkpoint that its index does not list. Each saved agent has every parameter set to its
epoch number, so the reader can prove that what it loaded is whole and is the epoch the
index entry named. A second live writer gets RunLockedError naming the holder; the lock
frees itself when the holder exits.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ckptcompat.checkpoint.index import read_index
from ckptcompat.checkpoint.manager import SimpleCheckpointManager
from tests.faults import ForkServer, JobResult, fork_server

RUN = "shared"
EPOCHS = 40

_WRITER = """
    import time
    import torch
    from pathlib import Path
    from ckptcompat.agents.mock import MockAgent
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    manager = SimpleCheckpointManager(ARGS["run"], ARGS["data"])
    agent = MockAgent()

    def save(epoch):
        with torch.no_grad():
            for p in agent.parameters():
                p.fill_(float(epoch))
        manager.save_agent(agent, epoch, {"agent_step": epoch})

    with manager:  # one writer: hold the run's lock for the whole loop
        save(0)  # so that :latest resolves from the reader's first pass
        emit(locked=True)
        while not Path(ARGS["go"]).exists():  # until the second writer has been refused
            time.sleep(0.005)
        for epoch in range(1, ARGS["epochs"] + 1):
            save(epoch)
    Path(ARGS["done"]).touch()
"""

_READER = """
    import time
    from pathlib import Path
    import torch
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.checkpoint.index import read_index
    from ckptcompat.checkpoint.uri import resolve
    latest = f"{ARGS['data']}/{ARGS['run']}:latest"
    folder = Path(ARGS["data"]) / ARGS["run"] / "checkpoints"
    loads, seen, problems = 0, [], []
    emit(started=True)
    while True:
        finished = Path(ARGS["done"]).exists()  # read before loading: one more pass after
        try:
            resolved = resolve(latest)
            agent = SimpleCheckpointManager.load_from_uri(resolved.uri)  # verify="full"
            epoch = resolved.entry.epoch
            values = torch.cat([p.detach().flatten() for p in agent.parameters()])
            if not bool((values == float(epoch)).all()):
                problems.append(f"epoch {epoch}: parameters of another epoch or partial")
            listed = {e.epoch: e.digest for e in read_index(folder, ARGS["run"]).checkpoints}
            if listed.get(epoch) != resolved.entry.digest:
                problems.append(f"epoch {epoch} loaded but not (so) listed in the index")
            if seen and epoch < seen[-1]:
                problems.append(f"latest went back from {seen[-1]} to {epoch}")
            seen.append(epoch)
            loads += 1
        except Exception as exc:
            problems.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        if finished:
            break
    emit(loads=loads, distinct=len(set(seen)), last=seen[-1] if seen else None,
         problems=problems[:20], problem_count=len(problems))
"""

_SECOND_WRITER = """
    from ckptcompat.agents.mock import MockAgent
    from ckptcompat.checkpoint.manager import SimpleCheckpointManager
    from ckptcompat.errors import RunLockedError
    manager = SimpleCheckpointManager(ARGS["run"], ARGS["data"])
    for attempt in ("save_agent", "with manager"):
        try:
            if attempt == "save_agent":
                manager.save_agent(MockAgent(), 999)
            else:
                with manager:
                    pass
            emit(attempt=attempt, outcome="no error")
        except RunLockedError as exc:
            emit(attempt=attempt, outcome="RunLockedError", found=exc.found)
"""


@pytest.fixture(scope="module")
def server() -> ForkServer:
    """The shared fork server (torch imported once)."""
    return fork_server()


def _wait_for(server: ForkServer, result: JobResult, key: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not result.values(key):
        assert result.code is None, (result.error, server.tail())
        assert time.monotonic() < deadline, f"no {key!r} from job {result.job}"
        server.next_event(1.0)


def test_reader_never_sees_a_partial_or_unindexed_checkpoint(
    server: ForkServer, tmp_path: Path
) -> None:
    """Guards torn reads under concurrency: a reader loading :latest in a loop (resolve
    through index.json, verify="full", rebuild) while another process saves 40 epochs never
    meets a partial file, a half-written index, a digest mismatch, a checkpoint missing from
    the index or parameters of another epoch; and a second live writer is refused with
    RunLockedError naming the holder's pid, then succeeds once the holder has exited."""
    data = tmp_path / "data"
    go, done = tmp_path / "go", tmp_path / "done"
    args = {"run": RUN, "data": str(data), "epochs": EPOCHS, "go": str(go), "done": str(done)}
    writer = server.result(server.submit(_WRITER, args))
    _wait_for(server, writer, "locked")
    second = server.run(_SECOND_WRITER, args)
    assert second.error is None, second.error
    refused = {m["attempt"]: m for m in second.messages}
    for attempt in ("save_agent", "with manager"):
        assert refused[attempt]["outcome"] == "RunLockedError"
        assert f"pid {writer.pid}" in refused[attempt]["found"]
    reader = server.result(server.submit(_READER, args))
    _wait_for(server, reader, "started")
    go.touch()
    server.wait(writer.job)
    server.wait(reader.job)
    assert writer.error is None and writer.code == 0, writer.error
    assert reader.error is None and reader.code == 0, reader.error
    report = reader.messages[-1]
    assert report["problem_count"] == 0, report["problems"]
    assert report["last"] == EPOCHS
    # The reader really overlapped the writer: it saw several epochs, not only the last.
    assert report["distinct"] >= 3, report
    print(f"\nreader: {report['loads']} loads, {report['distinct']} distinct epochs, no problem")
    # The holder has exited: the kernel released its flock; the next writer gets the lock.
    after = server.run(_SECOND_WRITER, args)
    assert [m["outcome"] for m in after.messages] == ["no error", "no error"]
    index = read_index(data / RUN / "checkpoints", RUN)
    assert [e.epoch for e in index.checkpoints] == [*range(EPOCHS + 1), 999]
    assert SimpleCheckpointManager(RUN, data).load_agent(EPOCHS) is not None
