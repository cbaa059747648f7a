"""Checkpoint directory names and the manifest: building, signing, reading, validating it.

The manifest (``_metadata.json``, orjson; nothing is ever pickled)::

    {"format": 3, "kind": "checkpoint" | "savepoint", "checkpoint_id": 7,
     "job_id": "job-1a2b3c4d",               # the job that wrote it
     "path": "job-1a2b3c4d/chk-7",           # where: relative to its state root
     "created_ms": ..., "hash": "sha256" | null,
     "tasks": {"count#1": {"dir": "tasks/count%231"}},   # dirs found under tasks/
     "metadata": {...},                      # complete()'s argument, verbatim
     "files": {"tasks/count%231/keyed/000009.sst": {"size": 1234, "sha256": "..."}},
     "signature": "..."}                     # HMAC over the manifest without this field

The signature is an HMAC-SHA256 (`streamer.security.secret.sign`) of the
manifest without it (orjson, sorted keys), keyed by `manifest_key`: a key
derived from the cluster secret, which only the coordinator holds. A manifest
without a valid signature was not written by this cluster or was modified
since, and is refused (`CorruptCheckpointError`); format 1 manifests (an
unkeyed sha256 anyone could recompute) are refused the same way, and format 2
ones (signed, but binding neither job nor path) as an unsupported format.

The signature binds the manifest to its job and its place: ``job_id`` and
``path``, the checkpoint's directory relative to the state root holding it
(`streamer.state.roots.StateRoots.relative`). `check_binding` refuses a manifest
found elsewhere, or (for recovery and retention) written by another job, so a job
whose ``checkpoint_dir`` names another job's directory neither restores nor
deletes that job's checkpoints, and a signed manifest copied to another place is
refused there.

Validation (`validate_checkpoint`, used by `CheckpointStorage.latest`, `get`
and `load`) checks the signature (`read_manifest`), the manifest's shape, that
every directory and file it names is a relative path without ``..`` that stays
inside the checkpoint directory once symbolic links are resolved
(`checkpoint_child`), the bindings when asked (`check_binding`), then that every
listed file exists with its size and, when hashing is on, its sha256. The
signature covers the file sizes and hashes, so with hashing on it covers every
byte; with hashing off (``hash_files=False`` / ``verify_hashes=False``, for
large state: sha256 runs at roughly 1-2 GB/s per core, once when written and
once when validated) it covers sizes only; the job and path bindings hold
either way.

``<task>`` directories are the task id (``"count#1"``) percent-encoded
(`urllib.parse.quote` with no safe characters, `task_dir_name`). The whole
directory layout is described in `streamer.state.storage`.

Functions and frozen values, no shared state: safe from any thread;
blocking file I/O.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote, unquote

import orjson

from streamer.security.secret import cluster_secret, derive, sign, verify
from streamer.state._files import sha256_file, walk_files
from streamer.state.errors import CorruptCheckpointError, StateError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "TASKS_DIR",
    "CompletedCheckpoint",
    "SnapshotKind",
    "build_manifest",
    "check_binding",
    "check_file_name",
    "check_relative",
    "checkpoint_child",
    "from_manifest",
    "manifest_key",
    "pending_dir",
    "read_manifest",
    "sign_manifest",
    "task_dir_name",
    "validate_checkpoint",
]

MANIFEST_NAME: Final = "_metadata.json"
MANIFEST_FORMAT: Final = 3
SIGNATURE: Final = "signature"
FOREIGN: Final = "was not written by this cluster or was modified"
TASKS_DIR: Final = "tasks"
SnapshotKind = Literal["checkpoint", "savepoint"]


def pending_dir(root: str | os.PathLike[str], checkpoint_id: int) -> Path:
    """Where checkpoint ``checkpoint_id`` is written before it completes."""
    return Path(root) / f"pending-{checkpoint_id}"


def task_dir_name(task_id: str) -> str:
    """The directory name of task ``task_id`` under ``tasks/`` (`StateError` if unusable)."""
    if not isinstance(task_id, str) or not task_id or task_id in (".", ".."):
        raise StateError(f"bad task id {task_id!r}")
    return quote(task_id, safe="")


def check_file_name(name: str) -> None:
    """`StateError` unless ``name`` is a plain file name other than the manifest's."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..", MANIFEST_NAME)
        or "/" in name
        or os.sep in name
        or "\0" in name
    ):
        raise StateError(f"bad file name {name!r}: a plain file name other than {MANIFEST_NAME}")


