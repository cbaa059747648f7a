"""Writing a pending checkpoint: `PendingCheckpoint` and a task's `TaskSnapshotWriter`.

Task snapshots (`TaskSnapshotWriter`, from `PendingCheckpoint.task_writer`):
a task process writes its part of checkpoint ``<id>`` (``task.json``, the
``keyed/`` RocksDB checkpoint, ``sink.json``) into a private temporary
directory ``pending-<id>/tasks/.<task>.tmp-<random>/`` and publishes it with
one rename to ``pending-<id>/tasks/<task>/``: a task directory is there whole
or not at all. The writer never creates ``pending-<id>`` itself: when the
checkpoint was aborted and its directory removed, writing fails with
`TaskSnapshotError` and the partial files are removed (the task declines the
checkpoint instead of dying). Hidden (dot) entries under ``tasks/`` are
temporary and never listed as tasks in a manifest.

Processes: tasks (other processes than the coordinator's `CheckpointStorage`)
only write their own directory under ``pending-<id>/tasks/``, through
`TaskSnapshotWriter`; they never complete, list or delete. The directory
layout is described in `streamer.state.storage`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

import orjson

from streamer.state._files import fsync_dir, write_file
from streamer.state.errors import StateError
from streamer.state.manifest import (
    TASKS_DIR,
    SnapshotKind,
    check_file_name,
    pending_dir,
    task_dir_name,
)

__all__ = ["PendingCheckpoint", "TaskSnapshot", "TaskSnapshotError", "TaskSnapshotWriter"]


@dataclass(frozen=True)
class PendingCheckpoint:
    """A checkpoint or savepoint being written; invisible until completed.

    Plain data: a task process rebuilds it with `attach` and writes its part
    with `task_writer` (atomic, never recreating an aborted checkpoint).
    """

    checkpoint_id: int
    path: Path
    """The temporary directory everything is written into."""
    final_path: Path
    """Where `CheckpointStorage.complete` moves it."""
    kind: SnapshotKind = "checkpoint"

    @classmethod
    def attach(cls, root: str | os.PathLike[str], checkpoint_id: int) -> PendingCheckpoint:
        """Pending checkpoint ``checkpoint_id`` of storage ``root``, from a task process."""
        root = Path(root)
        return cls(checkpoint_id, pending_dir(root, checkpoint_id), root / f"chk-{checkpoint_id}")

    def task_dir(self, task_id: str) -> Path:
        """The (created) directory of task ``task_id``'s files, written in place.

        Not atomic and creates missing parents: task processes use `task_writer`.
        """
        path = self.path / TASKS_DIR / task_dir_name(task_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, obj: Any, *, task_id: str | None = None) -> Path:
        """Write ``obj`` as orjson to ``name`` (in the task's directory if given); fsynced."""
        check_file_name(name)
        where = self.task_dir(task_id) if task_id is not None else self.path
        path = where / name
        write_file(path, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
        return path

    def task_writer(self, task_id: str) -> TaskSnapshotWriter:
        """A writer for task ``task_id``'s part, published atomically (see `TaskSnapshotWriter`).

        Raises `TaskSnapshotError` when this pending checkpoint's directory is gone.
        """
        return TaskSnapshotWriter(self, task_id)


class TaskSnapshotError(StateError):
    """A task's snapshot could not be written: its checkpoint was aborted (the pending
    directory is gone) or the filesystem or RocksDB failed. ``reason`` is one line."""

    def __init__(self, task_id: str, checkpoint_id: int, reason: str) -> None:
        super().__init__(f"snapshot of task {task_id} for checkpoint {checkpoint_id}: {reason}")
        self.task_id = task_id
        self.checkpoint_id = checkpoint_id
        self.reason = reason


class _Snapshottable(Protocol):
    def snapshot(self, target_dir: str | os.PathLike[str]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TaskSnapshot:
    """A task's published part of a pending checkpoint."""

    task_id: str
    checkpoint_id: int
    path: Path
    """``pending-<id>/tasks/<task>/``."""
    keyed: dict[str, Any] | None
    """What the keyed state backend's ``snapshot`` returned (None: no keyed state)."""


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


class TaskSnapshotWriter:
    """Writes one task's part of a pending checkpoint, published by one rename.

    ::

        with pending.task_writer("count#1") as part:
            keyed = part.write_keyed(backend)        # keyed/ (RocksDB checkpoint)
            part.write_json("task.json", {...})
            snapshot = part.commit()                 # -> pending-<id>/tasks/count%231/

    Everything goes into a private temporary directory next to the final one.
    Any failure (the pending directory removed because the checkpoint was
    aborted, an ``OSError``, a RocksDB error) raises `TaskSnapshotError`;
    leaving the ``with`` block without `commit` (or with an exception) removes
    the temporary directory, and anything this writer had to recreate. The
    pending directory is never created here: the writer holds it open, so a
    removed one (link count 0) or a new one made in its place (RocksDB makes
    missing parents; a held inode cannot be reused) is detected and the part
    refused. Use it as a context manager (or call `discard`): it holds a file
    descriptor until `commit` or `discard`.

    Threading: one thread; blocking file I/O (call it where blocking is fine).
    """

    def __init__(self, pending: PendingCheckpoint, task_id: str) -> None:
        self.pending = pending
        self.task_id = task_id
        name = task_dir_name(task_id)
        self._tasks_root = pending.path / TASKS_DIR
        self.final_path = self._tasks_root / name
        self.path = self._tasks_root / f".{name}.tmp-{uuid.uuid4().hex[:12]}"
        """The private temporary directory (valid until `commit` or `discard`)."""
        self._keyed: dict[str, Any] | None = None
        self._done = False
        self._pending_fd: int | None = None
        try:
            # held open, the pending directory's inode cannot be reused by a new one
            self._pending_fd = os.open(pending.path, os.O_RDONLY | os.O_DIRECTORY)
            self._tasks_root.mkdir(exist_ok=True)  # never the pending directory itself
            self.path.mkdir()
        except OSError as exc:
            self._done = True
            self._release()
            raise self._error(exc) from None

    def _error(self, exc: BaseException) -> TaskSnapshotError:
        if isinstance(exc, TaskSnapshotError):
            return exc
        if not self.pending.path.is_dir() or self._pending_replaced():
            reason = f"pending checkpoint directory {self.pending.path} is gone (aborted?)"
        else:
            reason = _one_line(exc)
        return TaskSnapshotError(self.task_id, self.pending.checkpoint_id, reason)

    def _check_open(self) -> None:
        if self._done:
            raise TaskSnapshotError(
                self.task_id, self.pending.checkpoint_id, "writer already committed or discarded"
            )

    def write_keyed(self, backend: _Snapshottable, name: str = "keyed") -> dict[str, Any]:
        """Snapshot ``backend`` (a `KeyedStateBackend`) into ``<name>/``; returns its metadata."""
        self._check_open()
        check_file_name(name)
        try:
            meta = backend.snapshot(self.path / name)
        except Exception as exc:  # RocksDB raises plain Exception
            raise self._error(exc) from exc
        self._keyed = meta
        return meta

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as orjson to ``name`` in the task's directory (fsynced)."""
        self._check_open()
        check_file_name(name)
        try:
            data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise StateError(
                f"task {self.task_id}: {name} is not JSON-serializable: {exc}"
            ) from None
        try:
            write_file(self.path / name, data)
        except OSError as exc:
            raise self._error(exc) from exc
        return self.final_path / name

    def commit(self) -> TaskSnapshot:
        """Publish the part: one rename to ``pending-<id>/tasks/<task>/``."""
        self._check_open()
        try:
            if self._pending_replaced():
                raise FileNotFoundError(f"{self.pending.path} was removed")
            fsync_dir(self.path)
            os.rename(self.path, self.final_path)
            fsync_dir(self._tasks_root)
        except OSError as exc:
            raise self._error(exc) from None
        self._done = True
        self._release()
        return TaskSnapshot(self.task_id, self.pending.checkpoint_id, self.final_path, self._keyed)

    def discard(self) -> None:
        """Remove the partial files, and the pending directories if this writer recreated
        them (idempotent; never raises)."""
        if self._done and self._pending_fd is None:
            return
        self._done = True
        shutil.rmtree(self.path, ignore_errors=True)
        if self._pending_replaced():  # made again under a removed checkpoint: remove again
            for empty in (self._tasks_root, self.pending.path):
                with contextlib.suppress(OSError):
                    empty.rmdir()
        self._release()

    def _pending_replaced(self) -> bool:
        """Whether the pending directory was removed (and maybe made again) since we began."""
        if self._pending_fd is None:
            return False
        held = os.fstat(self._pending_fd)
        if held.st_nlink == 0:
            return True  # removed
        try:
            now = os.stat(self.pending.path)
        except OSError:
            return True
        return (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino)

    def _release(self) -> None:
        if self._pending_fd is not None:
            os.close(self._pending_fd)
            self._pending_fd = None

    def __enter__(self) -> TaskSnapshotWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or not self._done:
            self.discard()
