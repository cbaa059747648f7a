"""Checkpoint and savepoint storage: directories with a checksummed manifest.

Layout under a `CheckpointStorage` root (local filesystem now; the interface
is directories and files so an object store can replace it later)::

    <root>/chk-<id>/_metadata.json          the manifest (written last)
    <root>/chk-<id>/<name>.json             `PendingCheckpoint.write_json`
    <root>/chk-<id>/tasks/<task>/...        what task <task> wrote (its keyed
                                            state snapshot, its own json)
    <root>/pending-<id>/                    checkpoint <id> being written
    <root>/.trash-<id>-<random>/            a checkpoint being deleted

``<task>`` is the task id (``"count#1"``) percent-encoded
(`urllib.parse.quote` with no safe characters). A checkpoint is written into
``pending-<id>`` (a name task processes can compute: `pending_dir`) and
becomes ``chk-<id>`` by one atomic rename after its manifest is on disk, so
a ``chk-*`` directory is never half-written; deletion renames it away first.
Only ``chk-<id>`` directories are ever listed. Files may be laid out freely
inside the pending directory: every regular file is recorded in the manifest.

A savepoint has the same layout in a directory the user chooses (written as
a hidden sibling, renamed into place), with ``"kind": "savepoint"``: either
written directly (`CheckpointStorage.begin_savepoint`) or copied from a
completed checkpoint (`CheckpointStorage.savepoint`).

The manifest (``_metadata.json``, orjson; nothing is ever pickled)::

    {"format": 1, "kind": "checkpoint" | "savepoint", "checkpoint_id": 7,
     "created_ms": ..., "hash": "sha256" | null,
     "tasks": {"count#1": {"dir": "tasks/count%231"}},   # dirs found under tasks/
     "metadata": {...},                      # complete()'s argument, verbatim
     "files": {"tasks/count%231/keyed/000009.sst": {"size": 1234, "sha256": "..."}},
     "manifest_sha256": "..."}               # over the manifest without this field

Validation (`CheckpointStorage.latest`, `load`) checks the manifest's own
checksum, then that every listed file exists with its size and, when hashing
is on, its sha256. Hashing reads every byte of the checkpoint once when it
is written and once when it is validated (sha256 runs at roughly 1-2 GB/s
per core); turn it off (``hash_files=False`` / ``verify_hashes=False``) for
large state, keeping the size checks.

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

Threading and processes: one `CheckpointStorage` per coordinator; its
methods are not thread-safe. Tasks (other processes) only write their own
directory under ``pending-<id>/tasks/``, through `TaskSnapshotWriter`; they
never complete, list or delete.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, NamedTuple, Protocol
from urllib.parse import quote, unquote

import orjson

from streamer.state.errors import CorruptCheckpointError, StateError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "PendingCheckpoint",
    "RecoveryChoice",
    "SkippedCheckpoint",
    "TaskSnapshot",
    "TaskSnapshotError",
    "TaskSnapshotWriter",
    "pending_dir",
]

log = logging.getLogger(__name__)

MANIFEST_NAME: Final = "_metadata.json"
MANIFEST_FORMAT: Final = 1
TASKS_DIR: Final = "tasks"
SnapshotKind = Literal["checkpoint", "savepoint"]

_CHK_RE: Final = re.compile(r"^chk-(\d+)$")
_HASH_CHUNK: Final = 1 << 20


def pending_dir(root: str | os.PathLike[str], checkpoint_id: int) -> Path:
    """Where checkpoint ``checkpoint_id`` is written before it completes."""
    return Path(root) / f"pending-{checkpoint_id}"


def _task_dir_name(task_id: str) -> str:
    if not isinstance(task_id, str) or not task_id or task_id in (".", ".."):
        raise StateError(f"bad task id {task_id!r}")
    return quote(task_id, safe="")


def _check_file_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..", MANIFEST_NAME)
        or "/" in name
        or os.sep in name
        or "\0" in name
    ):
        raise StateError(f"bad file name {name!r}: a plain file name other than {MANIFEST_NAME}")


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
        return dst
    except OSError:
        return shutil.copy2(src, dst)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as src:
        while chunk := src.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _walk_files(root: Path) -> Iterator[tuple[str, Path]]:
    """``(relative posix path, path)`` of every regular file under ``root``, sorted."""
    found: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if path.is_file():
                found.append((path.relative_to(root).as_posix(), path))
    found.sort()
    return iter(found)


def _manifest_digest(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _describe_file(rel: str) -> str:
    """``"task count#1 file keyed/000009.sst"`` for a task file, else ``"file X"``."""
    parts = rel.split("/", 2)
    if len(parts) == 3 and parts[0] == TASKS_DIR:
        return f"task {unquote(parts[1])} file {parts[2]}"
    return f"file {rel}"


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
        path = self.path / TASKS_DIR / _task_dir_name(task_id)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def write_json(self, name: str, obj: Any, *, task_id: str | None = None) -> Path:
        """Write ``obj`` as orjson to ``name`` (in the task's directory if given); fsynced."""
        _check_file_name(name)
        where = self.task_dir(task_id) if task_id is not None else self.path
        path = where / name
        _write_file(path, orjson.dumps(obj, option=orjson.OPT_SORT_KEYS))
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
        name = _task_dir_name(task_id)
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
        _check_file_name(name)
        try:
            meta = backend.snapshot(self.path / name)
        except Exception as exc:  # RocksDB raises plain Exception
            raise self._error(exc) from exc
        self._keyed = meta
        return meta

    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as orjson to ``name`` in the task's directory (fsynced)."""
        self._check_open()
        _check_file_name(name)
        try:
            data = orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise StateError(
                f"task {self.task_id}: {name} is not JSON-serializable: {exc}"
            ) from None
        try:
            _write_file(self.path / name, data)
        except OSError as exc:
            raise self._error(exc) from exc
        return self.final_path / name

    def commit(self) -> TaskSnapshot:
        """Publish the part: one rename to ``pending-<id>/tasks/<task>/``."""
        self._check_open()
        try:
            if self._pending_replaced():
                raise FileNotFoundError(f"{self.pending.path} was removed")
            _fsync_dir(self.path)
            os.rename(self.path, self.final_path)
            _fsync_dir(self._tasks_root)
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


@dataclass(frozen=True)
class CompletedCheckpoint:
    """A validated (or at least listed) completed checkpoint or savepoint."""

    checkpoint_id: int
    path: Path
    kind: SnapshotKind
    created_ms: int
    tasks: dict[str, dict[str, Any]]
    """``{task_id: {"dir": relative dir}}`` for each directory under ``tasks/``."""
    metadata: dict[str, Any]
    """Exactly what was passed to `CheckpointStorage.complete`."""
    manifest: dict[str, Any] = field(repr=False)

    def task_ids(self) -> builtins.list[str]:
        """Tasks that wrote a ``tasks/`` directory or have ``metadata["tasks"]`` entries."""
        meta = self.metadata.get("tasks")
        return sorted(set(self.tasks) | (set(meta) if isinstance(meta, dict) else set()))

    def task_dir(self, task_id: str) -> Path | None:
        """The directory task ``task_id`` wrote, or None when it wrote no files."""
        entry = self.tasks.get(task_id)
        rel = entry.get("dir") if entry is not None else None
        return self.path / rel if isinstance(rel, str) else None

    def task_metadata(self, task_id: str) -> dict[str, Any]:
        """``metadata["tasks"][task_id]`` (``{}`` if none)."""
        tasks = self.metadata.get("tasks")
        meta = tasks.get(task_id) if isinstance(tasks, dict) else None
        return dict(meta) if isinstance(meta, dict) else {}

    def read_json(self, name: str, *, task_id: str | None = None) -> Any:
        """Load a json file written with `PendingCheckpoint.write_json`."""
        _check_file_name(name)
        where = self.path if task_id is None else self.path / TASKS_DIR / _task_dir_name(task_id)
        return orjson.loads((where / name).read_bytes())


@dataclass(frozen=True)
class SkippedCheckpoint:
    """A completed checkpoint recovery could not use, and why (orjson-serializable)."""

    checkpoint_id: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"checkpoint {self.checkpoint_id} is corrupt ({self.reason})"


class RecoveryChoice(NamedTuple):
    """The checkpoint to recover from (None: none usable) and the newer ones skipped.

    A named tuple: ``checkpoint, skipped = storage.latest()`` works.
    """

    checkpoint: CompletedCheckpoint | None
    skipped: builtins.list[SkippedCheckpoint]

    def describe(self) -> str:
        """E.g. ``"recovery used checkpoint 6: checkpoint 7 is corrupt (task count#1 ...)"``."""
        why = "; ".join(str(s) for s in self.skipped)
        if self.checkpoint is None:
            return f"no usable checkpoint: {why}" if why else "no completed checkpoint"
        used = f"recovery used checkpoint {self.checkpoint.checkpoint_id}"
        return f"{used}: {why}" if why else used


def _build_manifest(
    pending: PendingCheckpoint, metadata: Mapping[str, Any], hash_files: bool
) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise StateError(f"checkpoint metadata must be a mapping, got {type(metadata).__name__}")
    tasks: dict[str, dict[str, Any]] = {}
    tasks_root = pending.path / TASKS_DIR
    if tasks_root.is_dir():
        for entry in sorted(tasks_root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):  # dot: a writer's temp
                tasks[unquote(entry.name)] = {"dir": f"{TASKS_DIR}/{entry.name}"}
    files: dict[str, dict[str, Any]] = {}
    for rel, path in _walk_files(pending.path):
        if rel == MANIFEST_NAME:
            continue
        info: dict[str, Any] = {"size": path.stat().st_size}
        if hash_files:
            info["sha256"] = _sha256(path)
        files[rel] = info
    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "kind": pending.kind,
        "checkpoint_id": pending.checkpoint_id,
        "created_ms": time.time_ns() // 1_000_000,
        "hash": "sha256" if hash_files else None,
        "tasks": tasks,
        "metadata": dict(metadata),
        "files": files,
    }
    try:
        body["manifest_sha256"] = _manifest_digest(body)
    except orjson.JSONEncodeError as exc:
        raise StateError(f"checkpoint metadata is not JSON-serializable: {exc}") from None
    return body


