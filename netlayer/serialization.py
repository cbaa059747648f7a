"""Spanning record serialization: records <-> fixed-capacity buffers.

An entry on the wire is ``length:u32 (big-endian) | orjson bytes``. The top bit
of the length marks a *batch*: its bytes are a JSON array whose elements are
records (the serializer joins the records' orjson bytes, so a record is still
encoded once, when it is added, and the consumer decodes a whole batch with one
``orjson.loads``). Entries are packed back to back into buffers of at most
``buffer_size`` data bytes. Records that fit in the room left are batched; a
buffer is finished when the next record does not fit. A record too big for a
buffer of its own fills the room left and *spans* into the next buffer(s); the 4
length bytes may span too.

`SpanningRecordSerializer` (producer side, one per subpartition) appends
records to the current buffer and hands back the buffers that filled up.
`RecordDeserializer` (consumer side, one per input channel) takes buffers in
sequence order and returns the complete records; it keeps the partial entry
at the end of a buffer until the rest arrives, and `clear` drops it (when the
producer is lost, its rest will never come).

Both are plain single-threaded objects without I/O. Ordering contract: records
come out of the deserializer in exactly the order they went into the
serializer, provided the buffers are fed in the order they were produced.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

__all__ = [
    "BATCH_OVERHEAD",
    "DEFAULT_BUFFER_SIZE",
    "DEFAULT_MAX_RECORD_SIZE",
    "RecordDeserializer",
    "RecordTooLarge",
    "SpanningRecordSerializer",
    "length_prefix",
]

DEFAULT_BUFFER_SIZE = 32 * 1024
DEFAULT_MAX_RECORD_SIZE = 256 * 1024 * 1024

_U32 = struct.Struct(">I")
_PREFIXES = [i.to_bytes(4, "big") for i in range(4096)]
_BATCH = 1 << 31
"""Set in a length prefix: the payload is a JSON array of records, not one record."""
_SIZE = _BATCH - 1
BATCH_OVERHEAD = 6  # a batch's length prefix and its brackets


def length_prefix(size: int) -> bytes:
    """The 4-byte big-endian length prefix of a record payload of ``size`` bytes."""
    return _PREFIXES[size] if size < 4096 else _U32.pack(size)


class RecordTooLarge(ValueError):
    """A record's length prefix exceeds the deserializer's ``max_record_size``."""


class SpanningRecordSerializer:
    """Builds buffers of length-prefixed records and batches, spanning big records.

    Each buffer is a ``bytearray`` that starts with ``header_size`` reserved
    bytes (the subpartition uses them for the frame header) followed by at
    most ``buffer_size`` data bytes. Finished buffers are returned to the
    caller, who owns them from then on, as ``(buffer, n_records)`` where
    ``n_records`` counts the records that *end* in that buffer (so each record
    is counted exactly once).

    Records that fit are gathered into a batch (one JSON array on the wire, so
    the consumer decodes it with one call) until the batch would overflow the
    room left; then the batch is written and the buffer is finished, a little
    short of full. A record too big for a buffer of its own is written alone
    and spans. A record's bytes are taken when it is added: changing the value
    afterwards changes nothing that was sent.
    """

    __slots__ = ("_batch", "_batch_bytes", "_limit", "buffer_size", "current", "header_size",
                 "records")  # fmt: skip

    def __init__(self, buffer_size: int = DEFAULT_BUFFER_SIZE, header_size: int = 0) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be >= 1")
        self.buffer_size = buffer_size
        self.header_size = header_size
        self._limit = header_size + buffer_size - BATCH_OVERHEAD
        self.current = bytearray(header_size)
        """The buffer being filled (header placeholder + data)."""
        self._batch: list[bytes] = []
        """Records added but not yet written to `current` (they will end in it)."""
        self._batch_bytes = 0
        """Their bytes, a separator each included."""
        self.records = 0
        """Records that end in `current` (the batch's included)."""

    @property
    def is_empty(self) -> bool:
        """True when `current` and the batch hold no data."""
        return len(self.current) == self.header_size and not self._batch

    @property
    def pending_bytes(self) -> int:
        """Data bytes in `current` and the batch."""
        return len(self.current) - self.header_size + self._batch_bytes

    def serialize(self, record: Any) -> list[tuple[bytearray, int]] | None:
        """`add` the orjson encoding of ``record``."""
        return self.add(orjson.dumps(record))

    def add(self, payload: bytes) -> list[tuple[bytearray, int]] | None:
        """Append one record (its orjson bytes); return the buffers that filled up, if any.

        Fast path: the record fits in the room left, nothing is returned.
        """
        size = len(payload)
        if len(self.current) + self._batch_bytes + size <= self._limit:
            self._batch.append(payload)
            self._batch_bytes += size + 1
            self.records += 1
            return None
        return self._add_slow(payload)

    def _add_slow(self, payload: bytes) -> list[tuple[bytearray, int]]:
        out: list[tuple[bytearray, int]] = []
        self._write_batch()
        if len(self.current) > self.header_size:
            out.append((self.current, self.records))
            self.current = bytearray(self.header_size)
            self.records = 0
        if self.header_size + len(payload) <= self._limit:
            self._batch.append(payload)
            self._batch_bytes = len(payload) + 1
            self.records = 1
        else:
            out += self._span(length_prefix(len(payload)) + payload)
        return out

    def _write_batch(self) -> None:
        """Write the batch into `current` (it fits: `add` keeps it so)."""
        batch = self._batch
        if not batch:
            return
        cur = self.current
        if len(batch) == 1:
            cur += length_prefix(len(batch[0]))
            cur += batch[0]
        else:
            body = b",".join(batch)
            cur += _U32.pack(_BATCH | (len(body) + 2))
            cur += b"["
            cur += body
            cur += b"]"
        self._batch = []
        self._batch_bytes = 0

    def _span(self, record: bytes) -> list[tuple[bytearray, int]]:
        out: list[tuple[bytearray, int]] = []
        view = memoryview(record)
        total = len(view)
        pos = 0
        cur = self.current
        records = self.records
        limit = self.header_size + self.buffer_size
        while True:
            take = min(limit - len(cur), total - pos)
            cur += view[pos : pos + take]
            pos += take
            if pos == total:
                break
            out.append((cur, records))
            records = 0
            cur = bytearray(self.header_size)
        self.current = cur
        self.records = records + 1
        return out

    def flush(self) -> tuple[bytearray, int] | None:
        """Finish the current buffer if it holds data: ``(buffer, n_records)``."""
        self._write_batch()
        if len(self.current) == self.header_size:
            return None
        out = (self.current, self.records)
        self.current = bytearray(self.header_size)
        self.records = 0
        return out

    def reset(self) -> int:
        """Discard the current buffer and batch; return how many records ended in them."""
        dropped = self.records
        self.current = bytearray(self.header_size)
        self._batch = []
        self._batch_bytes = 0
        self.records = 0
        return dropped


class RecordDeserializer:
    """Reassembles records from the buffers of one channel (see the module docstring).

    `feed` raises `RecordTooLarge` for a length prefix over ``max_record_size``
    (never allocating it) and ``orjson.JSONDecodeError`` (a ``ValueError``) for
    bytes that are not JSON; after an error call `clear` before reusing it.
    """

    __slots__ = ("_partial", "max_record_size")

    def __init__(self, max_record_size: int = DEFAULT_MAX_RECORD_SIZE) -> None:
        self.max_record_size = max_record_size
        self._partial: bytearray | None = None

    @property
    def has_partial(self) -> bool:
        """True while a record is incomplete (waiting for the next buffer)."""
        return self._partial is not None

    @property
    def partial_bytes(self) -> int:
        """Bytes held of the incomplete record (length prefix included)."""
        return 0 if self._partial is None else len(self._partial)

    def clear(self) -> bool:
        """Drop the incomplete record, if any; return whether there was one."""
        had = self._partial is not None
        self._partial = None
        return had

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        """The records completed by ``data`` (the next buffer of the channel), in order."""
        if data.__class__ is not bytes:
            data = bytes(data)  # slices of bytes are cheaper than of a memoryview
        out: list[Any] = []
        n = len(data)
        pos = 0
        if self._partial is not None:
            pos = self._resume(data, out)
            if self._partial is not None:
                return out
        loads = orjson.loads
        unpack = _U32.unpack_from
        append = out.append
        while n - pos >= 4:
            size = unpack(data, pos)[0]
            end = pos + 4 + (size & _SIZE)
            if end > n:
                break
            if size & _BATCH:
                out += _records_of(loads(data[pos + 4 : end]))
            else:
                append(loads(data[pos + 4 : end]))
            pos = end
        if pos < n:
            self._partial = bytearray(data[pos:])
            if n - pos >= 4:
                self._check_size(self._partial)
        return out

    def _check_size(self, partial: bytearray) -> int:
        size: int = _U32.unpack_from(partial)[0] & _SIZE
        if size > self.max_record_size:
            self._partial = None
            raise RecordTooLarge(f"record of {size} bytes exceeds {self.max_record_size}")
        return size

    def _resume(self, data: bytes, out: list[Any]) -> int:
        partial = self._partial
        assert partial is not None
        pos = 0
        if len(partial) < 4:
            pos = min(4 - len(partial), len(data))
            partial += data[:pos]
            if len(partial) < 4:
                return pos
        need = 4 + self._check_size(partial) - len(partial)
        take = min(need, len(data) - pos)
        partial += data[pos : pos + take]
        pos += take
        if take == need:
            self._partial = None
            value = orjson.loads(memoryview(partial)[4:])
            if partial[0] & 0x80:  # the batch bit
                out += _records_of(value)
            else:
                out.append(value)
        return pos


def _records_of(batch: Any) -> list[Any]:
    """The records of a decoded batch entry; ``ValueError`` if it is not a JSON array."""
    if batch.__class__ is not list:
        raise ValueError(f"a batch entry holds a JSON {type(batch).__name__}, not an array")
    return batch
