"""Signed manifests: a checkpoint or savepoint this cluster did not write, or that was
modified, is refused; so is any directory a manifest names outside its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.security.secret import derive
from streamer.state import CheckpointStorage, CorruptCheckpointError, KeyedStateBackend, StateError
from streamer.state.manifest import MANIFEST_NAME, manifest_key, read_manifest, sign_manifest
from streamer.state.restore import check_snapshot_dir
from streamer.state.roots import StateRoots

KEY = manifest_key(b"\x01" * 32)
OTHER = manifest_key(b"\x02" * 32)
FOREIGN = "was not written by this cluster or was modified"


def write(storage: CheckpointStorage, checkpoint_id: int) -> Path:
    pending = storage.begin(checkpoint_id)
    pending.write_json("task.json", {"n": checkpoint_id}, task_id="count#0")
    tasks = {"count#0": {"dir": "tasks/count%230", "keyed": None}}
    return storage.complete(pending, {"job": "j", "tasks": tasks}).path


def manifest(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads((path / MANIFEST_NAME).read_bytes())
    return data


def rewrite(path: Path, body: dict[str, Any]) -> None:
    (path / MANIFEST_NAME).write_bytes(orjson.dumps(body))


def test_the_manifest_key_is_derived_from_the_cluster_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert KEY == derive(b"\x01" * 32, "manifest") != OTHER
    monkeypatch.setenv("STREAMER_CLUSTER_SECRET", "ab" * 32)
    assert manifest_key() == derive(bytes.fromhex("ab" * 32), "manifest")


def test_a_completed_checkpoint_is_signed_and_validates(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, key=KEY)
    path = write(storage, 1)
    body = manifest(path)
    assert body["format"] == 3 and len(body["signature"]) == 64
    assert (body["job_id"], body["path"]) == ("", f"{tmp_path.name}/chk-1")
    assert "manifest_sha256" not in body
    assert storage.get(1).metadata["job"] == "j"
    assert read_manifest(path, KEY)["signature"] == body["signature"]


def test_a_checkpoint_signed_with_another_secret_is_refused(tmp_path: Path) -> None:
    write(CheckpointStorage(tmp_path, key=OTHER), 1)
    storage = CheckpointStorage(tmp_path, key=KEY)
    with pytest.raises(CorruptCheckpointError) as err:
        storage.get(1)
    assert err.value.reason == f"manifest {FOREIGN} (bad signature)"
    choice = storage.latest()
    assert choice.checkpoint is None
    assert choice.describe() == (
        f"no usable checkpoint: checkpoint 1 is corrupt (manifest {FOREIGN} (bad signature))"
    )


def test_changed_contents_with_the_old_signature_are_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, key=KEY)
    write(storage, 1)
    path = write(storage, 2)
    body = manifest(path)
    body["metadata"]["tasks"]["count#0"]["dir"] = "../../.."  # signature left as it was
    rewrite(path, body)
    choice = storage.latest()
    assert choice.checkpoint is not None and choice.checkpoint.checkpoint_id == 1
    assert [s.reason for s in choice.skipped] == [f"manifest {FOREIGN} (bad signature)"]


def test_a_manifest_without_a_signature_is_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, key=KEY)
    path = write(storage, 1)
    body = manifest(path)
    del body["signature"]
    rewrite(path, body)
    with pytest.raises(CorruptCheckpointError, match=f"manifest is not signed: it {FOREIGN}"):
        storage.get(1)
    # a format 1 manifest (an unkeyed sha256 anyone can recompute) is unsigned too
    body["format"], body["manifest_sha256"] = 1, "0" * 64
    rewrite(path, body)
    with pytest.raises(CorruptCheckpointError, match="manifest is not signed"):
        CheckpointStorage.load(path, key=KEY)


@pytest.mark.parametrize(
    ("where", "bad", "problem"),
    [
        ("metadata", "../../..", "has a '..', '.' or empty component"),
        ("metadata", "tasks/../../x", "has a '..', '.' or empty component"),
        ("metadata", "/etc", "is absolute"),
        ("tasks", "tasks//count%230", "has a '..', '.' or empty component"),
        ("tasks", "tasks\\..\\..", "has a backslash or NUL"),
        ("tasks", 7, "is not a relative path"),
    ],
)
def test_a_signed_manifest_naming_a_task_dir_outside_is_still_refused(
    tmp_path: Path, where: str, bad: object, problem: str
) -> None:
    """Defence in depth: even a manifest signed with this cluster's key is refused."""
    storage = CheckpointStorage(tmp_path / "chk", key=KEY)
    path = write(storage, 1)
    body = manifest(path)
    entries = body["metadata"]["tasks"] if where == "metadata" else body["tasks"]
    entries["count#0"]["dir"] = bad
    rewrite(path, sign_manifest(body, KEY))
    with pytest.raises(CorruptCheckpointError) as err:
        storage.get(1)
    assert err.value.reason == f"task count#0 directory {bad!r} {problem}"


def test_a_listed_file_outside_the_checkpoint_is_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk", key=KEY)
    path = write(storage, 1)
    (tmp_path / "secret.txt").write_text("x")
    body = manifest(path)
    body["files"]["../../secret.txt"] = {"size": 1}
    rewrite(path, sign_manifest(body, KEY))
    with pytest.raises(CorruptCheckpointError) as err:
        storage.get(1)
    assert err.value.reason == "file '../../secret.txt' has a '..', '.' or empty component"