def manifest_key(secret: bytes | None = None) -> bytes:
    """The key manifests are signed with: derived from ``secret`` (default: this
    cluster's, `streamer.security.secret.cluster_secret`)."""
    return derive(cluster_secret() if secret is None else secret, "manifest")


def _canonical(body: Mapping[str, Any]) -> bytes:
    try:
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise StateError(f"checkpoint metadata is not JSON-serializable: {exc}") from None


def sign_manifest(body: Mapping[str, Any], key: bytes) -> dict[str, Any]:
    """``body`` (without a signature) with its ``signature`` under ``key`` added."""
    unsigned = {k: v for k, v in body.items() if k != SIGNATURE}
    return {**unsigned, SIGNATURE: sign(key, _canonical(unsigned))}


def check_relative(rel: object) -> str | None:
    """Why ``rel`` is not a plain relative path inside a checkpoint (None: it is).

    Refused: non-strings, empty, absolute, backslashes, NUL, and empty, ``.``
    or ``..`` components.
    """
    if not isinstance(rel, str) or not rel:
        return "is not a relative path"
    if rel.startswith("/") or os.path.isabs(rel):
        return "is absolute"
    if "\\" in rel or "\0" in rel:
        return "has a backslash or NUL"
    if any(part in ("", ".", "..") for part in rel.split("/")):
        return "has a '..', '.' or empty component"
    return None


def checkpoint_child(path: Path, rel: object, what: str) -> Path:
    """``path / rel`` for a directory or file ``rel`` that a manifest names (``what``).

    `CorruptCheckpointError` when `check_relative` refuses ``rel`` or the path leaves
    ``path`` once symbolic links are resolved.
    """
    problem = check_relative(rel)
    if problem is None:
        child = path / str(rel)
        if Path(os.path.realpath(child)).is_relative_to(os.path.realpath(path)):
            return child
        problem = "leads outside the checkpoint directory"
    raise CorruptCheckpointError(path, f"{what} {rel!r} {problem}")


def _describe_file(rel: str) -> str:
    """``"task count#1 file keyed/000009.sst"`` for a task file, else ``"file X"``."""
    parts = rel.split("/", 2)
    if len(parts) == 3 and parts[0] == TASKS_DIR:
        return f"task {unquote(parts[1])} file {parts[2]}"
    return f"file {rel}"


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

    def task_ids(self) -> list[str]:
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
        check_file_name(name)
        where = self.path if task_id is None else self.path / TASKS_DIR / task_dir_name(task_id)
        return orjson.loads((where / name).read_bytes())


def build_manifest(
    path: Path,
    kind: SnapshotKind,
    checkpoint_id: int,
    metadata: Mapping[str, Any],
    hash_files: bool,
    key: bytes,
    *,
    job_id: str,
    where: str,
) -> dict[str, Any]:
    """The manifest of the checkpoint written in directory ``path``, signed with ``key``
    and bound to job ``job_id`` and to ``where``, the directory it is published as
    (relative to its state root; see `check_binding`).

    Lists every regular file under ``path`` (hashed when ``hash_files``) and
    every task directory under ``tasks/`` (not hidden ones: writers' temporary
    directories). `StateError` when ``metadata`` is not a JSON-serializable
    mapping.
    """
    if not isinstance(metadata, Mapping):
        raise StateError(f"checkpoint metadata must be a mapping, got {type(metadata).__name__}")
    tasks: dict[str, dict[str, Any]] = {}
    tasks_root = path / TASKS_DIR
    if tasks_root.is_dir():
        for entry in sorted(tasks_root.iterdir()):
            if entry.is_dir() and not entry.name.startswith("."):  # dot: a writer's temp
                tasks[unquote(entry.name)] = {"dir": f"{TASKS_DIR}/{entry.name}"}
    files: dict[str, dict[str, Any]] = {}
    for rel, file_path in walk_files(path):
        if rel == MANIFEST_NAME:
            continue
        info: dict[str, Any] = {"size": file_path.stat().st_size}
        if hash_files:
            info["sha256"] = sha256_file(file_path)
        files[rel] = info
    body: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "checkpoint_id": checkpoint_id,
        "job_id": job_id,
        "path": where,
        "created_ms": time.time_ns() // 1_000_000,
        "hash": "sha256" if hash_files else None,
        "tasks": tasks,
        "metadata": dict(metadata),
        "files": files,
    }
    return sign_manifest(body, key)


def from_manifest(path: Path, manifest: dict[str, Any]) -> CompletedCheckpoint:
    """The `CompletedCheckpoint` at ``path`` that ``manifest`` (already checked) describes."""
    return CompletedCheckpoint(
        checkpoint_id=manifest["checkpoint_id"],
        path=path,
        kind=manifest["kind"],
        created_ms=manifest["created_ms"],
        tasks=manifest["tasks"],
        metadata=manifest["metadata"],
        manifest=manifest,
    )


