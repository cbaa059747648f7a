"""State handles: `ValueState`, `MapState`, `ListState`.

A handle is created once (by `KeyedStateBackend.value_state` and friends)
and acts on the backend's current key, through the backend's `StateAccess`
(`streamer.state.access.KeyedAccess`). Same threading contract as the
backend: the task's thread only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

import orjson
import rocksdict

from streamer.state._layout import ABSENT, check_ttl, encode_value, successor
from streamer.state.entry_cache import MISSING, EntryCache, is_plain


class StateAccess(Protocol):
    """What a handle uses: the current key's prefixes, value decoding and range scans.

    ``streamer.state.access.KeyedAccess`` implements it (a protocol, so this
    module imports nothing of the backend's). ``db`` is the backend's
    ``Rdict``, ``clock`` its TTL clock in milliseconds.
    """

    db: rocksdict.Rdict
    clock: Callable[[], int]
    cache: EntryCache

    def prefix(self, sid: bytes) -> bytes: ...

    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, raw: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...

    def decode(self, raw: bytes, now: int | None = None) -> Any: ...

    def expiry(self, ttl_ms: int | None) -> int | None: ...

    def scan(self, lower: bytes, upper: bytes) -> Iterator[tuple[bytes, bytes]]: ...

    def delete_prefix(self, prefix: bytes) -> None: ...

    def next_seq(self, prefix: bytes) -> int: ...

    def entries_of(self, sid: bytes) -> Iterator[tuple[bytes, bytes, bytes]]: ...


__all__ = ["ListState", "MapState", "ValueState"]


class _StateHandle:
    __slots__ = ("_access", "_name", "_sid", "_ttl_ms")

    def __init__(self, access: StateAccess, name: str, sid: int, ttl_ms: int | None):
        check_ttl(ttl_ms)
        self._access = access
        self._name = name
        self._sid = sid.to_bytes(2, "big")
        self._ttl_ms = ttl_ms

    @property
    def name(self) -> str:
        """The state's name."""
        return self._name

    @property
    def ttl_ms(self) -> int | None:
        """Time to live of entries written through this handle (None: forever)."""
        return self._ttl_ms

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._name!r}, ttl_ms={self._ttl_ms})"


class ValueState(_StateHandle):
    """One orjson value per key."""

    __slots__ = ()

    def value(self, default: Any = None) -> Any:
        """The current key's value, or ``default`` when absent or expired."""
        access = self._access
        key = access.prefix(self._sid)
        if self._ttl_ms is None:
            value = access.cache.get_value(key)  # held plain, or decoded once here
            if value is not MISSING:
                return default if value is ABSENT else value
        raw = access.get(key)
        if raw is None:
            return default
        value = access.decode(raw)
        return default if value is ABSENT else value

    def update(self, value: Any) -> None:
        """Set the current key's value (restarting its TTL)."""
        access = self._access
        if self._ttl_ms is None and is_plain(value):
            access.cache.put_value(access.prefix(self._sid), value)  # encoded at the flush
            return
        access.put(access.prefix(self._sid), encode_value(value, access.expiry(self._ttl_ms)))

    def clear(self) -> None:
        """Remove the current key's value."""
        self._access.delete(self._access.prefix(self._sid))


