"""Sans-io codec of the control plane: bytes in, messages out; messages in, bytes out.

Wire format. Every frame is::

    length:u32 | magic b"STRC" | version:u8 | payload (orjson)

``length`` is big-endian and counts the bytes after itself (magic, version and
payload). The payload is one JSON object, the envelope::

    {"k": kind, "i": msg_id, "r": reply_to, "b": body}            notification / reply
    {"k": kind, "i": msg_id, "r": 0, "w": true, "b": body}        request
    {"k": "error", "i": msg_id, "r": request_id, "b": {"message": str}}

- ``k`` a registered kind (`streamer.rpc.messages`); ``b`` must fit its schema.
- ``i`` the sender's message id, an int > 0, unique per connection and direction.
- ``r`` the id of the peer's request this message answers; 0 when it is not a reply.
- ``w`` (wants reply) is present and true only on requests: the sender awaits
  exactly one reply (a registered reply kind, or ``error``). Absent or false:
  a notification (``r`` == 0) or a reply (``r`` > 0). A reply never wants a
  reply, and ``error`` is always a reply. The flag is on the wire, not in the
  registry, so a kind may be sent both ways (the registry's ``replies`` only
  says which reply kinds a request of that kind may get).
- no other envelope keys. Changing any of this bumps ``PROTOCOL_VERSION``.

`RpcDecoder.feed` takes whatever the socket delivered and returns the complete
messages in it, holding back at most one incomplete frame. It checks the length
against ``max_frame_size`` as soon as the 4 length bytes are in, and magic and
version byte by byte as they arrive, so garbage is rejected without waiting for
(or buffering) the announced length: the decoder never holds ``max_frame_size``
bytes or more. Any violation raises `RpcProtocolError` with a one-line reason
(`RpcSchemaError` for a body that fails its schema); the messages already
decoded from the same ``feed`` call are discarded with the stream, and the
decoder refuses further input. `RpcDecoder.eof` raises if the stream ended
inside a frame.

`encode` validates the envelope and the body against the registry and raises
`RpcSchemaError` (a ``ValueError``) before producing any bytes.

No I/O, no clocks, no threads, no logging: a decoder belongs to one connection
and is used from one thread (the connection's event loop). Messages come out in
the order their frames were fed.
"""

from __future__ import annotations

import struct
from typing import Any, TypeGuard

import orjson

from streamer.rpc.errors import RpcFrameTooLarge, RpcProtocolError, RpcSchemaError
from streamer.rpc.messages import ERROR_KIND, REGISTRY, Message, Registry

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEADER_SIZE",
    "MAGIC",
    "PROTOCOL_VERSION",
    "RpcDecoder",
    "decode_payload",
    "encode",
]

MAGIC = b"STRC"
PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
HEADER_SIZE = 9
"""length (4) + magic (4) + version (1)."""

_HEADER = struct.Struct(">I4sB")
_U32 = struct.Struct(">I")
_MIN_LENGTH = HEADER_SIZE - 4 + 2  # magic + version + the smallest object, "{}"
_ENVELOPE_KEYS = frozenset({"k", "i", "r", "w", "b"})


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_envelope(kind: str, msg_id: Any, reply_to: Any, wants_reply: Any) -> None:
    if not _is_int(msg_id) or msg_id <= 0:
        raise RpcSchemaError(kind, None, f"message id must be an int > 0, got {msg_id!r}")
    if not _is_int(reply_to) or reply_to < 0:
        raise RpcSchemaError(kind, None, f"reply_to must be an int >= 0, got {reply_to!r}")
    if not isinstance(wants_reply, bool):
        raise RpcSchemaError(kind, None, f"wants_reply must be a bool, got {wants_reply!r}")
    if reply_to and wants_reply:
        raise RpcSchemaError(kind, None, "a reply cannot want a reply")
    if kind == ERROR_KIND and not reply_to:
        raise RpcSchemaError(kind, None, "an error must be a reply (r > 0)")


def _unserializable(kind: str, body: dict[str, Any], exc: Exception) -> RpcSchemaError:
    for name, value in body.items():
        try:
            orjson.dumps(value)
        except orjson.JSONEncodeError as field_exc:
            return RpcSchemaError(kind, name, f"not JSON-serializable: {field_exc}")
    return RpcSchemaError(kind, None, f"not JSON-serializable: {exc}")


