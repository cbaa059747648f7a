"""Opening a state database, and building one from snapshots (restore, rescaling).

Internal to `streamer.state`: `KeyedStateBackend.open` and
`KeyedStateBackend.restore` are the public entry points and document the
behaviour; the byte layout is described in `streamer.state.keyed`.

Snapshot directories come from a checkpoint's manifest, which the coordinator
validated; as a second line of defence a task refuses (`check_snapshot_dir`)
one that is relative, has a ``..`` component, or (given the checkpoint
directory) leads out of it once symbolic links are resolved.

Functions, no shared state: each call opens (and on failure closes) its own
databases. Snapshot directories are opened read-only and never modified.
Blocking file I/O, on the calling thread.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import rocksdict

from streamer.state._layout import (
    BATCH,
    META_KEY,
    SNAPSHOT_FORMAT,
    StateKind,
    check_layout,
    parse_meta,
    require_fresh_dir,
    rocks_options,
    states_from_meta,
)
from streamer.state.database import StateDatabase
from streamer.state.errors import StateError

__all__ = [
    "CopyFunction",
    "check_snapshot_dir",
    "open_database",
    "plan_restore",
    "restore_database",
]

CopyFunction = Callable[[str, str], object]
"""``shutil.copytree``'s ``copy_function``: copies (or links) one file ``src`` to ``dst``."""


def no_wal() -> rocksdict.WriteOptions:
    """Writes without RocksDB's write-ahead log.

    The log only helps a process that reopens its own database after a crash, and
    no attempt ever does: each opens a fresh directory, empty or restored from a
    checkpoint, and a dead attempt's directory is never read again. Checkpoints do
    not need it either: a RocksDB checkpoint of a database without a log flushes
    the memtables first, so it holds every write made before it
    (``tests/integration/test_state_no_wal.py`` kills a writer and restores).
    Measured in issue 14: the log's ``write()`` calls were 42% of a count task's
    RocksDB time.
    """
    options = rocksdict.WriteOptions()
    options.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; stub says method
    return options


def open_database(
    path: str | os.PathLike[str], *, max_parallelism: int, key_groups: range
) -> StateDatabase:
    """Open (creating if missing) the database at ``path``; see `KeyedStateBackend.open`.

    An existing metadata record must match ``max_parallelism`` and
    ``key_groups`` (`StateError`); a new database gets one.
    """
    check_layout(max_parallelism, key_groups)
    where = Path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    try:
        db = rocksdict.Rdict(str(where), rocks_options())
    except Exception as exc:  # rocksdict raises plain Exception
        raise StateError(f"cannot open state database {where}: {exc}") from exc
    db.set_write_options(no_wal())
    try:
        raw = db.get(META_KEY)
        if raw is None:
            states: dict[str, tuple[int, StateKind]] = {}
        else:
            meta = parse_meta(raw, where)
            if meta.get("max_parallelism") != max_parallelism:
                raise StateError(
                    f"{where}: state was written with max_parallelism="
                    f"{meta.get('max_parallelism')}, opened with {max_parallelism}"
                )
            stored = meta.get("key_groups")
            if stored != [key_groups.start, key_groups.stop]:
                raise StateError(
                    f"{where}: state holds key groups {stored}, opened for "
                    f"[{key_groups.start}, {key_groups.stop}); restore it to change the range"
                )
            states = states_from_meta(meta, where)
        database = StateDatabase(db, where, max_parallelism, key_groups, states)
        if raw is None:
            database.write_meta()
    except BaseException:
        db.close()
        raise
    return database


def check_snapshot_dir(
    src_dir: str | os.PathLike[str], within: str | os.PathLike[str] | None = None
) -> Path:
    """``src_dir`` as a `Path`; `StateError` unless it is absolute without a ``..``
    component and, given ``within`` (the checkpoint directory), lies inside ``within``
    once symbolic links are resolved."""
    path = Path(src_dir)
    if not path.is_absolute() or ".." in path.parts:
        raise StateError(
            f"refusing to restore from snapshot {str(src_dir)!r}: not an absolute path "
            "without '..' (the restore plan is corrupt)"
        )
    if within is not None:
        real = Path(os.path.realpath(path))
        if not real.is_relative_to(os.path.realpath(within)):
            raise StateError(
                f"refusing to restore from snapshot {path}: it leads to {real}, outside "
                f"its checkpoint {within} (the checkpoint was tampered with)"
            )
    return path