def _complete(
    pending: PendingCheckpoint, metadata: Mapping[str, Any], hash_files: bool
) -> CompletedCheckpoint:
    if not pending.path.is_dir():
        raise StateError(f"pending checkpoint {pending.path} does not exist (aborted?)")
    if pending.final_path.exists():
        raise StateError(f"cannot complete checkpoint: {pending.final_path} already exists")
    manifest = _build_manifest(pending, metadata, hash_files)
    raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    _write_file(pending.path / MANIFEST_NAME, raw)
    _fsync_dir(pending.path)
    os.rename(pending.path, pending.final_path)
    _fsync_dir(pending.final_path.parent)
    return _from_manifest(pending.final_path, manifest)


def _from_manifest(path: Path, manifest: dict[str, Any]) -> CompletedCheckpoint:
    return CompletedCheckpoint(
        checkpoint_id=manifest["checkpoint_id"],
        path=path,
        kind=manifest["kind"],
        created_ms=manifest["created_ms"],
        tasks=manifest["tasks"],
        metadata=manifest["metadata"],
        manifest=manifest,
    )


def _validate(path: Path, *, verify_hashes: bool) -> CompletedCheckpoint:
    """Load and check ``path``; `CorruptCheckpointError` with the first problem found."""
    manifest_path = path / MANIFEST_NAME
    try:
        raw = manifest_path.read_bytes()
    except FileNotFoundError:
        raise CorruptCheckpointError(path, f"manifest {MANIFEST_NAME} is missing") from None
    except OSError as exc:
        raise CorruptCheckpointError(path, f"manifest unreadable: {exc}") from None
    try:
        manifest = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpointError(path, f"manifest is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise CorruptCheckpointError(path, "manifest is not a JSON object")
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    if manifest.get("manifest_sha256") != _manifest_digest(body):
        raise CorruptCheckpointError(path, "manifest checksum mismatch")
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptCheckpointError(
            path, f"unsupported manifest format {manifest.get('format')!r}"
        )
    shape = {
        "kind": str,
        "checkpoint_id": int,
        "created_ms": int,
        "tasks": dict,
        "metadata": dict,
        "files": dict,
    }
    for key, typ in shape.items():
        if not isinstance(manifest.get(key), typ):
            raise CorruptCheckpointError(path, f"manifest field {key!r} is missing or malformed")
    if manifest["kind"] not in ("checkpoint", "savepoint"):
        raise CorruptCheckpointError(path, f"unknown kind {manifest['kind']!r}")
    root = path.resolve()
    for rel, info in manifest["files"].items():
        what = _describe_file(rel)
        file_path = (path / rel).resolve()
        if not file_path.is_relative_to(root) or not isinstance(info, dict):
            raise CorruptCheckpointError(path, f"{what}: bad manifest entry")
        try:
            size = file_path.stat().st_size
        except FileNotFoundError:
            raise CorruptCheckpointError(path, f"{what}: missing") from None
        if size != info.get("size"):
            raise CorruptCheckpointError(
                path, f"{what}: size mismatch (expected {info.get('size')} bytes, found {size})"
            )
        expected = info.get("sha256")
        if verify_hashes and expected is not None and _sha256(file_path) != expected:
            raise CorruptCheckpointError(path, f"{what}: checksum mismatch")
    return _from_manifest(path, manifest)


class CheckpointStorage:
    """Completed checkpoints under ``root``: begin, complete atomically, list, retain, recover.

    ``hash_files`` (default on) records a sha256 of every file at completion;
    validation then checks it (see the module docstring for the cost).
    """

    def __init__(self, root: str | os.PathLike[str], *, hash_files: bool = True) -> None:
        self.root = Path(root)
        self.hash_files = hash_files
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"CheckpointStorage({str(self.root)!r})"

    # ------------------------------------------------------------------ writing

    def checkpoint_path(self, checkpoint_id: int) -> Path:
        """Where completed checkpoint ``checkpoint_id`` lives."""
        return self.root / f"chk-{checkpoint_id}"

    def begin(self, checkpoint_id: int) -> PendingCheckpoint:
        """Start checkpoint ``checkpoint_id`` in a fresh `pending_dir` under the root.

        A leftover pending directory of the same id (a crashed earlier
        attempt) is discarded first.
        """
        if not isinstance(checkpoint_id, int) or checkpoint_id < 0:
            raise StateError(f"checkpoint id must be a non-negative int, got {checkpoint_id!r}")
        final = self.checkpoint_path(checkpoint_id)
        if final.exists():
            raise StateError(f"checkpoint {checkpoint_id} already exists at {final}")
        path = pending_dir(self.root, checkpoint_id)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return PendingCheckpoint(checkpoint_id, path, final, "checkpoint")

    def begin_savepoint(
        self, path: str | os.PathLike[str], checkpoint_id: int
    ) -> PendingCheckpoint:
        """Start a savepoint that will live at ``path`` (must not exist).

        Written to a hidden sibling of ``path`` and renamed into place by
        `complete`; ``checkpoint_id`` is the id of the checkpoint mechanism
        run that produced it.
        """
        final = Path(path).absolute()
        if final.exists():
            raise StateError(f"savepoint target {final} already exists")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.pending-{uuid.uuid4().hex[:12]}"
        tmp.mkdir()
        return PendingCheckpoint(checkpoint_id, tmp, final, "savepoint")

    def complete(
        self, pending: PendingCheckpoint, metadata: Mapping[str, Any]
    ) -> CompletedCheckpoint:
        """Write the manifest, then atomically publish the checkpoint (or savepoint).

        ``metadata`` is any JSON-serializable mapping; its optional ``"tasks"``
        entry maps task ids to per-task metadata (e.g. what
        `KeyedStateBackend.snapshot` returned, source offsets) and lands in
        the manifest's ``tasks``; the rest lands in ``metadata``.
        """
        return _complete(pending, metadata, self.hash_files)

    def savepoint(
        self, checkpoint: CompletedCheckpoint, path: str | os.PathLike[str]
    ) -> CompletedCheckpoint:
        """Copy a completed checkpoint to a savepoint at ``path`` (must not exist).

        Files are hard-linked when on the same filesystem (completed files are
        never modified; RocksDB SSTs are immutable), else copied. The manifest
        is rewritten with ``"kind": "savepoint"``; ids, metadata and file
        checksums are kept, so `load` validates it like any savepoint.
        """
        final = Path(path).absolute()
        if final.exists():
            raise StateError(f"savepoint target {final} already exists")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.pending-{uuid.uuid4().hex[:12]}"
        try:
            shutil.copytree(checkpoint.path, tmp, copy_function=_link_or_copy)
            body = {k: v for k, v in checkpoint.manifest.items() if k != "manifest_sha256"}
            body["kind"] = "savepoint"
            body["manifest_sha256"] = _manifest_digest(body)
            manifest_path = tmp / MANIFEST_NAME
            manifest_path.unlink()  # may be a hard link to the checkpoint's manifest
            _write_file(
                manifest_path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
            )
            _fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(final.parent)
        return _from_manifest(final, body)

    def abort(self, pending: PendingCheckpoint) -> None:
        """Discard a pending checkpoint (idempotent)."""
        shutil.rmtree(pending.path, ignore_errors=True)

    def cleanup_pending(self) -> int:
        """Remove leftovers of pending/deleted checkpoints (call when no checkpoint runs)."""
        removed = 0
        for entry in self.root.iterdir():
            if entry.name.startswith(("pending-", ".trash-")) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        return removed

    # ------------------------------------------------------------------ reading

    def list(self) -> builtins.list[int]:
        """Ids of the completed checkpoints (``chk-<id>`` directories), ascending.

        Listing does not validate: use `get` or `latest` for that.
        """
        ids = []
        for entry in self.root.iterdir():
            match = _CHK_RE.match(entry.name)
            if match and entry.is_dir():
                ids.append(int(match.group(1)))
        return sorted(ids)

    def get(self, checkpoint_id: int, *, verify_hashes: bool = True) -> CompletedCheckpoint:
        """Validate and return checkpoint ``checkpoint_id`` (`CorruptCheckpointError`)."""
        path = self.checkpoint_path(checkpoint_id)
        if not path.is_dir():
            raise StateError(f"no completed checkpoint {checkpoint_id} in {self.root}")
        checkpoint = _validate(path, verify_hashes=verify_hashes)
        if checkpoint.checkpoint_id != checkpoint_id or checkpoint.kind != "checkpoint":
            raise CorruptCheckpointError(
                path,
                f"manifest describes {checkpoint.kind} {checkpoint.checkpoint_id}, "
                f"expected checkpoint {checkpoint_id}",
            )
        return checkpoint

    def latest(self, *, verify_hashes: bool = True) -> RecoveryChoice:
        """The newest checkpoint that validates, and every newer one skipped with the reason.

        ``checkpoint, skipped = storage.latest()``; ``checkpoint`` is None when
        no checkpoint is usable. Each skipped checkpoint is logged (warning),
        and `RecoveryChoice.describe` gives the one-line summary.
        """
        skipped: builtins.list[SkippedCheckpoint] = []
        found: CompletedCheckpoint | None = None
        for checkpoint_id in reversed(self.list()):
            try:
                found = self.get(checkpoint_id, verify_hashes=verify_hashes)
                break
            except CorruptCheckpointError as exc:
                skipped.append(SkippedCheckpoint(checkpoint_id, str(exc.path), exc.reason))
            except StateError as exc:  # vanished meanwhile (retained away)
                path = str(self.checkpoint_path(checkpoint_id))
                skipped.append(SkippedCheckpoint(checkpoint_id, path, str(exc)))
        choice = RecoveryChoice(found, skipped)
        for entry in skipped:
            log.warning("%s: %s", entry, entry.path)
        if skipped:
            log.warning("%s", choice.describe())
        return choice

    @staticmethod
    def load(path: str | os.PathLike[str], *, verify_hashes: bool = True) -> CompletedCheckpoint:
        """Validate and return the savepoint (or checkpoint) directory at ``path``."""
        where = Path(path)
        if not where.is_dir():
            raise StateError(f"no savepoint or checkpoint directory at {where}")
        return _validate(where, verify_hashes=verify_hashes)

    # ------------------------------------------------------------------ retention

    def delete(self, checkpoint_id: int) -> None:
        """Delete a completed checkpoint (renamed away first, so never seen half-deleted)."""
        path = self.checkpoint_path(checkpoint_id)
        if not path.is_dir():
            return
        trash = self.root / f".trash-{checkpoint_id}-{uuid.uuid4().hex[:12]}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def retain(self, n: int) -> builtins.list[int]:
        """Keep the ``n`` newest completed checkpoints (by id), delete the rest; return deleted.

        Counts checkpoints without validating them: a corrupt newest one
        still counts, so keep ``n >= 2`` if recovery should have a fallback.
        """
        if not isinstance(n, int) or n < 1:
            raise StateError(f"retain needs n >= 1, got {n!r}")
        ids = self.list()
        doomed = ids[:-n]
        for checkpoint_id in doomed:
            self.delete(checkpoint_id)
        return doomed