def encode(
    message: Message,
    *,
    registry: Registry | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> bytes:
    """The complete wire frame of ``message``.

    Raises `RpcSchemaError` for an unknown kind, a bad envelope or a body that
    does not fit the kind's schema, and `RpcFrameTooLarge` when the frame
    would exceed ``max_frame_size`` (the peer would reject it).
    """
    reg = REGISTRY if registry is None else registry
    kind = message.kind
    if not isinstance(kind, str):
        raise RpcSchemaError(repr(kind), None, "message kind must be a str")
    _check_envelope(kind, message.msg_id, message.reply_to, message.wants_reply)
    body = reg.validate(kind, message.body)
    envelope: dict[str, Any] = {"k": kind, "i": message.msg_id, "r": message.reply_to}
    if message.wants_reply:
        envelope["w"] = True
    envelope["b"] = body
    try:
        payload = orjson.dumps(envelope)
    except orjson.JSONEncodeError as exc:
        raise _unserializable(kind, body, exc) from None
    length = HEADER_SIZE - 4 + len(payload)
    if length + 4 > max_frame_size:
        raise RpcFrameTooLarge(
            f"{kind} message of {length + 4} bytes exceeds the maximum frame size {max_frame_size}"
        )
    return _HEADER.pack(length, MAGIC, PROTOCOL_VERSION) + payload


def decode_payload(payload: bytes | bytearray | memoryview, registry: Registry) -> Message:
    """The message in one frame's payload (the bytes after the version byte)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise RpcProtocolError(f"payload is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise RpcProtocolError(f"payload must be a JSON object, got {_type_name(obj)}")
    extra = obj.keys() - _ENVELOPE_KEYS
    if extra:
        raise RpcProtocolError(f"unexpected envelope keys {sorted(extra)}")
    kind = obj.get("k")
    if not isinstance(kind, str):
        raise RpcProtocolError(f"envelope 'k' must be a str, got {_type_name(kind)}")
    msg_id = obj.get("i")
    if not _is_int(msg_id) or msg_id <= 0:
        raise RpcProtocolError(f"{kind}: envelope 'i' must be an int > 0, got {msg_id!r}")
    reply_to = obj.get("r")
    if not _is_int(reply_to) or reply_to < 0:
        raise RpcProtocolError(f"{kind}: envelope 'r' must be an int >= 0, got {reply_to!r}")
    wants_reply = obj.get("w", False)
    if not isinstance(wants_reply, bool):
        raise RpcProtocolError(f"{kind}: envelope 'w' must be a bool, got {wants_reply!r}")
    if "b" not in obj:
        raise RpcProtocolError(f"{kind}: envelope has no body 'b'")
    if reply_to and wants_reply:
        raise RpcProtocolError(f"{kind}: a reply cannot want a reply")
    if kind == ERROR_KIND and not reply_to:
        raise RpcProtocolError("error: an error must be a reply (r > 0)")
    body = registry.validate(kind, obj["b"])
    return Message(kind, msg_id, body, reply_to, wants_reply)


class RpcDecoder:
    """Incremental decoder for one connection's byte stream (see the module docstring)."""

    __slots__ = ("_buf", "_failed", "max_frame_size", "registry")

    def __init__(
        self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE, *, registry: Registry | None = None
    ) -> None:
        if max_frame_size < HEADER_SIZE + 2:
            raise ValueError(f"max_frame_size must be >= {HEADER_SIZE + 2}")
        self.max_frame_size = max_frame_size
        self.registry = REGISTRY if registry is None else registry
        self._buf = bytearray()
        self._failed: RpcProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete frame held back (always < ``max_frame_size``)."""
        return len(self._buf)

    @property
    def failed(self) -> bool:
        """True once the decoder has raised; it refuses all further input."""
        return self._failed is not None

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Decode the complete frames in the stream so far; hold back the rest."""
        if self._failed is not None:
            raise RpcProtocolError(f"decoder already failed: {self._failed}")
        try:
            with memoryview(data) as view:
                return self._feed(view.cast("B"))
        except RpcProtocolError as exc:
            self._failed = exc
            self._buf = bytearray()
            raise

    def eof(self) -> None:
        """The stream ended: raise `RpcProtocolError` if it ended inside a frame."""
        if self._failed is not None:
            raise RpcProtocolError(f"decoder already failed: {self._failed}")
        if self._buf:
            held = len(self._buf)
            self._buf = bytearray()
            self._failed = RpcProtocolError(f"stream ended inside a frame ({held} bytes held)")
            raise self._failed

    def _check_header(self, head: bytes) -> int:
        """Validate the (possibly partial, >= 4 bytes) header; return the frame's total size."""
        length: int = _U32.unpack_from(head)[0]
        total = length + 4
        if total > self.max_frame_size:
            raise RpcFrameTooLarge(
                f"frame of {total} bytes exceeds the maximum frame size {self.max_frame_size}"
            )
        if length < _MIN_LENGTH:
            raise RpcProtocolError(f"frame length {length} is too short for a message")
        magic = head[4:8]
        if magic != MAGIC[: len(magic)]:
            raise RpcProtocolError(f"bad magic {magic!r} (expected {MAGIC!r})")
        if len(head) >= HEADER_SIZE and head[8] != PROTOCOL_VERSION:
            raise RpcProtocolError(
                f"unsupported rpc protocol version {head[8]} (this side speaks {PROTOCOL_VERSION})"
            )
        return total

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
            total = self._check_header(bytes(buf[:HEADER_SIZE]))
            take = min(total - len(buf), n - pos)
            buf += view[pos : pos + take]
            pos += take
            self._check_header(bytes(buf[:HEADER_SIZE]))
            if len(buf) < total:
                return out
            with memoryview(buf) as held:
                out.append(decode_payload(held[HEADER_SIZE:total], self.registry))
            self._buf = bytearray()
        while n - pos >= 4:
            total = self._check_header(bytes(view[pos : pos + HEADER_SIZE]))
            if n - pos < total:
                break
            out.append(decode_payload(view[pos + HEADER_SIZE : pos + total], self.registry))
            pos += total
        if pos < n:
            self._buf = bytearray(view[pos:])
        return out
