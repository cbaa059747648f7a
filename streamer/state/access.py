"""The current key and the database internals the state handles use.

Internal to `streamer.state`; the byte layout is described in
`streamer.state.keyed`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Generator, Iterator
from typing import Any

import orjson
import rocksdict

from streamer.graph.keygroups import key_group_for_key, key_to_bytes
from streamer.state._layout import (
    ABSENT,
    BATCH,
    EXPIRING,
    PLAIN,
    SEQ_MAX,
    Clock,
    StateKind,
    successor,
)
from streamer.state.entry_cache import EntryCache
from streamer.state.errors import KeyGroupOutOfRangeError, StateError

__all__ = ["KeyedAccess"]


def _locate(
    key: Any, key_group: int | None, max_parallelism: int, key_groups: range
) -> tuple[int, bytes, bytes]:
    """``key``'s key group, that group's 2 bytes and the key's data key part (length
    and bytes); `KeyGroupOutOfRangeError` when the group is not in ``key_groups``."""
    key_bytes = key_to_bytes(key)
    kg = key_group_for_key(key_bytes, max_parallelism) if key_group is None else key_group
    if not key_groups.start <= kg < key_groups.stop:
        raise KeyGroupOutOfRangeError(
            f"key {key!r} is in key group {kg}, outside this task's key groups "
            f"[{key_groups.start}, {key_groups.stop}) (max_parallelism={max_parallelism}): "
            "the record was routed to the wrong subtask"
        )
    return kg, kg.to_bytes(2, "big"), len(key_bytes).to_bytes(4, "big") + key_bytes


class KeyedAccess:
    """Current key, key prefixes, value decoding with TTL, and range scans of one backend.

    What the state handles (`streamer.state.handles`) act through: it
    satisfies their `StateAccess` protocol. Holds the current key's key
    group and encoded key, from which `prefix` builds a data key's first
    part, and the TTL clock.

    Ownership: it uses, but does not own, the ``Rdict`` (`StateDatabase`
    closes it). It owns the iterators it hands out (`scan`, `keys`) and
    closes the unfinished ones in `close`; after `close` every use of the
    current key raises `StateError`. The backend calls `close` before it
    closes the database.

    Point reads and writes (`get`, `put`, `delete`, and `cache`'s plain values) go
    through the write-back `EntryCache`; `flush` writes it to RocksDB, and runs before
    every scan (so a scan sees every write made before it).

    Threading: the owning task's thread only. Iterators read a consistent view
    (a RocksDB iterator pins the data it started on).
    """

    RECENT_KEYS = 10_000

    get: Callable[[bytes], bytes | None]
    """The raw entry at a data key, None when absent (`EntryCache.get`)."""
    put: Callable[[bytes, bytes], None]
    """Set the raw entry at a data key (`EntryCache.put`)."""
    delete: Callable[[bytes], None]
    """Remove the entry at a data key (`EntryCache.delete`)."""
    flush: Callable[[], None]
    """Write every cached change to RocksDB in one batch (`EntryCache.flush`)."""

    def __init__(
        self, db: rocksdict.Rdict, max_parallelism: int, key_groups: range, clock: Clock
    ) -> None:
        self.db: rocksdict.Rdict = db
        self.clock = clock
        self._max_parallelism = max_parallelism
        self._key_groups = key_groups
        self._closed = False
        self.current_key: Any = None
        self.current_key_group = -1
        self._kg_bytes = b""
        self._key_part: bytes | None = None
        self._recent: dict[str, tuple[int, bytes, bytes]] = {}  # key -> group, its 2 bytes, part
        self._scans: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()
        self.cache = EntryCache(db)
        self.get, self.put, self.delete = self.cache.get, self.cache.put, self.cache.delete
        self.flush = self.cache.flush

    def close(self) -> None:
        """Write what the cache holds, close every unfinished iterator and refuse
        further use (idempotent)."""
        if self._closed:
            return
        self.flush()
        self._closed = True
        for scan in list(self._scans):
            scan.close()

    # ------------------------------------------------------------------ current key

    def set_current_key(self, key: Any, key_group: int | None = None) -> None:
        """See `KeyedStateBackend.set_current_key`. A ``str`` key seen lately costs a
        dict lookup (its key group and encoding are remembered, `RECENT_KEYS` of them)."""
        if self._closed:
            raise StateError("the state backend is closed")
        plain = key.__class__ is str and key_group is None
        known = self._recent.get(key) if plain else None
        if known is None:
            known = _locate(key, key_group, self._max_parallelism, self._key_groups)
            if plain:
                if len(self._recent) >= self.RECENT_KEYS:
                    self._recent.clear()
                self._recent[key] = known
        self.current_key = key
        self.current_key_group, self._kg_bytes, self._key_part = known

    def prefix(self, sid: bytes) -> bytes:
        """The data key prefix of state ``sid`` (2 bytes) for the current key."""
        if self._key_part is None or self._closed:
            if self._closed:
                raise StateError("the state backend is closed")
            raise StateError("no current key: call set_current_key() before using keyed state")
        return self._kg_bytes + sid + self._key_part

    # ------------------------------------------------------------------ values

    def decode(self, raw: bytes, now: int | None = None) -> Any:
        """The value in ``raw``, or `ABSENT` when it expired at ``now`` (default: the clock)."""
        header = raw[0]
        if header == PLAIN:
            return orjson.loads(raw[1:])
        if header == EXPIRING:
            if int.from_bytes(raw[1:9], "big") <= (self.clock() if now is None else now):
                return ABSENT
            return orjson.loads(raw[9:])
        raise StateError(f"corrupt state value (unknown header byte {header})")

    def expiry(self, ttl_ms: int | None) -> int | None:
        """Expiry time of an entry written now with ``ttl_ms`` (None: never expires)."""
        return None if ttl_ms is None else self.clock() + ttl_ms

    # ------------------------------------------------------------------ ranges

    def scan(self, lower: bytes, upper: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Entries with ``lower <= key < upper`` in key order (cached writes included:
        they are flushed first; writes made while iterating are not seen)."""
        self.flush()
        scan = self._scan_gen(lower, upper)
        self._scans.add(scan)
        return scan

    def _scan_gen(self, lower: bytes, upper: bytes) -> Generator[tuple[bytes, bytes], None, None]:
        opts = rocksdict.ReadOptions()
        opts.set_iterate_upper_bound(upper)
        it = self.db.iter(opts)
        try:
            it.seek(lower)
            while it.valid():
                yield it.key(), it.value()
                it.next()
        finally:
            del it

    def delete_prefix(self, prefix: bytes) -> None:
        """Delete every entry whose key starts with ``prefix`` (in one write, at the
        next flush)."""
        for key in [key for key, _ in self.scan(prefix, successor(prefix))]:
            self.delete(key)

    def next_seq(self, prefix: bytes) -> int:
        """The sequence number after the last list element under ``prefix`` (0 if none)."""
        # No iterate_lower_bound: rocksdict 0.3.29's ReadOptions.set_iterate_lower_bound
        # sets the *upper* bound. Never use it; check the landing key instead.
        self.flush()
        it = self.db.iter()
        it.seek_for_prev(prefix + SEQ_MAX)
        if it.valid():
            key: bytes = it.key()
            if len(key) == len(prefix) + 8 and key.startswith(prefix):
                return int.from_bytes(key[-8:], "big") + 1
        return 0

    def keys(self, sid: int, kind: StateKind) -> Iterator[bytes]:
        """See `KeyedStateBackend.keys_of` (``sid`` and ``kind`` of the state)."""
        self.flush()
        keys = self._keys_gen(sid, kind)
        self._scans.add(keys)
        return keys

    def _keys_gen(self, sid: int, kind: StateKind) -> Generator[bytes, None, None]:
        for kg in self._key_groups:
            lower = kg.to_bytes(2, "big") + sid.to_bytes(2, "big")
            opts = rocksdict.ReadOptions()
            opts.set_iterate_upper_bound(successor(lower))
            it = self.db.iter(opts)
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

    def entries_of(self, sid: bytes) -> Iterator[tuple[bytes, bytes, bytes]]:
        """``(key bytes, rest of the data key, raw value)`` of every entry of state
        ``sid`` (2 bytes), over all keys: one range scan per key group, layout order."""
        self.flush()
        entries = self._entries_gen(sid)
        self._scans.add(entries)
        return entries

    def _entries_gen(self, sid: bytes) -> Generator[tuple[bytes, bytes, bytes], None, None]:
        for kg in self._key_groups:
            lower = kg.to_bytes(2, "big") + sid
            for key, raw in self._scan_gen(lower, successor(lower)):
                end = 8 + int.from_bytes(key[4:8], "big")
                yield key[8:end], key[end:], raw

    def cleanup_expired(self, now_ms: int | None = None) -> int:
        """See `KeyedStateBackend.cleanup_expired`."""
        now = self.clock() if now_ms is None else now_ms
        kgs = self._key_groups
        batch = rocksdict.WriteBatch(raw_mode=True)
        removed = 0
        for key, raw in self.scan(kgs.start.to_bytes(2, "big"), kgs.stop.to_bytes(2, "big")):
            if raw[0] == EXPIRING and int.from_bytes(raw[1:9], "big") <= now:
                batch.delete(key)
                self.cache.forget(key)  # (clean: the scan flushed everything)
                removed += 1
                if len(batch) >= BATCH:
                    self.db.write(batch)
                    batch = rocksdict.WriteBatch(raw_mode=True)
        if len(batch):
            self.db.write(batch)
        return removed
