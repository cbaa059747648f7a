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

import pytest

from streamer.rpc import kinds as k
from tests.checkpointing import ack, coordinator


def test_an_aborted_checkpoint_stays_until_a_later_one_completes(tmp_path: Path) -> None:
    asyncio.run(_aborted_stays(tmp_path))


async def _aborted_stays(tmp_path: Path) -> None:
    cc, view = coordinator(tmp_path / "chk")
    root = tmp_path / "chk"
    await cc.trigger()
    first = view.tasks[0]
    ack(cc, first, 1)
    cc.abort(f"task {view.tasks[1]} failed")
    # the others may still be writing their parts of checkpoint 1: nothing is deleted
    assert (root / "pending-1").is_dir()
    ack(cc, view.tasks[2], 1)  # a late writer still succeeds, and is ignored
    assert cc.pending is None and cc.aborted == 1
    assert ("src#0", "checkpoint_abort", {"checkpoint_id": 1}) in view.sent
    await cc.trigger()
    for task in view.tasks:
        ack(cc, task, 2)
    assert cc.completed == 1 and cc.last_completed == 2
    assert not (root / "pending-1").exists()  # every task is past checkpoint 1 now
    assert (root / "chk-2").is_dir()


def test_a_declined_checkpoint_is_aborted_with_the_reason(tmp_path: Path) -> None:
    asyncio.run(_declined(tmp_path))


async def _declined(tmp_path: Path) -> None:
    cc, view = coordinator(tmp_path / "chk")
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
        cc, _view = coordinator(tmp_path / "chk")
        await cc.trigger()  # periodic: nobody awaits its future
        cc.abort("a task failed")
        gc.collect()  # the dropped future is collected on the loop: it would log now
        await asyncio.sleep(0)

    caplog.set_level(logging.ERROR, logger="asyncio")
    asyncio.run(run())
    assert "never retrieved" not in caplog.text
