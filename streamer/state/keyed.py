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
"""

from __future__ import annotations

import itertools
import os
import shutil
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import rocksdict

from streamer.graph.keygroups import key_group_for_key, key_to_bytes
from streamer.state._layout import (
    ABSENT,
    BATCH,
    EXPIRING,
    MAX_MAX_PARALLELISM,
    MAX_STATES,
    META_KEY,
    PLAIN,
    SEQ_MAX,
    SNAPSHOT_FORMAT,
    Clock,
    StateKind,
    check_layout,
    check_ttl,
    link_or_copy,
    parse_meta,
    require_fresh_dir,
    rocks_options,
    states_from_meta,
    successor,
    wall_clock_ms,
)
from streamer.state.errors import KeyGroupOutOfRangeError, StateError
from streamer.state.handles import ListState, MapState, ValueState

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
    """

    def __init__(
        self,
        db: rocksdict.Rdict,
        path: Path,
        max_parallelism: int,
        key_groups: range,
        states: dict[str, tuple[int, StateKind]],
        clock: Clock,
    ) -> None:
        """Internal: use `open` or `restore`."""
        self._db: rocksdict.Rdict = db
        self._path = path
        self._max_parallelism = max_parallelism
        self._key_groups = key_groups
        self._states = states
        self._clock = clock
        self._closed = False
        self._current_key: Any = None
        self._current_key_group = -1
        self._kg_bytes = b""
        self._key_part: bytes | None = None
        self._scans: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()

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
        check_layout(max_parallelism, key_groups)
        where = Path(path)
        where.parent.mkdir(parents=True, exist_ok=True)
        try:
            db = rocksdict.Rdict(str(where), rocks_options())
        except Exception as exc:  # rocksdict raises plain Exception
            raise StateError(f"cannot open state database {where}: {exc}") from exc
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
            backend = cls(db, where, max_parallelism, key_groups, states, clock or wall_clock_ms)
            if raw is None:
                backend._write_meta()
        except BaseException:
            db.close()
            raise
        return backend

    def close(self) -> None:
        """Close the database (idempotent). Unfinished iterators are closed too."""
        if self._closed:
            return
        self._closed = True
        for scan in list(self._scans):
            scan.close()
        self._db.close()

    def __enter__(self) -> KeyedStateBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ properties

    @property
    def path(self) -> Path:
        """Directory of the database."""
        return self._path

    @property
    def max_parallelism(self) -> int:
        """Number of key groups of the job."""
        return self._max_parallelism

    @property
    def key_groups(self) -> range:
        """The key groups this backend owns."""
        return self._key_groups

    @property
    def current_key(self) -> Any:
        """The key set by `set_current_key` (``None`` before the first call)."""
        return self._current_key

    @property
    def current_key_group(self) -> int:
        """Key group of the current key (-1 before the first `set_current_key`)."""
        return self._current_key_group

    @property
    def state_names(self) -> dict[str, dict[str, Any]]:
        """Registered states: ``{name: {"id": int, "kind": "value" | "map" | "list"}}``."""
        return {name: {"id": sid, "kind": kind} for name, (sid, kind) in self._states.items()}

    # ------------------------------------------------------------------ current key

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """Make ``key`` the key that every state handle reads and writes.

        ``key_group`` may be passed when the caller already computed it; it
        must equal ``key_group_for_key(key, max_parallelism)``. Raises
        `KeyGroupOutOfRangeError` for a key outside this backend's key groups
        and ``TypeError`` for a key `key_to_bytes` cannot encode.
        """
        if self._closed:
            raise StateError("the state backend is closed")
        key_bytes = key_to_bytes(key)
        kg = key_group_for_key(key_bytes, self._max_parallelism) if key_group is None else key_group
        kgs = self._key_groups
        if not kgs.start <= kg < kgs.stop:
            raise KeyGroupOutOfRangeError(
                f"key {key!r} is in key group {kg}, outside this task's key groups "
                f"[{kgs.start}, {kgs.stop}) (max_parallelism={self._max_parallelism}): "
                "the record was routed to the wrong subtask"
            )
        self._current_key = key
        self._current_key_group = kg
        self._kg_bytes = kg.to_bytes(2, "big")
        self._key_part = len(key_bytes).to_bytes(4, "big") + key_bytes

    def _prefix(self, sid: bytes) -> bytes:
        if self._key_part is None or self._closed:
            if self._closed:
                raise StateError("the state backend is closed")
            raise StateError("no current key: call set_current_key() before using keyed state")
        return self._kg_bytes + sid + self._key_part

    # ------------------------------------------------------------------ state handles

    def value_state(self, name: str, ttl_ms: int | None = None) -> ValueState:
        """A handle on the single value per key of state ``name``."""
        check_ttl(ttl_ms)
        return ValueState(self, name, self._register(name, "value"), ttl_ms)

    def map_state(self, name: str, ttl_ms: int | None = None) -> MapState:
        """A handle on the map per key of state ``name``."""
        check_ttl(ttl_ms)
        return MapState(self, name, self._register(name, "map"), ttl_ms)

    def list_state(self, name: str, ttl_ms: int | None = None) -> ListState:
        """A handle on the list per key of state ``name``."""
        check_ttl(ttl_ms)
        return ListState(self, name, self._register(name, "list"), ttl_ms)

    def _register(self, name: str, kind: StateKind) -> int:
        if self._closed:
            raise StateError("the state backend is closed")
        if not isinstance(name, str) or not name:
            raise StateError(f"a state name must be a non-empty string, got {name!r}")
        known = self._states.get(name)
        if known is not None:
            if known[1] != kind:
                raise StateError(f"state {name!r} is a {known[1]} state, not a {kind} state")
            return known[0]
        sid = max((s for s, _ in self._states.values()), default=-1) + 1
        if sid >= MAX_STATES:
            raise StateError(f"too many states (at most {MAX_STATES})")
        self._states[name] = (sid, kind)
        self._write_meta()
        return sid

    def _meta(self) -> dict[str, Any]:
        return {
            "format": SNAPSHOT_FORMAT,
            "max_parallelism": self._max_parallelism,
            "key_groups": [self._key_groups.start, self._key_groups.stop],
            "states": self.state_names,
        }

    def _write_meta(self) -> None:
        self._db[META_KEY] = orjson.dumps(self._meta())

    # ------------------------------------------------------------------ internals for handles

    def _decode(self, raw: bytes, now: int | None = None) -> Any:
        """The value in ``raw``, or `ABSENT` when it expired."""
        header = raw[0]
        if header == PLAIN:
            return orjson.loads(raw[1:])
        if header == EXPIRING:
            if int.from_bytes(raw[1:9], "big") <= (self._clock() if now is None else now):
                return ABSENT
            return orjson.loads(raw[9:])
        raise StateError(f"corrupt state value (unknown header byte {header})")

    def _expiry(self, ttl_ms: int | None) -> int | None:
        return None if ttl_ms is None else self._clock() + ttl_ms

    def _scan(self, lower: bytes, upper: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``lower <= key < upper`` in key order."""
        scan = self._scan_gen(lower, upper)
        self._scans.add(scan)
        return scan

    def _scan_gen(self, lower: bytes, upper: bytes) -> Generator[tuple[bytes, bytes], None, None]:
        opts = rocksdict.ReadOptions()
        opts.set_iterate_upper_bound(upper)
        it = self._db.iter(opts)
        try:
            it.seek(lower)
            while it.valid():
                yield it.key(), it.value()
                it.next()
        finally:
            del it

    def _delete_prefix(self, prefix: bytes) -> None:
        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, _ in self._scan(prefix, successor(prefix)):
            batch.delete(key)
        if len(batch):
            self._db.write(batch)

    def _next_seq(self, prefix: bytes) -> int:
        # No iterate_lower_bound: rocksdict 0.3.29's ReadOptions.set_iterate_lower_bound
        # sets the *upper* bound. Never use it; check the landing key instead.
        it = self._db.iter()
        it.seek_for_prev(prefix + SEQ_MAX)
        if it.valid():
            key: bytes = it.key()
            if len(key) == len(prefix) + 8 and key.startswith(prefix):
                return int.from_bytes(key[-8:], "big") + 1
        return 0

    # ------------------------------------------------------------------ whole-backend operations

    def keys_of(self, state_name: str) -> Iterator[bytes]:
        """The key bytes (`key_to_bytes`) of every key with an entry in ``state_name``.

        In key-group order, then by length of the key bytes, then by key
        bytes (the layout's order). Expired entries that were
        not cleaned up count. ``set_current_key(key_bytes)`` addresses the same
        entries as the original key (bytes keys encode to themselves).
        """
        known = self._states.get(state_name)
        if known is None:
            raise StateError(f"unknown state {state_name!r}")
        keys = self._keys_gen(*known)
        self._scans.add(keys)
        return keys

    def _keys_gen(self, sid: int, kind: StateKind) -> Generator[bytes, None, None]:
        for kg in self._key_groups:
            lower = kg.to_bytes(2, "big") + sid.to_bytes(2, "big")
            opts = rocksdict.ReadOptions()
            opts.set_iterate_upper_bound(successor(lower))
            it = self._db.iter(opts)
            it.seek(lower)
            while it.valid():
                key: bytes = it.key()
                end = 8 + int.from_bytes(key[4:8], "big")
                yield key[8:end]
                if kind == "value":
                    it.next()
                else:
                    it.seek(successor(key[:end]))
            del it

    def cleanup_expired(self, now_ms: int | None = None) -> int:
        """Delete every entry expired at ``now_ms`` (default: the clock); return how many.

        Scans all entries of this backend: cost is linear in the state size.
        """
        now = self._clock() if now_ms is None else now_ms
        kgs = self._key_groups
        batch = rocksdict.WriteBatch(raw_mode=True)
        removed = 0
        for key, raw in self._scan(kgs.start.to_bytes(2, "big"), kgs.stop.to_bytes(2, "big")):
            if raw[0] == EXPIRING and int.from_bytes(raw[1:9], "big") <= now:
                batch.delete(key)
                removed += 1
                if len(batch) >= BATCH:
                    self._db.write(batch)
                    batch = rocksdict.WriteBatch(raw_mode=True)
        if len(batch):
            self._db.write(batch)
        return removed

    def snapshot_metadata(self) -> dict[str, Any]:
        """What `snapshot` returns, without taking a snapshot."""
        return {
            "format": SNAPSHOT_FORMAT,
            "max_parallelism": self._max_parallelism,
            "key_groups": [self._key_groups.start, self._key_groups.stop],
            "state_names": self.state_names,
        }

    def snapshot(self, target_dir: str | os.PathLike[str]) -> dict[str, Any]:
        """Write a consistent copy of the database to ``target_dir`` (must not exist).

        A RocksDB checkpoint: immutable SST files are hard-linked when
        ``target_dir`` is on the same filesystem, so this is fast and cheap in
        space. Returns the metadata `restore` needs:
        ``{"format": 1, "max_parallelism", "key_groups": [start, stop],
        "state_names": {name: {"id", "kind"}}}`` (JSON-serializable).
        """
        if self._closed:
            raise StateError("the state backend is closed")
        target = Path(target_dir)
        if target.exists():
            raise StateError(f"snapshot target {target} already exists")
        target.parent.mkdir(parents=True, exist_ok=True)
        rocksdict.Checkpoint(self._db).create_checkpoint(str(target))
        return self.snapshot_metadata()

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike[str],
        sources: Iterable[tuple[Path, Mapping[str, Any]]],
        *,
        max_parallelism: int,
        key_groups: range,
        clock: Clock | None = None,
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
        modified.
        """
        check_layout(max_parallelism, key_groups)
        target = Path(path)
        require_fresh_dir(target)
        relevant: list[tuple[Path, range]] = []
        for src_dir, meta in sources:
            src_dir = Path(src_dir)
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

        try:
            if len(relevant) == 1 and relevant[0][1] == key_groups:
                shutil.copytree(
                    relevant[0][0], target, copy_function=link_or_copy, dirs_exist_ok=True
                )
                return cls.open(
                    target, max_parallelism=max_parallelism, key_groups=key_groups, clock=clock
                )
            backend = cls.open(
                target, max_parallelism=max_parallelism, key_groups=key_groups, clock=clock
            )
            try:
                for src_dir, src_range in relevant:
                    backend._copy_from(src_dir, src_range)
            except BaseException:
                backend.close()
                raise
            return backend
        except BaseException:
            # ``target`` was missing or empty: leave nothing half-restored behind.
            shutil.rmtree(target, ignore_errors=True)
            raise

    def _copy_from(self, src_dir: Path, src_range: range) -> None:
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
            if meta.get("max_parallelism") != self._max_parallelism or meta.get("key_groups") != [
                src_range.start,
                src_range.stop,
            ]:
                raise StateError(
                    f"snapshot {src_dir} holds max_parallelism={meta.get('max_parallelism')}, "
                    f"key groups {meta.get('key_groups')}, but its metadata says "
                    f"{self._max_parallelism}, [{src_range.start}, {src_range.stop})"
                )
            remap: dict[bytes, bytes] = {}
            for name, (src_sid, kind) in states_from_meta(meta, src_dir).items():
                dst_sid = self._register(name, kind)
                if dst_sid != src_sid:
                    remap[src_sid.to_bytes(2, "big")] = dst_sid.to_bytes(2, "big")
            lo = max(src_range.start, self._key_groups.start)
            hi = min(src_range.stop, self._key_groups.stop)
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
                    self._db.write(batch)
                    batch = rocksdict.WriteBatch(raw_mode=True)
                it.next()
            del it
            if len(batch):
                self._db.write(batch)
        finally:
            src.close()