def plan_restore(
    sources: Iterable[tuple[Path, Mapping[str, Any]]],
    *,
    max_parallelism: int,
    key_groups: range,
    within: str | os.PathLike[str] | None = None,
) -> list[tuple[Path, range]]:
    """The snapshots overlapping ``key_groups``, with their key groups, by first key group.

    Checks each snapshot's directory (`check_snapshot_dir` with ``within``), its
    metadata (format, ``max_parallelism``, ``key_groups``), that the overlapping
    ones do not overlap each other and, when there are any, that together they
    cover ``key_groups``; else `StateError`. Opens nothing.
    """
    relevant: list[tuple[Path, range]] = []
    for raw_dir, meta in sources:
        src_dir = check_snapshot_dir(raw_dir, within)
        if not isinstance(meta, Mapping) or meta.get("format") != SNAPSHOT_FORMAT:
            raise StateError(
                f"snapshot {src_dir}: unsupported format "
                f"{meta.get('format') if isinstance(meta, Mapping) else meta!r}"
            )
        if meta.get("max_parallelism") != max_parallelism:
            raise StateError(
                f"snapshot {src_dir} was taken with max_parallelism="
                f"{meta.get('max_parallelism')} but the job has max_parallelism="
                f"{max_parallelism}: max_parallelism cannot change across a restore"
            )
        kg = meta.get("key_groups")
        if (
            not isinstance(kg, list | tuple)
            or len(kg) != 2
            or not all(isinstance(x, int) for x in kg)
            or not 0 <= kg[0] < kg[1] <= max_parallelism
        ):
            raise StateError(f"snapshot {src_dir}: bad key_groups {kg!r}")
        src_range = range(kg[0], kg[1])
        if src_range.start < key_groups.stop and key_groups.start < src_range.stop:
            relevant.append((src_dir, src_range))
    relevant.sort(key=lambda item: item[1].start)
    covered = 0
    for (prev_dir, prev), (cur_dir, cur) in itertools.pairwise(relevant):
        if cur.start < prev.stop:
            raise StateError(
                f"snapshots {prev_dir} (key groups [{prev.start}, {prev.stop})) and "
                f"{cur_dir} (key groups [{cur.start}, {cur.stop})) overlap"
            )
    for _, src_range in relevant:
        lo, hi = max(src_range.start, key_groups.start), min(src_range.stop, key_groups.stop)
        covered += hi - lo
    if relevant and covered != len(key_groups):
        raise StateError(
            f"the snapshots cover {covered} of the {len(key_groups)} key groups "
            f"[{key_groups.start}, {key_groups.stop}): a task snapshot is missing"
        )
    return relevant


def restore_database(
    path: str | os.PathLike[str],
    sources: Iterable[tuple[Path, Mapping[str, Any]]],
    *,
    max_parallelism: int,
    key_groups: range,
    copy_function: CopyFunction,
    within: str | os.PathLike[str] | None = None,
) -> StateDatabase:
    """Build the database of ``key_groups`` at ``path`` from snapshots, and open it.

    See `KeyedStateBackend.restore`; ``within`` is the checkpoint directory the
    snapshots must lie in (`check_snapshot_dir`). When exactly one snapshot holds exactly
    ``key_groups``, its files are copied with ``copy_function`` (which may
    hard-link); otherwise the entries of ``key_groups`` are copied one by
    one. On failure ``path`` is removed again.
    """
    check_layout(max_parallelism, key_groups)
    target = Path(path)
    require_fresh_dir(target)
    relevant = plan_restore(
        sources, max_parallelism=max_parallelism, key_groups=key_groups, within=within
    )
    try:
        if len(relevant) == 1 and relevant[0][1] == key_groups:
            shutil.copytree(relevant[0][0], target, copy_function=copy_function, dirs_exist_ok=True)
            return open_database(target, max_parallelism=max_parallelism, key_groups=key_groups)
        database = open_database(target, max_parallelism=max_parallelism, key_groups=key_groups)
        try:
            for src_dir, src_range in relevant:
                _copy_key_groups(database, src_dir, src_range)
        except BaseException:
            database.close()
            raise
        return database
    except BaseException:
        # ``target`` was missing or empty: leave nothing half-restored behind.
        shutil.rmtree(target, ignore_errors=True)
        raise


def _copy_key_groups(database: StateDatabase, src_dir: Path, src_range: range) -> None:
    """Copy the entries of ``database``'s key groups from the snapshot at ``src_dir``.

    Registers the snapshot's states in ``database`` and rewrites state ids
    that differ there.
    """
    try:
        src = rocksdict.Rdict(
            str(src_dir), rocks_options(), access_type=rocksdict.AccessType.read_only()
        )
    except Exception as exc:  # rocksdict raises plain Exception
        raise StateError(f"cannot open snapshot {src_dir}: {exc}") from exc
    try:
        raw = src.get(META_KEY)
        if raw is None:
            raise StateError(f"snapshot {src_dir} has no state metadata record")
        meta = parse_meta(raw, src_dir)
        if meta.get("max_parallelism") != database.max_parallelism or meta.get("key_groups") != [
            src_range.start,
            src_range.stop,
        ]:
            raise StateError(
                f"snapshot {src_dir} holds max_parallelism={meta.get('max_parallelism')}, "
                f"key groups {meta.get('key_groups')}, but its metadata says "
                f"{database.max_parallelism}, [{src_range.start}, {src_range.stop})"
            )
        remap: dict[bytes, bytes] = {}
        for name, (src_sid, kind) in states_from_meta(meta, src_dir).items():
            dst_sid = database.register(name, kind)
            if dst_sid != src_sid:
                remap[src_sid.to_bytes(2, "big")] = dst_sid.to_bytes(2, "big")
        lo = max(src_range.start, database.key_groups.start)
        hi = min(src_range.stop, database.key_groups.stop)
        opts = rocksdict.ReadOptions()
        opts.set_iterate_upper_bound(hi.to_bytes(2, "big"))
        it = src.iter(opts)
        it.seek(lo.to_bytes(2, "big"))
        batch = rocksdict.WriteBatch(raw_mode=True)
        while it.valid():
            key: bytes = it.key()
            if remap:
                new_sid = remap.get(key[2:4])
                if new_sid is not None:
                    key = key[:2] + new_sid + key[4:]
            batch.put(key, it.value())
            if len(batch) >= BATCH:
                database.db.write(batch)
                batch = rocksdict.WriteBatch(raw_mode=True)
            it.next()
        del it
        if len(batch):
            database.db.write(batch)
    finally:
        src.close()
