"""CheckpointStorage: atomic completion, retention, validated recovery, savepoints."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.graph.keygroups import key_group_for_key, key_group_range
from streamer.state import (
    CheckpointStorage,
    CorruptCheckpointError,
    KeyedStateBackend,
    PendingCheckpoint,
    StateError,
)
from streamer.state.storage import MANIFEST_NAME


def write_checkpoint(
    storage: CheckpointStorage, checkpoint_id: int, tasks: tuple[str, ...] = ("count#0", "count#1")
) -> None:
    pending = storage.begin(checkpoint_id)
    for task in tasks:
        d = pending.task_dir(task)
        (d / "keyed").mkdir()
        (d / "keyed" / "000009.sst").write_bytes(bytes(range(256)) * 8)
        pending.write_json("offsets.json", {"p0": checkpoint_id}, task_id=task)
    pending.write_json("coordinator.json", {"id": checkpoint_id})
    storage.complete(pending, {"job": "j", "tasks": {t: {"n": i} for i, t in enumerate(tasks)}})


def test_begin_complete_is_atomic(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk")
    pending = storage.begin(1)
    pending.write_json("a.json", {"x": 1})
    pending.task_dir("src#0").joinpath("blob").write_bytes(b"data")
    # a pending checkpoint is never listed nor recovered from
    assert storage.list() == []
    assert storage.latest() == (None, [])
    assert pending.path == tmp_path / "chk" / "pending-1"
    metadata = {"tasks": {"src#0": {"offset": 5}, "sink#0": {"tx": 3}}, "vertices": {"a": 1}}
    done = storage.complete(pending, metadata)
    assert not pending.path.exists()
    assert done.path == tmp_path / "chk" / "chk-1"
    assert storage.list() == [1]
    latest, skipped = storage.latest()
    assert skipped == []
    assert latest is not None and latest.checkpoint_id == 1 and latest.kind == "checkpoint"
    assert latest.metadata == metadata  # verbatim
    assert latest.task_ids() == ["sink#0", "src#0"]
    assert latest.task_metadata("src#0") == {"offset": 5}
    assert latest.task_dir("sink#0") is None  # acked metadata only, no files
    src_dir = latest.task_dir("src#0")
    assert src_dir is not None and (src_dir / "blob").read_bytes() == b"data"
    assert latest.read_json("a.json") == {"x": 1}
    manifest = orjson.loads((done.path / MANIFEST_NAME).read_bytes())
    assert manifest["files"]["tasks/src%230/blob"]["size"] == 4
    assert len(manifest["files"]["a.json"]["sha256"]) == 64
    assert manifest["checkpoint_id"] == 1 and manifest["hash"] == "sha256"
    with pytest.raises(StateError, match="already exists"):
        storage.begin(1)


def test_pending_is_plain_data_and_abort(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(3)
    # a task process rebuilds it from the storage root and the id
    rebuilt = PendingCheckpoint.attach(str(tmp_path), 3)
    assert rebuilt == pending
    rebuilt.write_json("x.json", [1, 2], task_id="a/b#0")
    assert (pending.path / "tasks" / "a%2Fb%230" / "x.json").exists()
    with pytest.raises(StateError):
        pending.write_json("../escape.json", {})
    with pytest.raises(StateError):
        pending.task_dir("..")
    storage.abort(pending)
    storage.abort(pending)
    assert not pending.path.exists()
    assert storage.list() == []
    with pytest.raises(StateError, match="aborted"):
        storage.complete(pending, {})


def test_complete_rejects_unserializable_metadata(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(1)
    with pytest.raises(StateError, match="JSON"):
        storage.complete(pending, {"bad": object()})
    assert storage.list() == []


def test_task_ids_round_trip(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    pending = storage.begin(1)
    for task in ("join#12", "weird/id %#0", "ключ#1"):
        pending.write_json("s.json", task, task_id=task)
    done = storage.complete(pending, {})
    assert done.task_ids() == sorted(["join#12", "weird/id %#0", "ключ#1"])
    assert done.read_json("s.json", task_id="weird/id %#0") == "weird/id %#0"


def test_retain(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    for i in (1, 2, 3, 10, 11):
        write_checkpoint(storage, i, tasks=("t#0",))
    assert storage.list() == [1, 2, 3, 10, 11]  # numeric, not lexical order
    assert storage.retain(3) == [1, 2]
    assert storage.list() == [3, 10, 11]
    assert storage.retain(5) == []
    assert not any(p.name.startswith(".trash") for p in tmp_path.iterdir())
    with pytest.raises(StateError):
        storage.retain(0)


def test_latest_falls_back_over_corrupt_checkpoints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    storage = CheckpointStorage(tmp_path)
    for i in range(4, 10):
        write_checkpoint(storage, i)
    sst = "tasks/count%231/keyed/000009.sst"
    # 9: a truncated file
    with open(tmp_path / "chk-9" / sst, "r+b") as f:
        f.truncate(100)
    # 8: a missing file
    (tmp_path / "chk-8" / "tasks/count%230/offsets.json").unlink()
    # 7: same size, one bit flipped
    data = bytearray((tmp_path / "chk-7" / sst).read_bytes())
    data[1000] ^= 1
    (tmp_path / "chk-7" / sst).write_bytes(bytes(data))
    # 6: manifest is not JSON
    (tmp_path / "chk-6" / MANIFEST_NAME).write_bytes(b'{"format": 1, "kin')
    # 5: manifest edited (valid JSON, its signature no longer matches)
    manifest = orjson.loads((tmp_path / "chk-5" / MANIFEST_NAME).read_bytes())
    manifest["checkpoint_id"] = 99
    (tmp_path / "chk-5" / MANIFEST_NAME).write_bytes(orjson.dumps(manifest))

    with caplog.at_level(logging.WARNING, logger="streamer.state.storage"):
        choice = storage.latest()
    assert choice.checkpoint is not None and choice.checkpoint.checkpoint_id == 4
    reasons = {s.checkpoint_id: s.reason for s in choice.skipped}
    assert orjson.loads(orjson.dumps(choice.skipped))[0]["checkpoint_id"] == 9  # status-able
    assert [s.checkpoint_id for s in choice.skipped] == [9, 8, 7, 6, 5]
    assert reasons[9] == (
        "task count#1 file keyed/000009.sst: size mismatch (expected 2048 bytes, found 100)"
    )
    assert reasons[8] == "task count#0 file offsets.json: missing"
    assert reasons[7] == "task count#1 file keyed/000009.sst: checksum mismatch"
    assert reasons[6].startswith("manifest is not valid JSON")
    assert reasons[5] == "manifest was not written by this cluster or was modified (bad signature)"
    assert choice.describe().startswith(
        "recovery used checkpoint 4: checkpoint 9 is corrupt (task count#1 file "
        "keyed/000009.sst: size mismatch"
    )
    assert "checkpoint 7 is corrupt (task count#1 file keyed/000009.sst: checksum mismatch)" in (
        caplog.text
    )
    # the flipped bit goes unnoticed without hashing, the rest does not
    choice = storage.latest(verify_hashes=False)
    assert choice.checkpoint is not None and choice.checkpoint.checkpoint_id == 7
    # 4: manifest missing -> nothing usable
    (tmp_path / "chk-4" / MANIFEST_NAME).unlink()
    choice = storage.latest()
    assert choice.checkpoint is None
    assert choice.describe().startswith("no usable checkpoint: checkpoint 9 is corrupt")
    assert choice.skipped[-1].reason == f"manifest {MANIFEST_NAME} is missing"
    with pytest.raises(CorruptCheckpointError, match="missing"):
        storage.get(4)


def test_hashing_off(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, hash_files=False)
    write_checkpoint(storage, 1)
    manifest = orjson.loads((tmp_path / "chk-1" / MANIFEST_NAME).read_bytes())
    assert manifest["hash"] is None
    assert all("sha256" not in f for f in manifest["files"].values())
    with open(tmp_path / "chk-1" / "coordinator.json", "ab") as f:
        f.write(b" ")
    assert storage.latest().checkpoint is None  # sizes are still checked


def test_cleanup_pending(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    storage.begin(1)
    write_checkpoint(storage, 2)
    assert storage.cleanup_pending() == 1
    assert [p.name for p in tmp_path.iterdir()] == ["chk-2"]


def _fill(backend: KeyedStateBackend, keys: list[str]) -> None:
    counts = backend.value_state("count")
    for key in keys:
        backend.set_current_key(key)
        counts.update({"key": key})


def test_savepoint_round_trip_with_rescale(tmp_path: Path) -> None:
    """Two tasks snapshot into a savepoint; it is loaded and restored into three."""
    maxp = 32
    keys = [f"k{i}" for i in range(300)]
    storage = CheckpointStorage(tmp_path / "checkpoints")
    pending = storage.begin_savepoint(tmp_path / "savepoints" / "sp-1", checkpoint_id=12)
    assert pending.kind == "savepoint" and not (tmp_path / "savepoints" / "sp-1").exists()
    task_meta: dict[str, Any] = {}
    for sub in range(2):
        kgs = key_group_range(sub, maxp, 2)
        with KeyedStateBackend.open(
            tmp_path / f"work{sub}", max_parallelism=maxp, key_groups=kgs
        ) as b:
            _fill(b, [k for k in keys if key_group_for_key(k, maxp) in kgs])
            tid = f"count#{sub}"
            task_meta[tid] = {"keyed": b.snapshot(pending.task_dir(tid) / "keyed")}
    done = storage.complete(pending, {"job": "counts", "tasks": task_meta})
    assert done.path == (tmp_path / "savepoints" / "sp-1").absolute()
    assert storage.list() == []  # savepoints are not checkpoints
    assert [p.name for p in (tmp_path / "savepoints").iterdir()] == ["sp-1"]

    loaded = CheckpointStorage.load(tmp_path / "savepoints" / "sp-1")
    assert loaded.kind == "savepoint" and loaded.checkpoint_id == 12
    assert loaded.metadata == {"job": "counts", "tasks": task_meta}
    sources = []
    for tid in loaded.task_ids():
        task_dir = loaded.task_dir(tid)
        assert task_dir is not None
        sources.append((task_dir / "keyed", loaded.task_metadata(tid)["keyed"]))
    for sub in range(3):
        kgs = key_group_range(sub, maxp, 3)
        with KeyedStateBackend.restore(
            tmp_path / f"new{sub}", sources, max_parallelism=maxp, key_groups=kgs
        ) as r:
            counts = r.value_state("count")
            for key in keys:
                if key_group_for_key(key, maxp) in kgs:
                    r.set_current_key(key)
                    assert counts.value() == {"key": key}
    # still valid after being restored from (nothing wrote into it)
    CheckpointStorage.load(tmp_path / "savepoints" / "sp-1")

    with pytest.raises(StateError, match="already exists"):
        storage.begin_savepoint(tmp_path / "savepoints" / "sp-1", 13)
    sst = next((tmp_path / "savepoints" / "sp-1").rglob("*.sst"), None) or next(
        (tmp_path / "savepoints" / "sp-1").rglob("*.log")
    )
    sst.write_bytes(sst.read_bytes() + b"x")
    with pytest.raises(CorruptCheckpointError, match="size mismatch"):
        CheckpointStorage.load(tmp_path / "savepoints" / "sp-1")
    with pytest.raises(StateError, match="no savepoint"):
        CheckpointStorage.load(tmp_path / "nowhere")


def test_savepoint_copied_from_checkpoint(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk")
    write_checkpoint(storage, 7)
    completed = storage.get(7)
    sp = storage.savepoint(completed, tmp_path / "sp" / "before-upgrade")
    assert sp.kind == "savepoint" and sp.checkpoint_id == 7
    assert sp.metadata == completed.metadata
    assert [p.name for p in (tmp_path / "sp").iterdir()] == ["before-upgrade"]
    storage.delete(7)  # the savepoint does not depend on the checkpoint
    assert storage.list() == []
    loaded = CheckpointStorage.load(tmp_path / "sp" / "before-upgrade")
    assert loaded.kind == "savepoint"
    assert loaded.task_metadata("count#1") == {"n": 1}
    assert loaded.read_json("offsets.json", task_id="count#0") == {"p0": 7}
    with pytest.raises(StateError, match="already exists"):
        storage.savepoint(loaded, tmp_path / "sp" / "before-upgrade")
