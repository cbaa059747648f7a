"""Keyed state of one task, in a rocksdict ``Rdict`` the task owns.

A `KeyedStateBackend` holds the keyed state of every stateful operator of one
task for the key groups the task owns (`streamer.graph.keygroups`). The
operator sets the key of the record it is processing with `set_current_key`;
the state handles (`ValueState`, `MapState`, `ListState`) then read and write
the entries of that key.

On-disk layout (raw mode: keys and values are bytes)::

    data key  = key_group (2 bytes BE) | state id (2 bytes BE)
                | len(key bytes) (4 bytes BE) | key bytes
                | [map: user key bytes | list: element sequence number, 8 bytes BE]
    value     = 0x00 | orjson(value)                              no TTL
              | 0x01 | expiry ms (8 bytes BE) | orjson(value)     TTL
    metadata  = key 0xFFFF "meta" -> orjson {"format": 1, "max_parallelism",
                "key_groups": [start, stop], "states": {name: {"id", "kind"}}}

*key bytes* is `key_to_bytes(key)`; a map user key is stored as
``orjson.dumps(user_key, option=OPT_SORT_KEYS)``. Key group first means one
contiguous key range per key group, so a restore with another parallelism
copies whole ranges (`KeyedStateBackend.restore`). The metadata record lives
in key group 0xFFFF, which no key can have (``max_parallelism <= 65535``), and
registers each state name with a stable id: ids survive snapshots and
restores, and a restore that merges several snapshots maps their ids onto one
id space.

Order: keys of one state iterate by key group, then length of the key
bytes, then key bytes (`keys_of`); map entries of one key by the bytes of
the user key's encoding; list elements in insertion order.

Values are orjson: what you read back is ``orjson.loads(orjson.dumps(v))``
(tuples come back as lists). Nothing here is ever pickled.

TTL is processing time, per entry (a value, a map entry, a list element): an
entry written at ``t`` with ``ttl_ms`` expires at ``t + ttl_ms`` and reads as
absent from then on (lazily: reads never delete); `cleanup_expired` removes
expired entries. The clock (milliseconds, wall clock by default so expiry
survives a restore in another process) is injectable.

rocksdict note: ``ReadOptions.set_iterate_lower_bound`` in rocksdict 0.3.29
sets the *upper* bound; this module only ever sets upper bounds and seeks.

Threading: a backend and its state handles belong to the task's one thread
(the asyncio loop). Nothing here is thread-safe. Iterators returned by the
state handles read a consistent view (a RocksDB iterator pins the data it
started on), so modifying state while iterating is allowed; writes made
meanwhile may or may not be seen. An iterator left unfinished keeps the
database files open until it is garbage-collected or the backend is closed.

Modules: this one is the facade; `streamer.state.database` holds the
``Rdict`` and the state registry, `streamer.state.access` the current key and
what the handles (`streamer.state.handles`) use, `streamer.state.restore`
opens and restores databases, `streamer.state._layout` has the byte layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from streamer.state._layout import (
    MAX_MAX_PARALLELISM,
    SNAPSHOT_FORMAT,
    Clock,
    StateKind,
    check_ttl,
    link_or_copy,
    wall_clock_ms,
)
from streamer.state.access import KeyedAccess
from streamer.state.database import StateDatabase
from streamer.state.errors import StateError
from streamer.state.handles import ListState, MapState, ValueState
from streamer.state.restore import open_database, restore_database

__all__ = [
    "MAX_MAX_PARALLELISM",
    "SNAPSHOT_FORMAT",
    "KeyedStateBackend",
    "ListState",
    "MapState",
    "StateKind",
    "ValueState",
    "wall_clock_ms",
]


class KeyedStateBackend:
    """Keyed state of one task for a contiguous range of key groups.

    Create it with `open` (a new or existing database) or `restore` (from
    snapshots). Not thread-safe: use it from the task's thread only.

    A facade over two collaborators it owns and closes: a `StateDatabase`
    (the ``Rdict``, the registry of state names and its metadata record,
    snapshots) and a `KeyedAccess` (the current key and what the state
    handles read and write through). Opening and restoring are
    `streamer.state.restore`'s.
    """

    def __init__(self, database: StateDatabase, clock: Clock) -> None:
        """Internal: use `open` or `restore`."""
        self._database = database
        self._access = KeyedAccess(
            database.db, database.max_parallelism, database.key_groups, clock
        )

    def size_estimate(self) -> tuple[int, int]:
        """RocksDB's cheap estimates for the whole database: ``(keys, bytes)``, bytes
        being the memtables' memory plus the SST files."""
        db = self._database.db
        keys = db.property_int_value("rocksdb.estimate-num-keys") or 0
        memtables = db.property_int_value("rocksdb.cur-size-all-mem-tables") or 0
        files = db.property_int_value("rocksdb.total-sst-files-size") or 0
        return int(keys), int(memtables) + int(files)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        max_parallelism: int,
        key_groups: range,
        clock: Clock | None = None,
    ) -> KeyedStateBackend:
        """Open (creating if missing) the state database at ``path``.

        An existing database must have been written with the same
        ``max_parallelism`` and ``key_groups``, else `StateError` (use
        `restore` to change the key-group range).
        """
        database = open_database(path, max_parallelism=max_parallelism, key_groups=key_groups)
        return cls(database, clock or wall_clock_ms)

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike[str],
        sources: Iterable[tuple[Path, Mapping[str, Any]]],
        *,
        max_parallelism: int,
        key_groups: range,
        clock: Clock | None = None,
        within: str | os.PathLike[str] | None = None,
    ) -> KeyedStateBackend:
        """Build the state of ``key_groups`` at ``path`` from snapshots, and open it.

        ``sources`` are ``(snapshot_dir, metadata)`` pairs as `snapshot`
        wrote/returned them; pass every snapshot of the operator (those that
        do not overlap ``key_groups`` are not even opened). Only entries
        whose key group lies in ``key_groups`` are copied: this is how a
        rescale redistributes state. With exactly one overlapping snapshot
        for the same key-group range, its files are copied (SSTs hard-linked)
        instead. With no sources the state starts empty.

        ``path`` must not exist or be an empty directory; if the restore
        fails it is removed again. Raises `StateError`
        for a snapshot with another ``max_parallelism`` or format, for
        overlapping snapshots, and when the snapshots cover only part of
        ``key_groups``. Snapshot directories are opened read-only and never
        modified; each must be an absolute path without ``..`` and, given
        ``within`` (their checkpoint directory), lie inside it (`StateError`).
        """
        # ``link_or_copy`` is looked up here, at call time: the checkpoint benchmark
        # patches ``streamer.state.keyed.link_or_copy`` to measure a restore without links.
        database = restore_database(
            path,
            sources,
            max_parallelism=max_parallelism,
            key_groups=key_groups,
            copy_function=link_or_copy,
            within=within,
        )
        return cls(database, clock or wall_clock_ms)

    def close(self) -> None:
        """Close the database (idempotent). Unfinished iterators are closed too."""
        self._access.close()
        self._database.close()

    def __enter__(self) -> KeyedStateBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """Directory of the database."""
        return self._database.path

    @property
    def max_parallelism(self) -> int:
        """Number of key groups of the job."""
        return self._database.max_parallelism

    @property
    def key_groups(self) -> range:
        """The key groups this backend owns."""
        return self._database.key_groups

    @property
    def current_key(self) -> Any:
        """The key set by `set_current_key` (``None`` before the first call)."""
        return self._access.current_key

    @property
    def current_key_group(self) -> int:
        """Key group of the current key (-1 before the first `set_current_key`)."""
        return self._access.current_key_group

    @property
    def state_names(self) -> dict[str, dict[str, Any]]:
        """Registered states: ``{name: {"id": int, "kind": "value" | "map" | "list"}}``."""
        return self._database.state_names

    # ------------------------------------------------------------------ current key

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """Make ``key`` the key that every state handle reads and writes.

        ``key_group`` may be passed when the caller already computed it; it
        must equal ``key_group_for_key(key, max_parallelism)``. Raises
        `KeyGroupOutOfRangeError` for a key outside this backend's key groups
        and ``TypeError`` for a key `key_to_bytes` cannot encode.
        """
        self._access.set_current_key(key, key_group)

    # ------------------------------------------------------------------ state handles

    def value_state(self, name: str, ttl_ms: int | None = None) -> ValueState:
        """A handle on the single value per key of state ``name``."""
        check_ttl(ttl_ms)
        return ValueState(self._access, name, self._database.register(name, "value"), ttl_ms)

    def map_state(self, name: str, ttl_ms: int | None = None) -> MapState:
        """A handle on the map per key of state ``name``."""
        check_ttl(ttl_ms)
        return MapState(self._access, name, self._database.register(name, "map"), ttl_ms)

    def list_state(self, name: str, ttl_ms: int | None = None) -> ListState:
        """A handle on the list per key of state ``name``."""
        check_ttl(ttl_ms)
        return ListState(self._access, name, self._database.register(name, "list"), ttl_ms)

    # ------------------------------------------------------------------ whole-backend operations

    def keys_of(self, state_name: str) -> Iterator[bytes]:
        """The key bytes (`key_to_bytes`) of every key with an entry in ``state_name``.

        In key-group order, then by length of the key bytes, then by key
        bytes (the layout's order). Expired entries that were
        not cleaned up count. ``set_current_key(key_bytes)`` addresses the same
        entries as the original key (bytes keys encode to themselves).
        """
        known = self._database.lookup(state_name)
        if known is None:
            raise StateError(f"unknown state {state_name!r}")
        return self._access.keys(*known)

    def cleanup_expired(self, now_ms: int | None = None) -> int:
        """Delete every entry expired at ``now_ms`` (default: the clock); return how many.

        Scans all entries of this backend: cost is linear in the state size.
        """
        return self._access.cleanup_expired(now_ms)

    def snapshot_metadata(self) -> dict[str, Any]:
        """What `snapshot` returns, without taking a snapshot."""
        return self._database.snapshot_metadata()

    def snapshot(self, target_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent copy of the database to ``target_dir`` (must not exist).

        A RocksDB checkpoint: immutable SST files are hard-linked when
        ``target_dir`` is on the same filesystem, so this is fast and cheap in
        space. Returns the metadata `restore` needs:
        ``{"format": 1, "max_parallelism", "key_groups": [start, stop],
        "state_names": {name: {"id", "kind"}}}`` (JSON-serializable).
        """
        self._access.flush()  # every write made before the snapshot is in it
        return self._database.snapshot(target_dir)
