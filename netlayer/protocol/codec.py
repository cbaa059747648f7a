"""Sans-io frame codec: bytes in, messages out; messages in, bytes out.

`FrameDecoder.feed` takes whatever the socket delivered and returns the
complete messages in it, keeping at most one incomplete frame. It checks the
length against ``max_frame_size`` as soon as the 4 length bytes are in, and
magic and type as soon as the 13 header bytes are in, so garbage is rejected
without waiting for (or allocating) the announced length. It never holds more
than ``max_frame_size`` bytes of its own. Any violation raises `ProtocolError`;
after that the decoder refuses further input. `FrameDecoder.eof` raises if the
stream ended inside a frame.

No I/O, no clocks, no threads: a decoder belongs to one connection and is used
from one thread (the connection's event loop).

`encode` builds a complete frame for any message. The producer's hot path
uses `finish_buffer_frame` instead: the subpartition builds records directly
behind a reserved `BUFFER_FRAME_HEADER_SIZE`-byte header, so a buffer becomes
a wire frame without a copy. A replay renumbers retained frames with
`finish_buffer_frame` and `restamp_event_frame`.
"""

from __future__ import annotations

import struct
import zlib

from netlayer.protocol.errors import FrameTooLarge, ProtocolError
from netlayer.protocol.frames import (
    BUFFER_PREFIX,
    DEFAULT_MAX_FRAME_SIZE,
    FRAME_HEADER,
    FRAME_HEADER_SIZE,
    MAGIC,
    MAX_U32,
    MAX_U64,
    AddCredit,
    Buffer,
    Close,
    Error,
    Event,
    FrameType,
    Message,
    PartitionRequest,
    PartitionResponse,
)

__all__ = [
    "FrameDecoder",
    "encode",
    "encode_event_frame",
    "finish_buffer_frame",
    "restamp_event_frame",
]

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_TOKEN_SIZE = 16
_REQUEST = struct.Struct(f">III{_TOKEN_SIZE}s")
_RESPONSE = struct.Struct(">II")
_EVENT_PREFIX = struct.Struct(">QB")
_CRC_SEED = {t: zlib.crc32(bytes([t])) for t in FrameType}
_BUFFER_SEED = _CRC_SEED[FrameType.BUFFER]
_EVENT_SEED = _CRC_SEED[FrameType.EVENT]
_MIN_LENGTH = FRAME_HEADER_SIZE - 4
_MAX_STR = 0xFFFF


def _frame(ftype: FrameType, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, _CRC_SEED[ftype])
    return FRAME_HEADER.pack(len(payload) + _MIN_LENGTH, MAGIC, ftype, crc) + payload


def _u32(name: str, value: int) -> int:
    if not 0 <= value <= MAX_U32:
        raise ValueError(f"{name}={value} does not fit in u32")
    return value


def _token(value: bytes) -> bytes:
    if len(value) != _TOKEN_SIZE:
        raise ValueError(f"token of {len(value)} bytes, expected {_TOKEN_SIZE}")
    return value


