"""Sans-io wire protocol of the data plane: frames, codec, errors (no sockets, no asyncio)."""

from netlayer.protocol.codec import (
    FrameDecoder,
    encode,
    encode_event_frame,
    finish_buffer_frame,
    restamp_event_frame,
)
from netlayer.protocol.errors import FrameTooLarge, ProtocolError
from netlayer.protocol.frames import (
    CANNOT_REPLAY,
    DEFAULT_MAX_FRAME_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
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
    "CANNOT_REPLAY",
    "DEFAULT_MAX_FRAME_SIZE",
    "MAGIC",
    "PROTOCOL_VERSION",
    "AddCredit",
    "Buffer",
    "Close",
    "Error",
    "Event",
    "FrameDecoder",
    "FrameTooLarge",
    "FrameType",
    "Message",
    "PartitionRequest",
    "PartitionResponse",
    "ProtocolError",
    "encode",
    "encode_event_frame",
    "finish_buffer_frame",
    "restamp_event_frame",
]