def test_a_task_dir_that_is_a_symlink_out_of_the_checkpoint_is_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk", key=KEY)
    path = write(storage, 1)
    outside = tmp_path / "elsewhere"
    (path / "tasks" / "count%230").rename(outside)
    (path / "tasks" / "count%230").symlink_to(outside)
    with pytest.raises(CorruptCheckpointError) as err:
        storage.get(1)
    assert err.value.reason == (
        "task count#0 directory 'tasks/count%230' leads outside the checkpoint directory"
    )


def test_a_savepoint_is_signed_again_and_loads_only_with_its_clusters_key(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk", key=KEY)
    write(storage, 3)
    saved = storage.savepoint(storage.get(3), tmp_path / "sp" / "one")
    assert saved.kind == "savepoint"
    loaded = CheckpointStorage.load(tmp_path / "sp" / "one", key=KEY)
    assert loaded.kind == "savepoint" and loaded.checkpoint_id == 3
    with pytest.raises(CorruptCheckpointError, match=f"manifest {FOREIGN}"):
        CheckpointStorage.load(tmp_path / "sp" / "one", key=OTHER)


def test_restore_refuses_snapshot_dirs_outside_their_checkpoint(tmp_path: Path) -> None:
    """The task side: a restore plan naming a relative path, '..' or a symlink out."""
    chk = tmp_path / "chk-1"
    (chk / "tasks").mkdir(parents=True)
    assert check_snapshot_dir(chk / "tasks" / "a" / "keyed", chk) == chk / "tasks/a/keyed"
    for bad in ("tasks/a/keyed", f"{chk}/tasks/../../../etc"):
        with pytest.raises(StateError) as err:
            check_snapshot_dir(bad, chk)
        assert str(err.value) == (
            f"refusing to restore from snapshot {bad!r}: not an absolute path without '..' "
            "(the restore plan is corrupt)"
        )
    (chk / "tasks" / "evil").symlink_to(tmp_path)
    with pytest.raises(StateError, match=f"leads to {tmp_path}, outside its checkpoint {chk}"):
        check_snapshot_dir(chk / "tasks" / "evil", chk)
    with pytest.raises(StateError, match="outside its checkpoint"):
        KeyedStateBackend.restore(
            tmp_path / "db",
            [(chk / "tasks" / "evil", {"format": 1})],
            max_parallelism=8,
            key_groups=range(0, 8),
            within=chk,
        )
    assert not (tmp_path / "db").exists()


def test_restore_refuses_a_relative_snapshot_dir_without_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not an absolute path"):
        KeyedStateBackend.restore(
            tmp_path / "db", [(Path("keyed"), {})], max_parallelism=8, key_groups=range(0, 8)
        )


@pytest.mark.parametrize("hash_files", [True, False])
def test_another_jobs_checkpoints_are_neither_used_nor_deleted(
    tmp_path: Path, hash_files: bool
) -> None:
    """Two jobs' storages in one directory under a state root: each recovers from and
    retains only its own checkpoints, hashed or not."""
    roots = StateRoots.of([tmp_path])
    mine = CheckpointStorage(
        tmp_path / "job-a", key=KEY, job_id="job-a", roots=roots, hash_files=hash_files
    )
    other = CheckpointStorage(
        tmp_path / "job-a", key=KEY, job_id="job-b", roots=roots, hash_files=hash_files
    )
    for checkpoint_id in (1, 2, 3):
        write(mine, checkpoint_id)
    for checkpoint_id in (4, 5):
        write(other, checkpoint_id)
    assert manifest(tmp_path / "job-a" / "chk-5")["path"] == "job-a/chk-5"
    choice = other.latest()
    assert choice.checkpoint is not None and choice.checkpoint.checkpoint_id == 5
    assert other.retain(1) == [4]
    choice = mine.latest()
    assert choice.checkpoint is not None and choice.checkpoint.checkpoint_id == 3
    assert [(s.checkpoint_id, s.reason) for s in choice.skipped] == [
        (5, "manifest was signed for job 'job-b', not 'job-a'")
    ]
    assert mine.retain(2) == [1]
    assert mine.list() == [2, 3, 5]
    with pytest.raises(CorruptCheckpointError) as err:
        other.get(3)
    assert err.value.reason == "manifest was signed for job 'job-a', not 'job-b'"


def test_a_checkpoint_moved_to_another_directory_is_refused_and_kept(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "chk", key=KEY, job_id="job-a")
    write(storage, 1)
    (tmp_path / "chk" / "chk-1").rename(tmp_path / "chk" / "chk-2")
    with pytest.raises(CorruptCheckpointError) as err:
        storage.get(2)
    assert err.value.reason == (
        "manifest was signed for directory 'chk/chk-1', not 'chk/chk-2' "
        "(it is used only where it was written)"
    )
    write(storage, 3)
    assert storage.retain(1) == [] and storage.list() == [2, 3]  # not this job's chk-2


def test_a_format_2_manifest_binding_neither_job_nor_path_is_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, key=KEY)
    path = write(storage, 1)
    body = manifest(path)
    del body["job_id"], body["path"]
    body["format"] = 2
    rewrite(path, sign_manifest(body, KEY))
    with pytest.raises(CorruptCheckpointError) as err:
        CheckpointStorage.load(path, key=KEY)
    assert err.value.reason == "unsupported manifest format 2"