class MapState(_StateHandle):
    """A map per key from orjson-able user keys to orjson values.

    User keys are stored as ``orjson.dumps(k, option=OPT_SORT_KEYS)`` and
    iterate in byte order of that encoding (so ``10`` sorts before ``9``);
    they come back as ``orjson.loads`` of it (a tuple key comes back a list).
    """

    __slots__ = ()

    @staticmethod
    def _user_key(key: Any) -> bytes:
        try:
            return orjson.dumps(key, option=orjson.OPT_SORT_KEYS)
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"cannot use {type(key).__name__} as a map key: {exc}") from None

    def get(self, key: Any, default: Any = None) -> Any:
        """The value under ``key``, or ``default`` when absent or expired."""
        raw = self._access.get(self._access.prefix(self._sid) + self._user_key(key))
        if raw is None:
            return default
        value = self._access.decode(raw)
        return default if value is ABSENT else value

    def put(self, key: Any, value: Any) -> None:
        """Set ``key`` to ``value`` (restarting that entry's TTL)."""
        self._access.put(
            self._access.prefix(self._sid) + self._user_key(key),
            encode_value(value, self._access.expiry(self._ttl_ms)),
        )

    def put_all(self, entries: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> None:
        """Put several entries in one atomic write (they reach RocksDB in one batch)."""
        prefix = self._access.prefix(self._sid)
        expiry = self._access.expiry(self._ttl_ms)
        pairs = entries.items() if isinstance(entries, Mapping) else entries
        encoded = [(prefix + self._user_key(k), encode_value(v, expiry)) for k, v in pairs]
        for key, raw in encoded:
            self._access.put(key, raw)

    def remove(self, key: Any) -> None:
        """Remove ``key`` (no error when absent)."""
        self._access.delete(self._access.prefix(self._sid) + self._user_key(key))

    def contains(self, key: Any) -> bool:
        """Whether ``key`` is present and not expired."""
        raw = self._access.get(self._access.prefix(self._sid) + self._user_key(key))
        return raw is not None and self._access.decode(raw) is not ABSENT

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    def _entries(
        self, start: bytes = b"", stop: bytes | None = None
    ) -> Iterator[tuple[bytes, Any]]:
        """Entries whose encoded user key is in ``[start, stop)`` (None: to the end)."""
        prefix = self._access.prefix(self._sid)
        # the clock only matters to entries with a TTL (decode reads it itself otherwise)
        now = self._access.clock() if self._ttl_ms is not None else None
        skip = len(prefix)
        decode = self._access.decode
        upper = successor(prefix) if stop is None else prefix + stop
        for key, raw in self._access.scan(prefix + start, upper):
            value = decode(raw, now)
            if value is not ABSENT:
                yield key[skip:], value

    def items_between(self, start: Any, stop: Any) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs whose user key's encoding lies in ``[enc(start),
        enc(stop))``, in that byte order: one range scan, not a scan of the map.

        Byte order of the encoding is the natural order only for some keys: strings
        of one fixed width compare like their text (``f"{n:020d}"``), numbers do not.
        """
        for user_key, value in self._entries(self._user_key(start), self._user_key(stop)):
            yield orjson.loads(user_key), value

    def items_of_all_keys(self) -> Iterator[tuple[bytes, Any, Any]]:
        """``(key bytes, map key, value)`` of every live entry of every key, in one scan
        (key-group order, then key, then map key). Ignores the current key; for
        whole-state work such as rebuilding an index on restore."""
        now = self._access.clock() if self._ttl_ms is not None else None
        decode = self._access.decode
        for key, user_key, raw in self._access.entries_of(self._sid):
            value = decode(raw, now)
            if value is not ABSENT:
                yield key, orjson.loads(user_key), value

    def items(self) -> Iterator[tuple[Any, Any]]:
        """``(key, value)`` pairs of the current key's map, in user-key byte order."""
        for user_key, value in self._entries():
            yield orjson.loads(user_key), value

    def keys(self) -> Iterator[Any]:
        """The user keys, in byte order of their encoding."""
        for user_key, _ in self._entries():
            yield orjson.loads(user_key)

    def __iter__(self) -> Iterator[Any]:
        return self.keys()

    def values(self) -> Iterator[Any]:
        """The values, in user-key order."""
        for _, value in self._entries():
            yield value

    def is_empty(self) -> bool:
        """Whether the current key's map has no live entry."""
        return next(self._entries(), None) is None

    def clear(self) -> None:
        """Remove every entry of the current key's map."""
        self._access.delete_prefix(self._access.prefix(self._sid))


class ListState(_StateHandle):
    """A list per key of orjson values; each element is its own entry (and TTL)."""

    __slots__ = ()

    def get(self) -> list[Any]:
        """The current key's live elements, in insertion order (``[]`` when none)."""
        prefix = self._access.prefix(self._sid)
        now = self._access.clock()
        decode = self._access.decode
        out = []
        for _, raw in self._access.scan(prefix, successor(prefix)):
            value = decode(raw, now)
            if value is not ABSENT:
                out.append(value)
        return out

    def add(self, value: Any) -> None:
        """Append ``value``."""
        prefix = self._access.prefix(self._sid)
        seq = self._access.next_seq(prefix)
        self._access.put(
            prefix + seq.to_bytes(8, "big"), encode_value(value, self._access.expiry(self._ttl_ms))
        )

    def add_all(self, values: Iterable[Any]) -> None:
        """Append every element of ``values`` in one atomic write."""
        prefix = self._access.prefix(self._sid)
        seq = self._access.next_seq(prefix)
        expiry = self._access.expiry(self._ttl_ms)
        encoded = [encode_value(value, expiry) for value in values]
        for seq_no, raw in enumerate(encoded, start=seq):
            self._access.put(prefix + seq_no.to_bytes(8, "big"), raw)

    def update(self, values: Iterable[Any]) -> None:
        """Replace the list with ``values`` in one atomic write."""
        prefix = self._access.prefix(self._sid)
        expiry = self._access.expiry(self._ttl_ms)
        encoded = [encode_value(value, expiry) for value in values]
        for key in [key for key, _ in self._access.scan(prefix, successor(prefix))]:
            self._access.delete(key)
        for seq_no, raw in enumerate(encoded):
            self._access.put(prefix + seq_no.to_bytes(8, "big"), raw)

    def clear(self) -> None:
        """Remove every element."""
        self._access.delete_prefix(self._access.prefix(self._sid))
