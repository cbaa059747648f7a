"""streamer.state's module split (issue 9): old import paths, patch points, sizes, no cycles."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from unittest import mock

import pytest

import streamer.state.keyed as keyed_module
from streamer.state import KeyedStateBackend, manifest, snapshot_writer, storage
from streamer.state.access import KeyedAccess
from streamer.state.handles import StateAccess

STATE = Path(__file__).resolve().parents[2] / "streamer" / "state"


@pytest.mark.parametrize(
    ("name", "home"),
    [
        ("MANIFEST_FORMAT", manifest),
        ("MANIFEST_NAME", manifest),
        ("TASKS_DIR", manifest),
        ("SnapshotKind", manifest),
        ("pending_dir", manifest),
        ("CompletedCheckpoint", manifest),
        ("PendingCheckpoint", snapshot_writer),
        ("TaskSnapshot", snapshot_writer),
        ("TaskSnapshotError", snapshot_writer),
        ("TaskSnapshotWriter", snapshot_writer),
    ],
)
def test_storage_reexports_the_split_out_names(name: str, home: object) -> None:
    assert name in storage.__all__
    assert getattr(storage, name) is getattr(home, name)


def test_keyed_access_satisfies_the_handles_protocol() -> None:
    access: StateAccess = KeyedAccess(mock.Mock(), 8, range(8), lambda: 0)  # mypy checks this
    assert access.expiry(5) == 5


def test_restore_copies_through_keyed_link_or_copy(tmp_path: Path) -> None:
    """bench/checkpoint_bench.py patches ``streamer.state.keyed.link_or_copy``."""
    with KeyedStateBackend.open(tmp_path / "db", max_parallelism=4, key_groups=range(4)) as b:
        b.set_current_key("k")
        b.value_state("v").update(1)
        meta = b.snapshot(tmp_path / "snap")
    copied: list[str] = []

    def copy_only(src: str, dst: str) -> object:
        copied.append(src)
        return shutil.copy2(src, dst)

    with mock.patch.object(keyed_module, "link_or_copy", copy_only):
        restored = KeyedStateBackend.restore(
            tmp_path / "r", [(tmp_path / "snap", meta)], max_parallelism=4, key_groups=range(4)
        )
    with restored:
        restored.set_current_key("k")
        assert restored.value_state("v").value() == 1
    assert copied


def test_state_modules_and_classes_stay_small() -> None:
    for path in sorted(STATE.glob("*.py")):
        lines = path.read_text().splitlines()
        assert len(lines) < 500, f"{path.name}: {len(lines)} lines"
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.ClassDef):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                assert size <= 250, f"{path.name}: class {node.name} is {size} lines"