def _str(value: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > _MAX_STR:
        raise ValueError(f"string of {len(raw)} bytes is longer than {_MAX_STR}")
    return _U16.pack(len(raw)) + raw


def encode(msg: Message) -> bytes:
    """The complete wire frame of ``msg``. Raises ``ValueError`` for out-of-range fields."""
    if isinstance(msg, Buffer):
        if not 0 <= msg.seq <= MAX_U64:
            raise ValueError(f"seq={msg.seq} does not fit in u64")
        prefix = BUFFER_PREFIX.pack(msg.seq, _u32("backlog", msg.backlog))
        return _frame(FrameType.BUFFER, prefix + bytes(msg.data))
    if isinstance(msg, Event):
        return encode_event_frame(msg.seq, msg.kind, msg.payload)
    if isinstance(msg, PartitionRequest):
        fixed = _REQUEST.pack(
            _u32("subpartition", msg.subpartition),
            _u32("consumer_attempt", msg.consumer_attempt),
            _u32("credit", msg.credit),
            _token(msg.token),
        )
        payload = fixed + _str(msg.partition_id)
        if msg.replay_from is not None:
            if not 0 <= msg.replay_from <= MAX_U64:
                raise ValueError(f"replay_from={msg.replay_from} does not fit in u64")
            payload += _U64.pack(msg.replay_from)
        return _frame(FrameType.PARTITION_REQUEST, payload)
    if isinstance(msg, PartitionResponse):
        fixed = _RESPONSE.pack(
            _u32("subpartition", msg.subpartition),
            _u32("producer_attempt", msg.producer_attempt),
        )
        return _frame(FrameType.PARTITION_RESPONSE, fixed + _str(msg.partition_id))
    if isinstance(msg, AddCredit):
        return _frame(FrameType.ADD_CREDIT, _U32.pack(_u32("credit", msg.credit)))
    if isinstance(msg, Error):
        return _frame(FrameType.ERROR, msg.message.encode("utf-8"))
    if isinstance(msg, Close):
        return _frame(FrameType.CLOSE, msg.reason.encode("utf-8"))
    raise TypeError(f"not a netlayer message: {msg!r}")


def encode_event_frame(seq: int, kind: int, payload: bytes) -> bytes:
    """The wire frame of ``Event(seq, kind, payload)``."""
    if not 0 <= seq <= MAX_U64:
        raise ValueError(f"seq={seq} does not fit in u64")
    if not 0 <= kind <= 0xFF:
        raise ValueError(f"event kind {kind} does not fit in u8")
    return _frame(FrameType.EVENT, _EVENT_PREFIX.pack(seq, kind) + payload)


def finish_buffer_frame(frame: bytearray, seq: int, backlog: int) -> None:
    """Fill in the reserved header of a buffer frame built in place.

    ``frame`` holds `BUFFER_FRAME_HEADER_SIZE` placeholder bytes followed by the
    buffer's data; afterwards it is exactly ``encode(Buffer(seq, backlog, data))``.
    """
    BUFFER_PREFIX.pack_into(frame, FRAME_HEADER_SIZE, seq, backlog)
    crc = zlib.crc32(memoryview(frame)[FRAME_HEADER_SIZE:], _BUFFER_SEED)
    FRAME_HEADER.pack_into(frame, 0, len(frame) - 4, MAGIC, FrameType.BUFFER, crc)


def restamp_event_frame(frame: bytearray, seq: int) -> None:
    """Give an event frame (from `encode_event_frame`) the sequence number ``seq``, in place.

    Afterwards it is exactly ``encode(Event(seq, kind, payload))`` (a replay
    sends retained frames again under the new consumer attempt's numbering).
    """
    _U64.pack_into(frame, FRAME_HEADER_SIZE, seq)
    crc = zlib.crc32(memoryview(frame)[FRAME_HEADER_SIZE:], _EVENT_SEED)
    FRAME_HEADER.pack_into(frame, 0, len(frame) - 4, MAGIC, FrameType.EVENT, crc)


def _read_str(payload: memoryview, offset: int, trailer: tuple[int, ...] = (0,)) -> tuple[str, int]:
    """The string at ``offset`` and where it ends; exactly one of ``trailer`` bytes may follow."""
    if len(payload) - offset < 2:
        raise ProtocolError("truncated string length")
    (size,) = _U16.unpack_from(payload, offset)
    end = offset + 2 + size
    if len(payload) - end not in trailer:
        raise ProtocolError(f"string length {size} does not match the frame")
    try:
        return str(payload[offset + 2 : end], "utf-8"), end
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"invalid UTF-8 in frame: {exc}") from None


def _decode_request(payload: memoryview) -> PartitionRequest:
    _check_fixed(payload, _REQUEST.size, "PartitionRequest")
    sub, attempt, credit, token = _REQUEST.unpack_from(payload)
    partition_id, end = _read_str(payload, _REQUEST.size, (0, _U64.size))
    replay_from = _U64.unpack_from(payload, end)[0] if end < len(payload) else None
    return PartitionRequest(partition_id, sub, attempt, credit, replay_from, token)


