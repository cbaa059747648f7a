"""Checkpoint and savepoint storage: directories with a signed manifest.

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

The manifest, its format and what validation checks (and costs) are
described in `streamer.state.manifest`; how a task writes its part of a
pending checkpoint in `streamer.state.snapshot_writer`. This module
re-exports their public names, so ``from streamer.state.storage import ...``
keeps working for all of them.

Threading and processes: one `CheckpointStorage` per coordinator; its
methods are not thread-safe. Tasks (other processes) only write their own
directory under ``pending-<id>/tasks/``, through `TaskSnapshotWriter`; they
never complete, list or delete.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NamedTuple

import orjson

from streamer.state._files import fsync_dir, write_file
from streamer.state.errors import CorruptCheckpointError, StateError
from streamer.state.manifest import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    TASKS_DIR,
    CompletedCheckpoint,
    SnapshotKind,
    build_manifest,
    check_binding,
    from_manifest,
    manifest_key,
    pending_dir,
    read_manifest,
    sign_manifest,
    validate_checkpoint,
)
from streamer.state.roots import StateRoots
from streamer.state.snapshot_writer import (
    PendingCheckpoint,
    TaskSnapshot,
    TaskSnapshotError,
    TaskSnapshotWriter,
)

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "TASKS_DIR",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "PendingCheckpoint",
    "RecoveryChoice",
    "SkippedCheckpoint",
    "SnapshotKind",
    "TaskSnapshot",
    "TaskSnapshotError",
    "TaskSnapshotWriter",
    "pending_dir",
]

log = logging.getLogger(__name__)

_CHK_RE: Final = re.compile(r"^chk-(\d+)$")


def _link_or_copy(src: str, dst: str) -> object:
    try:
        os.link(src, dst)
        return dst
    except OSError:
        return shutil.copy2(src, dst)


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


def _complete(
    storage: CheckpointStorage, pending: PendingCheckpoint, metadata: Mapping[str, Any]
) -> CompletedCheckpoint:
    if not pending.path.is_dir():
        raise StateError(f"pending checkpoint {pending.path} does not exist (aborted?)")
    if pending.final_path.exists():
        raise StateError(f"cannot complete checkpoint: {pending.final_path} already exists")
    manifest = build_manifest(
        pending.path,
        pending.kind,
        pending.checkpoint_id,
        metadata,
        storage.hash_files,
        storage.key,
        job_id=storage.job_id,
        where=storage.where(pending.final_path),
    )
    raw = orjson.dumps(manifest, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
    write_file(pending.path / MANIFEST_NAME, raw)
    fsync_dir(pending.path)
    os.rename(pending.path, pending.final_path)
    fsync_dir(pending.final_path.parent)
    return from_manifest(pending.final_path, manifest)


class CheckpointStorage:
    """Completed checkpoints under ``root``: begin, complete atomically, list, retain, recover.

    ``hash_files`` (default on) records a sha256 of every file at completion;
    validation then checks it (see `streamer.state.manifest` for the cost).
    Manifests are signed with ``key`` and validated against it (default: this
    cluster's `manifest_key`, which needs the cluster secret), and bound to
    ``job_id`` and to their directory relative to its state root (``roots``;
    default: ``root``'s parent): `get`, `latest` and `retain` use only this job's
    checkpoints written where they are (see `streamer.state.manifest`).

    One per coordinator, which owns the checkpoints of ``job_id`` under ``root``
    and the task directories task processes write into its pending checkpoints.
    Not thread-safe; blocking file I/O.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        hash_files: bool = True,
        key: bytes | None = None,
        job_id: str = "",
        roots: StateRoots | None = None,
    ) -> None:
        self.root = Path(root)
        self.hash_files = hash_files
        self.key = manifest_key() if key is None else key
        self.job_id = job_id
        self.roots = StateRoots.of([self.root.absolute().parent]) if roots is None else roots
        self.root.mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"CheckpointStorage({str(self.root)!r})"

    # ------------------------------------------------------------------ writing

    def where(self, path: str | os.PathLike[str]) -> str:
        """How a manifest names directory ``path``: relative to its state root."""
        return self.roots.relative(path)

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
        return _complete(self, pending, metadata)

    def savepoint(
        self, checkpoint: CompletedCheckpoint, path: str | os.PathLike[str]
    ) -> CompletedCheckpoint:
        """Copy a completed checkpoint to a savepoint at ``path`` (must not exist).

        Files are hard-linked when on the same filesystem (completed files are
        never modified; RocksDB SSTs are immutable), else copied. The manifest
        is rewritten with ``"kind": "savepoint"`` and ``path`` and signed again; ids,
        job, metadata and file checksums are kept, so `load` validates it like any
        savepoint.
        """
        final = Path(path).absolute()
        if final.exists():
            raise StateError(f"savepoint target {final} already exists")
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.parent / f".{final.name}.pending-{uuid.uuid4().hex[:12]}"
        try:
            shutil.copytree(checkpoint.path, tmp, copy_function=_link_or_copy)
            body = sign_manifest(
                {**checkpoint.manifest, "kind": "savepoint", "path": self.where(final)}, self.key
            )
            manifest_path = tmp / MANIFEST_NAME
            manifest_path.unlink()  # may be a hard link to the checkpoint's manifest
            write_file(
                manifest_path, orjson.dumps(body, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
            )
            fsync_dir(tmp)
            os.rename(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(final.parent)
        return from_manifest(final, body)

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
        """Validate and return checkpoint ``checkpoint_id`` (`CorruptCheckpointError`,
        also when another job wrote it or it was written elsewhere)."""
        path = self.checkpoint_path(checkpoint_id)
        if not path.is_dir():
            raise StateError(f"no completed checkpoint {checkpoint_id} in {self.root}")
        where, job_id = self.where(path), self.job_id
        checkpoint = validate_checkpoint(
            path, key=self.key, verify_hashes=verify_hashes, where=where, job_id=job_id
        )
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
    def load(
        path: str | os.PathLike[str],
        *,
        key: bytes | None = None,
        verify_hashes: bool = True,
        roots: StateRoots | None = None,
    ) -> CompletedCheckpoint:
        """Validate and return the savepoint (or checkpoint) directory at ``path``, its
        manifest signed with ``key`` (default: this cluster's `manifest_key`) and, given
        the state ``roots``, for ``path`` (any job's: a savepoint starts a new one)."""
        found = Path(path)
        if not found.is_dir():
            raise StateError(f"no savepoint or checkpoint directory at {found}")
        key = manifest_key() if key is None else key
        where = None if roots is None else roots.relative(found)
        return validate_checkpoint(found, key=key, verify_hashes=verify_hashes, where=where)

    # ------------------------------------------------------------------ retention

    def delete(self, checkpoint_id: int) -> None:
        """Delete a completed checkpoint (renamed away first, so never seen half-deleted)."""
        path = self.checkpoint_path(checkpoint_id)
        if not path.is_dir():
            return
        trash = self.root / f".trash-{checkpoint_id}-{uuid.uuid4().hex[:12]}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def owns(self, checkpoint_id: int) -> bool:
        """Whether ``chk-<checkpoint_id>`` has a manifest signed for this job and this
        place (its signature and shape checked; not its paths, nor its files)."""
        path = self.checkpoint_path(checkpoint_id)
        try:
            manifest = read_manifest(path, self.key, check_paths=False)
            check_binding(path, manifest, self.where(path), self.job_id)
        except CorruptCheckpointError:
            return False
        return True

    def retain(self, n: int) -> builtins.list[int]:
        """Keep this job's ``n`` newest completed checkpoints (by id), delete its others;
        return the deleted.

        Only checkpoints this storage `owns` count and are deleted: another job's (its
        ``checkpoint_dir`` pointed here) and ones whose manifest is unreadable or
        tampered with are left alone. Files are not validated: a corrupt newest one
        with a good manifest still counts, so keep ``n >= 2`` if recovery should have
        a fallback.
        """
        if not isinstance(n, int) or n < 1:
            raise StateError(f"retain needs n >= 1, got {n!r}")
        doomed = [checkpoint_id for checkpoint_id in self.list() if self.owns(checkpoint_id)][:-n]
        for checkpoint_id in doomed:
            self.delete(checkpoint_id)
        return doomed
