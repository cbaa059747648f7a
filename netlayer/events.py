"""In-band events that travel with the data, in order: barriers, watermarks, end of partition.

An event is written by `RecordWriter.broadcast_event` after every record
emitted before it and before every record emitted after it, on every available
subpartition; it needs no credit. On the wire it is an ``Event(seq, kind,
payload)`` frame; `encode_event` / `decode_event` convert. (`UnavailableEvent`
is local to a consumer and lives in `netlayer.gate`; it is never sent.)

Events are immutable values, safe to share between threads; the functions
here are pure.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from netlayer.protocol.errors import ProtocolError

__all__ = [
    "CheckpointBarrier",
    "EndOfPartition",
    "RuntimeEvent",
    "Watermark",
    "decode_event",
    "encode_event",
]

_I64x2 = struct.Struct(">qq")
_I64 = struct.Struct(">q")

KIND_CHECKPOINT_BARRIER = 1
KIND_WATERMARK = 2
KIND_END_OF_PARTITION = 3


@dataclass(frozen=True, slots=True)
class CheckpointBarrier:
    """Marks the cut of checkpoint ``checkpoint_id`` (``timestamp``: when it was triggered, ms)."""

    checkpoint_id: int
    timestamp: int = 0


@dataclass(frozen=True, slots=True)
class Watermark:
    """No record with an event time <= ``timestamp`` (ms) follows on this channel."""

    timestamp: int


@dataclass(frozen=True, slots=True)
class EndOfPartition:
    """The producer finished: nothing follows on this channel."""


RuntimeEvent = CheckpointBarrier | Watermark | EndOfPartition

_END_OF_PARTITION = EndOfPartition()


def encode_event(event: RuntimeEvent) -> tuple[int, bytes]:
    """``(kind, payload)`` of an event for an ``Event`` frame."""
    if isinstance(event, CheckpointBarrier):
        return KIND_CHECKPOINT_BARRIER, _I64x2.pack(event.checkpoint_id, event.timestamp)
    if isinstance(event, Watermark):
        return KIND_WATERMARK, _I64.pack(event.timestamp)
    if isinstance(event, EndOfPartition):
        return KIND_END_OF_PARTITION, b""
    raise TypeError(f"not a netlayer event: {event!r}")


def decode_event(kind: int, payload: bytes) -> RuntimeEvent:
    """The event of an ``Event`` frame; `ProtocolError` for an unknown kind or a bad payload."""
    try:
        if kind == KIND_CHECKPOINT_BARRIER:
            checkpoint_id, timestamp = _I64x2.unpack(payload)
            return CheckpointBarrier(checkpoint_id, timestamp)
        if kind == KIND_WATERMARK:
            return Watermark(_I64.unpack(payload)[0])
    except struct.error as exc:
        raise ProtocolError(f"bad payload for event kind {kind}: {exc}") from None
    if kind == KIND_END_OF_PARTITION:
        if payload:
            raise ProtocolError("EndOfPartition carries no payload")
        return _END_OF_PARTITION
    raise ProtocolError(f"unknown event kind {kind}")
