"""A task's snapshot (runtime.snapshots) through state's atomic TaskSnapshotWriter.

Real RocksDB state (KeyedStateBackend), no sockets: the snapshotter is given a
recording ``send`` and writers that record the events they broadcast.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from netlayer.events import CheckpointBarrier
from streamer.runtime.snapshots import TaskSnapshotter
from streamer.state import CheckpointStorage, KeyedStateBackend
from streamer.state.storage import TaskSnapshotError

TASK = "count#1"
TASK_DIR = "count%231"


class RecordingWriter:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.position = 3  # round robin's next subpartition: part of the snapshot

    def broadcast_event(self, event: Any) -> None:
        self.events.append(event)


class FakeSink:
    """What the snapshotter uses of a SinkOutput: ``on_barrier`` and ``exactly_once``."""

    exactly_once = True

    def __init__(self) -> None:
        self.sealed: list[int] = []

    def on_barrier(self, checkpoint_id: int) -> list[tuple[int, list[list[Any]]]]:
        self.sealed.append(checkpoint_id)
        return [(c, [["k", {"n": c}, None]]) for c in self.sealed]


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.storage = CheckpointStorage(tmp_path / "checkpoints")
        self.backend = KeyedStateBackend.open(
            tmp_path / "db", max_parallelism=128, key_groups=range(0, 128)
        )
        self.counts = self.backend.value_state("n")
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.writer = RecordingWriter()
        self.sink = FakeSink()
        self.snapshotter = TaskSnapshotter(
            TASK,
            0,
            str(self.storage.root),
            lambda kind, fields: self.sent.append((kind, fields)),
            writers=[self.writer],  # type: ignore[list-item]
            backend=self.backend,
            sink=self.sink,  # type: ignore[arg-type]
        )

    def count(self, key: str) -> int:
        self.backend.set_current_key(key)
        n = int(self.counts.value(0)) + 1
        self.counts.update(n)
        return n

    def kinds(self) -> list[str]:
        return [kind for kind, _ in self.sent]

    def barriers(self) -> list[int]:
        return [e.checkpoint_id for e in self.writer.events if isinstance(e, CheckpointBarrier)]


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    harness = Harness(tmp_path)
    yield harness
    harness.backend.close()


def test_a_snapshot_is_published_whole_and_acked(h: Harness) -> None:
    h.count("a")
    pending = h.storage.begin(1)
    assert h.snapshotter.take(1, source={"topic": "t", "positions": {"0": 5}})
    assert h.kinds() == ["checkpoint_ack"]
    state = h.sent[0][1]["state"]
    assert Path(state["dir"]) == pending.path / "tasks" / TASK_DIR
    assert state["sink_records"] == 1 and state["keyed"]["max_parallelism"] == 128
    assert h.barriers() == [1]
    entries = sorted(p.name for p in (pending.path / "tasks").iterdir())
    assert entries == [TASK_DIR]  # no temporary directory left behind
    task_json = orjson.loads((pending.path / "tasks" / TASK_DIR / "task.json").read_bytes())
    assert task_json["source"] == {"topic": "t", "positions": {"0": 5}}
    assert task_json["writers"] == [3]  # the round-robin position a replay routes from
    completed = h.storage.complete(pending, {"tasks": {TASK: {"keyed": state["keyed"]}}})
    assert completed.tasks == {TASK: {"dir": f"tasks/{TASK_DIR}"}}
    assert completed.read_json("sink.json", task_id=TASK) == [[1, [["k", {"n": 1}, None]]]]


def _remove_during_keyed(h: Harness, pending_path: Path, *, before: bool) -> None:
    real = h.backend.snapshot

    def snapshot(target: Any) -> dict[str, Any]:
        if before:
            shutil.rmtree(pending_path)  # the coordinator aborted and deleted it
            return real(target)  # RocksDB makes the missing parents again
        meta = real(target)
        shutil.rmtree(pending_path)
        return meta

    h.backend.snapshot = snapshot  # type: ignore[method-assign]


@pytest.mark.parametrize("before", [True, False], ids=["before-keyed", "after-keyed"])
def test_a_snapshot_into_a_deleted_pending_directory_is_declined_and_the_task_goes_on(
    h: Harness, caplog: pytest.LogCaptureFixture, before: bool
) -> None:
    h.count("a")
    pending = h.storage.begin(1)
    _remove_during_keyed(h, pending.path, before=before)
    with caplog.at_level(logging.WARNING):
        assert h.snapshotter.take(1) is False
    assert h.kinds() == ["checkpoint_declined"]
    declined = h.sent[0][1]
    assert declined["checkpoint_id"] == 1
    assert "aborted?" in declined["reason"]
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "declines checkpoint 1" in warnings[0].getMessage()
    assert h.barriers() == [1]  # forwarded anyway: downstream alignment completes
    assert not pending.path.exists()  # partial files gone, nothing recreated
    assert h.sink.sealed == [1]  # the epoch is sealed; the next checkpoint carries it
    assert h.snapshotter.declined == 1

    # the task keeps working: state, the next checkpoint, its ack
    del h.backend.snapshot
    assert h.count("a") == 2
    h.sent.clear()
    pending2 = h.storage.begin(2)
    assert h.snapshotter.take(2)
    assert h.kinds() == ["checkpoint_ack"]
    assert h.barriers() == [1, 2]
    assert h.sent[0][1]["state"]["sink_records"] == 2  # epochs 1 and 2, both uncommitted
    keyed = h.sent[0][1]["state"]["keyed"]
    done = h.storage.complete(pending2, {"tasks": {TASK: {"keyed": keyed}}})
    task_dir = done.task_dir(TASK)
    assert task_dir is not None
    restored = KeyedStateBackend.restore(
        done.path.parent / "restored",
        [(task_dir / "keyed", keyed)],
        max_parallelism=128,
        key_groups=range(0, 128),
    )
    with restored:
        restored.set_current_key("a")
        assert restored.value_state("n").value() == 2


def test_a_missing_pending_directory_is_declined_without_recreating_it(h: Harness) -> None:
    pending = h.storage.begin(4)
    h.storage.abort(pending)
    assert h.snapshotter.take(4) is False
    assert h.kinds() == ["checkpoint_declined"]
    assert not pending.path.exists()
    assert h.barriers() == [4]


def test_a_checkpoint_aborted_before_its_snapshot_is_declined(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    """Also what a lossless replay meets: the barriers of checkpoints its failure aborted
    (the plan's ``aborted_through``) are forwarded without a snapshot, at INFO only."""
    pending = h.storage.begin(3)
    h.snapshotter.abort(3)
    with caplog.at_level(logging.INFO):
        assert h.snapshotter.take(3) is False
    assert h.kinds() == ["checkpoint_declined"]
    assert "aborted" in h.sent[0][1]["reason"]
    assert not (pending.path / "tasks").exists()
    assert h.barriers() == [3]
    assert [r.levelno for r in caplog.records if "declines" in r.getMessage()] == [logging.INFO]


def test_a_rocksdb_failure_is_declined(h: Harness) -> None:
    h.storage.begin(5)

    def broken(target: Any) -> dict[str, Any]:
        raise Exception("IO error: No such file or directory: keyed.tmp/CURRENT")

    h.backend.snapshot = broken  # type: ignore[method-assign]
    assert h.snapshotter.take(5) is False
    assert "IO error" in h.sent[0][1]["reason"]
    assert list((h.storage.root / "pending-5" / "tasks").iterdir()) == []


def test_without_checkpoint_storage_nothing_is_taken(tmp_path: Path) -> None:
    sent: list[Any] = []
    snapshotter = TaskSnapshotter(TASK, 0, None, lambda k, f: sent.append(k))
    assert snapshotter.take(1) is False
    assert sent == []


# ------------------------------------------------------------ TaskSnapshotWriter


def test_the_writer_publishes_by_one_rename(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(1)
    with pending.task_writer(TASK) as part:
        part.write_json("task.json", {"x": 1})
        assert not (pending.path / "tasks" / TASK_DIR).exists()
        assert part.path.parent == pending.path / "tasks" and part.path.name.startswith(".")
        # a manifest written now does not list the temporary directory as a task
        snapshot = part.commit()
    assert snapshot.path == pending.path / "tasks" / TASK_DIR
    assert orjson.loads((snapshot.path / "task.json").read_bytes()) == {"x": 1}
    assert [p.name for p in (pending.path / "tasks").iterdir()] == [TASK_DIR]


def test_the_writer_discards_on_error_and_hides_its_temp_from_manifests(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(1)
    with pytest.raises(RuntimeError), pending.task_writer(TASK) as part:
        part.write_json("task.json", {"x": 1})
        raise RuntimeError("boom")
    assert list((pending.path / "tasks").iterdir()) == []
    other = pending.task_writer("other#0")
    other.write_json("task.json", {})
    done = storage.complete(pending, {})
    assert done.tasks == {}  # the unpublished writer's directory is not a task
    other.discard()


def test_the_writer_refuses_a_gone_pending_directory(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(2)
    storage.abort(pending)
    with pytest.raises(TaskSnapshotError, match="is gone"):
        pending.task_writer(TASK)
    assert not pending.path.exists()
