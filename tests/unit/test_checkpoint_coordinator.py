"""CheckpointCoordinator against a view of a job, on real checkpoint storage (no sockets).

Issue 9's faults 1 and 5: an aborted checkpoint never deletes a directory a task
may still be writing into (it goes once a later checkpoint completed), a decline
aborts, and an aborted periodic checkpoint leaves no unretrieved future behind.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path
from typing import Any

import pytest

from streamer.api import StreamEnvironment
from streamer.coordinator.checkpoints import CheckpointCoordinator
from streamer.graph import TaskId
from streamer.rpc import kinds as k
from streamer.state.snapshot_writer import PendingCheckpoint


def ident(x: Any) -> Any:
    return x


class View:
    """Every task running at attempt 0; records what would be sent."""

    def __init__(self, tasks: list[TaskId]) -> None:
        self.tasks = tasks
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def can_checkpoint(self) -> bool:
        return True

    def running_tasks(self) -> set[TaskId]:
        return set(self.tasks)

    def attempt_of(self, task: TaskId) -> int:
        return 0

    def send(self, task: TaskId, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((str(task), kind, body))


def coordinator(tmp_path: Path) -> tuple[CheckpointCoordinator, View]:
    env = StreamEnvironment("cc", default_parallelism=2)
    env.from_kafka("in", name="src").key_by(ident).process(ident, name="p").to_kafka("out")
    job = env.build()
    eg = job.execution_graph()
    view = View(list(eg.tasks))
    cc = CheckpointCoordinator(view, eg, job.job_graph, tmp_path / "chk", interval=None)
    return cc, view


def ack(cc: CheckpointCoordinator, task: TaskId, checkpoint_id: int, root: Path) -> None:
    """What a task does: write its part through the state module, then ack."""
    with PendingCheckpoint.attach(root, checkpoint_id).task_writer(str(task)) as part:
        part.write_json("task.json", {"task": str(task)})
        snap = part.commit()
    state = {"dir": str(snap.path), "keyed": None, "source": None}
    cc.on_ack(k.CheckpointAck("j", str(task), 0, checkpoint_id, state))


def test_an_aborted_checkpoint_stays_until_a_later_one_completes(tmp_path: Path) -> None:
    asyncio.run(_aborted_stays(tmp_path))


async def _aborted_stays(tmp_path: Path) -> None:
    cc, view = coordinator(tmp_path)
    root = tmp_path / "chk"
    await cc.trigger()
    first = view.tasks[0]
    ack(cc, first, 1, root)
    cc.abort(f"task {view.tasks[1]} failed")
    # the others may still be writing their parts of checkpoint 1: nothing is deleted
    assert (root / "pending-1").is_dir()
    ack(cc, view.tasks[2], 1, root)  # a late writer still succeeds, and is ignored
    assert cc.pending is None and cc.aborted == 1
    assert ("src#0", "checkpoint_abort", {"checkpoint_id": 1}) in view.sent
    await cc.trigger()
    for task in view.tasks:
        ack(cc, task, 2, root)
    assert cc.completed == 1 and cc.last_completed == 2
    assert not (root / "pending-1").exists()  # every task is past checkpoint 1 now
    assert (root / "chk-2").is_dir()


def test_a_declined_checkpoint_is_aborted_with_the_reason(tmp_path: Path) -> None:
    asyncio.run(_declined(tmp_path))


async def _declined(tmp_path: Path) -> None:
    cc, view = coordinator(tmp_path)
    await cc.trigger()
    cc.on_declined(k.CheckpointDeclined("j", str(view.tasks[0]), 0, 1, "disk full"))
    assert cc.pending is None
    assert cc.abort_reasons == [f"1: declined by {view.tasks[0]}: disk full"]
    cc.on_declined(k.CheckpointDeclined("j", str(view.tasks[1]), 0, 1, "late"))  # ignored
    assert cc.aborted == 1


def test_an_aborted_periodic_checkpoint_leaves_no_unretrieved_future(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        cc, _view = coordinator(tmp_path)
        await cc.trigger()  # periodic: nobody awaits its future
        cc.abort("a task failed")
        gc.collect()  # the dropped future is collected on the loop: it would log now
        await asyncio.sleep(0)

    caplog.set_level(logging.ERROR, logger="asyncio")
    asyncio.run(run())
    assert "never retrieved" not in caplog.text