def _text(payload: memoryview) -> str:
    try:
        return str(payload, "utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"invalid UTF-8 in frame: {exc}") from None


def _check_fixed(payload: memoryview, size: int, name: str) -> None:
    if len(payload) < size:
        raise ProtocolError(f"truncated {name} payload ({len(payload)} < {size} bytes)")


def _decode_payload(ftype: int, payload: memoryview) -> Message:
    if ftype == FrameType.BUFFER:
        _check_fixed(payload, BUFFER_PREFIX.size, "Buffer")
        seq, backlog = BUFFER_PREFIX.unpack_from(payload)
        return Buffer(seq, backlog, bytes(payload[BUFFER_PREFIX.size :]))
    if ftype == FrameType.EVENT:
        _check_fixed(payload, _EVENT_PREFIX.size, "Event")
        seq, kind = _EVENT_PREFIX.unpack_from(payload)
        return Event(seq, kind, bytes(payload[_EVENT_PREFIX.size :]))
    if ftype == FrameType.ADD_CREDIT:
        if len(payload) != _U32.size:
            raise ProtocolError(f"AddCredit payload must be 4 bytes, got {len(payload)}")
        return AddCredit(_U32.unpack_from(payload)[0])
    if ftype == FrameType.PARTITION_REQUEST:
        return _decode_request(payload)
    if ftype == FrameType.PARTITION_RESPONSE:
        _check_fixed(payload, _RESPONSE.size, "PartitionResponse")
        sub, attempt = _RESPONSE.unpack_from(payload)
        return PartitionResponse(_read_str(payload, _RESPONSE.size)[0], sub, attempt)
    if ftype == FrameType.ERROR:
        return Error(_text(payload))
    if ftype == FrameType.CLOSE:
        return Close(_text(payload))
    raise ProtocolError(f"unknown frame type {ftype}")  # pragma: no cover - checked earlier


_TYPES = frozenset(int(t) for t in FrameType)


class FrameDecoder:
    """Incremental decoder for one connection's byte stream (see the module docstring)."""

    __slots__ = ("_buf", "_failed", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < FRAME_HEADER_SIZE:
            raise ValueError(f"max_frame_size must be >= {FRAME_HEADER_SIZE}")
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._failed: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back (always < ``max_frame_size``)."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Decode the complete frames in the stream so far; keep the rest."""
        if self._failed is not None:
            raise ProtocolError(f"decoder already failed: {self._failed}")
        try:
            return self._feed(memoryview(data).cast("B"))
        except ProtocolError as exc:
            self._failed = exc
            self._buf = bytearray()
            raise

    def eof(self) -> None:
        """The stream ended: raise `ProtocolError` if it ended inside a frame."""
        if self._failed is not None:
            raise ProtocolError(f"decoder already failed: {self._failed}")
        if self._buf:
            self._failed = ProtocolError(
                f"stream truncated inside a frame ({len(self._buf)} bytes)"
            )
            self._buf = bytearray()
            raise self._failed

    def _check_header(self, view: memoryview, start: int, available: int) -> int:
        """Validate what is available of the header at ``start``; return the frame's total size."""
        length: int = _U32.unpack_from(view, start)[0]
        total = length + 4
        if total > self.max_frame_size:
            raise FrameTooLarge(f"frame of {total} bytes exceeds the maximum {self.max_frame_size}")
        if length < _MIN_LENGTH:
            raise ProtocolError(f"frame length {length} is shorter than a frame header")
        if available >= 8:
            magic = bytes(view[start + 4 : start + 8])
            if magic != MAGIC:
                if magic[:3] == MAGIC[:3]:
                    raise ProtocolError(f"unsupported protocol version {magic[3]}")
                raise ProtocolError(f"bad magic {magic!r}")
        if available >= 9 and view[start + 8] not in _TYPES:
            raise ProtocolError(f"unknown frame type {view[start + 8]}")
        return total

    def _parse(self, view: memoryview, start: int, end: int) -> Message:
        _, _, ftype, crc = FRAME_HEADER.unpack_from(view, start)
        payload = view[start + FRAME_HEADER_SIZE : end]
        if zlib.crc32(payload, _CRC_SEED[ftype]) != crc:
            raise ProtocolError(f"checksum mismatch in a {FrameType(ftype).name} frame")
        return _decode_payload(ftype, payload)

    def _feed(self, view: memoryview) -> list[Message]:
        out: list[Message] = []
        pos = 0
        n = len(view)
        buf = self._buf
        if buf:
            # Complete the held-back frame first, taking only the bytes it needs.
            if len(buf) < 4:
                take = min(4 - len(buf), n)
                buf += view[:take]
                pos = take
                if len(buf) < 4:
                    return out
            total = self._check_header(memoryview(buf), 0, len(buf))
            take = min(total - len(buf), n - pos)
            buf += view[pos : pos + take]
            pos += take
            self._check_header(memoryview(buf), 0, len(buf))
            if len(buf) < total:
                return out
            out.append(self._parse(memoryview(buf), 0, total))
            self._buf = bytearray()
        while n - pos >= 4:
            total = self._check_header(view, pos, n - pos)
            if n - pos < total:
                break
            out.append(self._parse(view, pos, pos + total))
            pos += total
        if pos < n:
            self._buf = bytearray(view[pos:])
        return out
