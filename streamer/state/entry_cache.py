"""The write-back cache of one keyed state backend's point entries.

Point reads and writes (`get`, `put`, `delete`) go through a dict of raw entries;
writes reach RocksDB in one ``WriteBatch`` at `flush`, which the backend runs before
every scan, before a snapshot, at close and when the cache is full (`LIMIT` entries).
So a scan, a snapshot and the database always see every write made before them,
several writes between two flushes land atomically, and a hot key costs a dict
lookup instead of two RocksDB calls (issue 14: a count task spent a quarter of its
time in them). Raw entries keep their TTL header, so expiry works as before, and a
value decoded from one is always a fresh object.

*Plain values* (`get_value`, `put_value`): a value without TTL that is an ``int``
(64-bit), a finite ``float``, a ``bool`` or ``None`` is immutable, so it is kept
decoded and encoded only when it is flushed: a counter updated a thousand times
between two checkpoints is encoded once, and reading it decodes nothing. A key held
as a plain value wins over its raw entry; `put` and `delete` of the raw entry drop it.

Ownership: it uses, but does not own, the ``Rdict``. Threading: the owning task's
thread only.
"""

from __future__ import annotations

from typing import Any

import orjson
import rocksdict

from streamer.state._layout import ABSENT, PLAIN, encode_value

__all__ = ["MISSING", "EntryCache", "is_plain"]

MISSING: Any = object()
"""`get_value`: the entry has a TTL header (read its raw entry, which may have expired)."""

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson encodes


def is_plain(value: Any) -> bool:
    """Whether ``value`` can be held decoded (immutable, and JSON as it is)."""
    cls = value.__class__
    if cls is int:
        return bool(_INT_MIN <= value <= _INT_MAX)
    if cls is float:
        return bool(value - value == 0.0)  # not inf or nan (orjson writes those as null)
    return cls is bool or value is None


class EntryCache:
    """Raw entries and plain values of one backend, written back at `flush`."""

    LIMIT = 50_000
    """Entries held (raw and plain); past it the cache is flushed and emptied."""

    __slots__ = ("_db", "_dirty", "_raw", "limit", "values")

    def __init__(self, db: rocksdict.Rdict) -> None:
        self._db = db
        self.limit = self.LIMIT
        self._raw: dict[bytes, bytes | None] = {}  # None: absent or deleted
        self.values: dict[bytes, Any] = {}
        """Plain values by data key (`ABSENT`: read as absent); read it directly."""
        self._dirty: set[bytes] = set()  # entries not written to RocksDB yet

    def get(self, key: bytes) -> bytes | None:
        """The raw entry at ``key`` (None: absent), from the cache when it holds it."""
        values = self.values
        if key in values:
            return _encode(values[key])
        raw_cache = self._raw
        if key in raw_cache:
            return raw_cache[key]
        raw: bytes | None = self._db.get(key)
        self._make_room(key)
        raw_cache[key] = raw
        return raw

    def get_value(self, key: bytes) -> Any:
        """The value at ``key`` without TTL (`ABSENT` when there is no entry), decoded
        once: a plain value is then held decoded, anything else is returned as a fresh
        object and not held; `MISSING` when the entry has a TTL header: read it with
        `get` then."""
        values = self.values
        if key in values:
            return values[key]
        raw = self.get(key)
        if raw is None:
            value = ABSENT
        elif raw[0] != PLAIN:
            return MISSING
        else:
            value = orjson.loads(raw[1:])
            if not is_plain(value):
                return value  # a container: the caller's own copy
        self._raw.pop(key, None)
        values[key] = value
        return value

    def put(self, key: bytes, raw: bytes) -> None:
        """Set the raw entry at ``key`` (written to RocksDB at the next `flush`)."""
        self._make_room(key)
        self.values.pop(key, None)
        self._raw[key] = raw
        self._dirty.add(key)

    def put_value(self, key: bytes, value: Any) -> None:
        """Set ``key`` to plain ``value`` (the caller checked `is_plain`)."""
        self._make_room(key)
        self._raw.pop(key, None)
        self.values[key] = value
        self._dirty.add(key)

    def delete(self, key: bytes) -> None:
        """Remove the entry at ``key`` (from RocksDB at the next `flush`)."""
        self._make_room(key)
        self.values.pop(key, None)
        self._raw[key] = None
        self._dirty.add(key)

    def forget(self, key: bytes) -> None:
        """Drop a clean entry that RocksDB no longer holds (a delete written past the cache)."""
        self._raw.pop(key, None)
        self.values.pop(key, None)

    def flush(self) -> None:
        """Write every change to RocksDB in one batch (the cache stays warm)."""
        dirty = self._dirty
        if not dirty:
            return
        batch = rocksdict.WriteBatch(raw_mode=True)
        values, raw_cache = self.values, self._raw
        for key in dirty:
            raw = _encode(values[key]) if key in values else raw_cache[key]
            if raw is None:
                batch.delete(key)
            else:
                batch.put(key, raw)
        self._db.write(batch)
        dirty.clear()

    def _make_room(self, key: bytes) -> None:
        if len(self._raw) + len(self.values) < self.limit:
            return
        if key not in self._raw and key not in self.values:
            self.flush()
            self._raw.clear()
            self.values.clear()


def _encode(value: Any) -> bytes | None:
    """The raw entry of a plain value; None for `ABSENT`."""
    return None if value is ABSENT else encode_value(value, None)