def read_manifest(path: Path, key: bytes, *, check_paths: bool = True) -> dict[str, Any]:
    """The manifest of checkpoint directory ``path``, its signature and shape checked.

    Reads only the manifest (cheap). `CorruptCheckpointError` when it is missing,
    unreadable or malformed, when its signature under ``key`` is missing or wrong (it
    `FOREIGN`), or (with ``check_paths``; off only where no path is used: it resolves
    symbolic links of every entry) when a task directory it names (in ``tasks`` or in
    ``metadata["tasks"]``) or a file it lists fails `checkpoint_child`.
    """
    try:
        raw = (path / MANIFEST_NAME).read_bytes()
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
    signature = manifest.pop(SIGNATURE, None)
    if not isinstance(signature, str):
        raise CorruptCheckpointError(path, f"manifest is not signed: it {FOREIGN}")
    if not verify(key, _canonical(manifest), signature):
        raise CorruptCheckpointError(path, f"manifest {FOREIGN} (bad signature)")
    manifest[SIGNATURE] = signature
    if manifest.get("format") != MANIFEST_FORMAT:
        raise CorruptCheckpointError(
            path, f"unsupported manifest format {manifest.get('format')!r}"
        )
    shape = {
        "kind": str,
        "checkpoint_id": int,
        "job_id": str,
        "path": str,
        "created_ms": int,
        "tasks": dict,
        "metadata": dict,
        "files": dict,
    }
    for field_name, typ in shape.items():
        if not isinstance(manifest.get(field_name), typ):
            raise CorruptCheckpointError(
                path, f"manifest field {field_name!r} is missing or malformed"
            )
    if manifest["kind"] not in ("checkpoint", "savepoint"):
        raise CorruptCheckpointError(path, f"unknown kind {manifest['kind']!r}")
    if not check_paths:
        return manifest
    meta_tasks = manifest["metadata"].get("tasks")
    for entries in (manifest["tasks"], meta_tasks if isinstance(meta_tasks, dict) else {}):
        for task_id, entry in entries.items():
            if not isinstance(entry, dict):
                raise CorruptCheckpointError(path, f"task {task_id}: bad manifest entry")
            if "dir" in entry and entry["dir"] is not None:
                checkpoint_child(path, entry["dir"], f"task {task_id} directory")
    for rel, info in manifest["files"].items():
        checkpoint_child(path, rel, "file")
        if not isinstance(info, dict):
            raise CorruptCheckpointError(path, f"{_describe_file(rel)}: bad manifest entry")
    return manifest


def check_binding(
    path: Path, manifest: Mapping[str, Any], where: str, job_id: str | None = None
) -> None:
    """`CorruptCheckpointError` unless ``manifest`` (found at ``path``, already read) was
    signed for ``where`` (``path`` relative to its state root) and, given ``job_id``, by
    that job: a checkpoint or savepoint is used only where it was written, a checkpoint
    by its own job only."""
    if manifest["path"] != where:
        raise CorruptCheckpointError(
            path,
            f"manifest was signed for directory {manifest['path']!r}, not {where!r} "
            "(it is used only where it was written)",
        )
    if job_id is not None and manifest["job_id"] != job_id:
        raise CorruptCheckpointError(
            path, f"manifest was signed for job {manifest['job_id']!r}, not {job_id!r}"
        )


def validate_checkpoint(
    path: Path,
    *,
    key: bytes,
    verify_hashes: bool,
    where: str | None = None,
    job_id: str | None = None,
) -> CompletedCheckpoint:
    """Load and check ``path`` (`read_manifest`; with ``where``, `check_binding`; then
    every file it lists); `CorruptCheckpointError` with the first problem found."""
    manifest = read_manifest(path, key)
    if where is not None:
        check_binding(path, manifest, where, job_id)
    for rel, info in manifest["files"].items():
        what = _describe_file(rel)
        file_path = path / rel
        try:
            size = file_path.stat().st_size
        except FileNotFoundError:
            raise CorruptCheckpointError(path, f"{what}: missing") from None
        if size != info.get("size"):
            raise CorruptCheckpointError(
                path, f"{what}: size mismatch (expected {info.get('size')} bytes, found {size})"
            )
        expected = info.get("sha256")
        if verify_hashes and expected is not None and sha256_file(file_path) != expected:
            raise CorruptCheckpointError(path, f"{what}: checksum mismatch")
    return from_manifest(path, manifest)
