"""CheckpointCoordinator against tampered checkpoints and savepoints (real storage).

A tampered checkpoint is skipped by recovery, which restores from the previous one;
a tampered or foreign savepoint is refused before any job uses it; a task cannot
make the coordinator record a snapshot directory other than its own.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.coordinator.checkpoints import CheckpointCoordinator
from streamer.errors import ConfigError
from streamer.graph import TaskId
from streamer.rpc import kinds as k
from streamer.state import CorruptCheckpointError
from streamer.state.manifest import MANIFEST_NAME, manifest_key, sign_manifest
from streamer.state.roots import STATE_ROOTS_ENV, StateRoots
from tests import checkpointing
from tests.checkpointing import View, ack, complete

KEY = manifest_key(b"\x07" * 32)
FOREIGN = "was not written by this cluster or was modified"


def coordinator(root: Path, key: bytes = KEY, **options: Any) -> tuple[CheckpointCoordinator, View]:
    return checkpointing.coordinator(root, key, **options)


def edit(path: Path, change: Any, key: bytes | None = None) -> None:
    """Apply ``change`` to the manifest at ``path``; re-sign with ``key``, or keep the old
    signature."""
    body = orjson.loads((path / MANIFEST_NAME).read_bytes())
    change(body)
    (path / MANIFEST_NAME).write_bytes(
        orjson.dumps(body if key is None else sign_manifest(body, key))
    )


def escape(body: dict[str, Any]) -> None:
    body["metadata"]["tasks"]["p#0"]["dir"] = "../../.."


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda p: edit(p, escape), f"manifest {FOREIGN} (bad signature)"),
        (
            lambda p: edit(p, escape, manifest_key(b"\x08" * 32)),
            f"manifest {FOREIGN} (bad signature)",
        ),
        (
            lambda p: edit(p, escape, KEY),
            "task p#0 directory '../../..' has a '..', '.' or empty component",
        ),
    ],
    ids=["old-signature", "other-secret", "signed-but-escaping"],
)
def test_recovery_skips_a_tampered_checkpoint(tmp_path: Path, tamper: Any, reason: str) -> None:
    async def run() -> None:
        cc, view = coordinator(tmp_path / "chk")
        await complete(cc, view, 1)
        await complete(cc, view, 2)
        tamper(tmp_path / "chk" / "chk-2")
        p0 = TaskId("p", 0)
        plans = cc.restore_plans({p0})
        assert plans[p0]["checkpoint_id"] == 1
        assert plans[p0]["writers"] == [1]  # task.json of checkpoint 1
        assert cc.restored_from is not None
        assert cc.restored_from["checkpoint_id"] == 1
        assert cc.restored_from["skipped"] == [f"checkpoint 2: {reason}"]

    asyncio.run(run())


def test_a_tampered_or_foreign_savepoint_is_refused(tmp_path: Path) -> None:
    async def run() -> None:
        cc, view = coordinator(tmp_path / "chk")
        await complete(cc, view, 1)
        good = tmp_path / "sp" / "good"
        cc.storage.savepoint(cc.storage.get(1), good)
        cc.check_savepoint(good)
        assert cc.load_savepoint(good).kind == "savepoint"
        tampered = tmp_path / "sp" / "tampered"
        shutil.copytree(good, tampered)
        edit(tampered, escape)
        with pytest.raises(ConfigError) as err:
            cc.check_savepoint(tampered)
        assert str(err.value) == (
            f"cannot restore from savepoint {tampered}: manifest {FOREIGN} (bad signature); "
            "use a savepoint this cluster wrote"
        )
        other, _ = coordinator(tmp_path / "other", key=manifest_key(b"\x09" * 32))
        with pytest.raises(ConfigError, match="bad signature"):
            other.check_savepoint(good)
        with pytest.raises(ConfigError) as err:
            cc.check_savepoint(tmp_path / "sp")
        assert str(err.value) == (
            f"cannot restore from savepoint {tmp_path / 'sp'}: manifest {MANIFEST_NAME} is "
            "missing; use a savepoint this cluster wrote"
        )

    asyncio.run(run())


def test_a_task_acking_a_directory_other_than_its_own_aborts_the_checkpoint(
    tmp_path: Path,
) -> None:
    async def run() -> None:
        cc, view = coordinator(tmp_path / "chk")
        await cc.trigger()
        for task in view.tasks[1:]:
            ack(cc, task, 1)
        first = view.tasks[0]
        bad = str(cc.root / "pending-1" / "tasks" / ".." / ".." / "..")
        cc.on_ack(k.CheckpointAck("j", str(first), 0, 1, {"dir": bad}))
        assert cc.completed == 0 and cc.aborted == 1
        rel = f"tasks/{str(first).replace('#', '%23')}"
        assert cc.abort_reasons == [f"1: {first} acked a snapshot outside {rel}: {bad}"]

    asyncio.run(run())


def test_a_savepoint_into_an_existing_directory_is_refused_at_once(tmp_path: Path) -> None:
    async def run() -> None:
        cc, _view = coordinator(tmp_path / "chk")
        (tmp_path / "taken").mkdir()
        with pytest.raises(ConfigError) as err:
            await cc.savepoint(tmp_path / "taken")
        assert str(err.value) == (
            f"savepoint directory {tmp_path / 'taken'} already exists: choose a new one"
        )
        assert cc.pending is None

    asyncio.run(run())


def test_a_job_pointed_at_another_jobs_directory_neither_restores_nor_deletes_its_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both opened as the job master opens them: under the state roots of the
    environment, manifests signed with the cluster secret's key."""
    monkeypatch.setenv(STATE_ROOTS_ENV, str(tmp_path / "state"))
    monkeypatch.setenv("STREAMER_CLUSTER_SECRET", "07" * 32)

    async def run() -> None:
        victim, view = checkpointing.opened("job-a", {})  # checkpoint_dir: the job id
        for checkpoint_id in (1, 2, 3):
            await complete(victim, view, checkpoint_id)
        intruder, view = checkpointing.opened("job-b", {"checkpoint_dir": "job-a"})
        assert intruder.root == victim.root == tmp_path / "state" / "job-a"
        p0 = TaskId("p", 0)
        assert intruder.restore_plans({p0}) == {p0: {}}
        _, skipped = intruder.latest()
        assert skipped == [
            f"checkpoint {n}: manifest was signed for job 'job-a', not 'job-b'" for n in (3, 2, 1)
        ]
        assert intruder.next_id == 4  # after the ids in the directory
        for checkpoint_id in (4, 5, 6, 7):  # retains 3: deletes only its own 4
            await complete(intruder, view, checkpoint_id)
        assert intruder.storage.list() == [1, 2, 3, 5, 6, 7]
        assert victim.restore_plans({p0})[p0]["writers"] == [3]
        manifest = orjson.loads((victim.root / "chk-5" / MANIFEST_NAME).read_bytes())
        assert (manifest["job_id"], manifest["path"]) == ("job-b", "job-a/chk-5")

    asyncio.run(run())


def test_a_savepoint_copied_elsewhere_is_refused_there(tmp_path: Path) -> None:
    async def run() -> None:
        roots = StateRoots.of([tmp_path / "state"])
        cc, view = coordinator(tmp_path / "state" / "job-a", job_id="job-a", roots=roots)
        await complete(cc, view, 1)
        good = tmp_path / "state" / "sp" / "good"
        cc.storage.savepoint(cc.storage.get(1), good)
        cc.check_savepoint(good)
        assert cc.load_savepoint(good).kind == "savepoint"
        moved = tmp_path / "state" / "sp" / "moved"
        shutil.copytree(good, moved)
        why = "manifest was signed for directory 'sp/good', not 'sp/moved'"
        with pytest.raises(ConfigError) as err:
            cc.check_savepoint(moved)
        assert str(err.value) == (
            f"cannot restore from savepoint {moved}: {why} (it is used only where it was written)"
        )
        with pytest.raises(CorruptCheckpointError) as corrupt:
            cc.load_savepoint(moved)
        assert corrupt.value.reason == f"{why} (it is used only where it was written)"

    asyncio.run(run())
