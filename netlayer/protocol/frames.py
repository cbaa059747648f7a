"""Wire messages of the data plane (plain, immutable data; no I/O).

Every frame on the wire is::

    length:u32 | magic:4 | type:u8 | crc32:u32 | payload

all integers big-endian. ``length`` counts the bytes after itself (magic to end
of payload). ``magic`` is ``b"SNL"`` followed by the protocol version byte, so
a peer speaking another version is rejected as a bad magic. ``crc32`` is
``zlib.crc32`` over the type byte and the payload: TCP already protects
against line noise, the CRC makes any corruption (a bug, a wrong peer) a clean
protocol error instead of a garbled record.

Payloads (``str`` fields are a u16 byte length then UTF-8):

==================  =====================================================
PartitionRequest    subpartition:u32 consumer_attempt:u32 credit:u32 token:16
                    partition_id:str [replay_from:u64]
PartitionResponse   subpartition:u32 producer_attempt:u32 partition_id:str
AddCredit           credit:u32
Buffer              seq:u64 backlog:u32 data (the rest)
Event               seq:u64 kind:u8 payload (the rest)
Error               message (UTF-8, the rest)
Close               reason (UTF-8, the rest)
==================  =====================================================

``token`` is the consumer attempt's `netlayer.protocol.handshake.consumer_token`
(zeros when the producer does not authenticate). Version 2 added it, and the
authentication handshake (`netlayer.protocol.handshake`) that precedes the
first frame of every connection.

``replay_from`` is an optional trailing field (present iff the payload is 8
bytes longer than the string ends): a request without it is exactly the frame
of version 1 before the field existed, so no version bump was needed. A
producer that cannot replay answers with an ``Error`` whose message starts
with `CANNOT_REPLAY` (``"cannot replay from checkpoint <id>: <why>"``).

Consumer -> producer: PartitionRequest, AddCredit, Close.
Producer -> consumer: PartitionResponse (first frame of a connection), Buffer,
Event, Error, Close. Buffers and events share one sequence-number space per
(subpartition, consumer attempt) starting at 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "BUFFER_FRAME_HEADER_SIZE",
    "CANNOT_REPLAY",
    "DEFAULT_MAX_FRAME_SIZE",
    "FRAME_HEADER_SIZE",
    "MAGIC",
    "MAX_U32",
    "MAX_U64",
    "PROTOCOL_VERSION",
    "AddCredit",
    "Buffer",
    "Close",
    "Error",
    "Event",
    "FrameType",
    "Message",
    "PartitionRequest",
    "PartitionResponse",
]

PROTOCOL_VERSION = 2
MAGIC = b"SNL" + bytes([PROTOCOL_VERSION])

FRAME_HEADER = struct.Struct(">I4sBI")
"""length, magic, type, crc32."""
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 13

BUFFER_PREFIX = struct.Struct(">QI")
"""Buffer payload prefix: seq, backlog."""
BUFFER_FRAME_HEADER_SIZE = FRAME_HEADER_SIZE + BUFFER_PREFIX.size  # 25

DEFAULT_MAX_FRAME_SIZE = 1 << 20
"""Default limit for one frame, header included (buffers are 32 KiB by default)."""

MAX_U32 = (1 << 32) - 1
MAX_U64 = (1 << 64) - 1

CANNOT_REPLAY = "cannot replay from checkpoint"
"""How a producer's `Error` refusing a replay begins (then `` <id>: <why>``)."""


class FrameType(IntEnum):
    """The type byte of a frame."""

    PARTITION_REQUEST = 1
    PARTITION_RESPONSE = 2
    ADD_CREDIT = 3
    BUFFER = 4
    EVENT = 5
    ERROR = 6
    CLOSE = 7


@dataclass(frozen=True, slots=True)
class PartitionRequest:
    """Consumer attempt ``consumer_attempt`` asks for a subpartition, granting ``credit``.

    ``replay_from``: the checkpoint the consumer restored; the producer first
    sends again what it retained after that checkpoint's barrier (``None``:
    no replay, the subpartition restarts from what is emitted next).
    ``token``: proves the request comes from consumer attempt ``consumer_attempt``
    (`netlayer.protocol.handshake.consumer_token`).
    """

    partition_id: str
    subpartition: int
    consumer_attempt: int
    credit: int
    replay_from: int | None = None
    token: bytes = bytes(16)


@dataclass(frozen=True, slots=True)
class PartitionResponse:
    """The producer accepted the request; it is attempt ``producer_attempt`` of its task."""

    partition_id: str
    subpartition: int
    producer_attempt: int


@dataclass(frozen=True, slots=True)
class AddCredit:
    """The consumer recycled ``credit`` buffers: the producer may send that many more."""

    credit: int


@dataclass(frozen=True, slots=True)
class Buffer:
    """A buffer of length-prefixed records; ``backlog`` = buffers still queued behind it."""

    seq: int
    backlog: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Event:
    """An in-band event (see `netlayer.events` for ``kind`` and ``payload``); needs no credit."""

    seq: int
    kind: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Error:
    """The sender gives up on this connection for the stated reason; it closes next."""

    message: str


@dataclass(frozen=True, slots=True)
class Close:
    """Graceful end of a connection (the consumer is done, or the producer shuts down)."""

    reason: str = ""


Message = PartitionRequest | PartitionResponse | AddCredit | Buffer | Event | Error | Close
