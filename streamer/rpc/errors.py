"""Errors of the control plane.

Every error carries a one-line message naming the peer, the message kind and
what went wrong. `RpcError` is a `StreamerError`, so the CLI prints it as
``error: <message>``.

- `RpcProtocolError`: the peer broke the protocol (bad frame, unknown kind,
  a body that fails its schema). Raised by the sans-io decoder; the transport
  then stops trusting the byte stream and closes the connection.
- `RpcSchemaError`: a message body does not match its kind's schema. Raised on
  decode (as a protocol error) and on encode (a bug on this side: nothing is
  sent). It is also a `ValueError`.
- `RpcFrameTooLarge`: a frame is (or would be) larger than ``max_frame_size``.
- `RpcTimeout`: no reply within the request's timeout (also a `TimeoutError`).
- `RpcRemoteError`: the peer answered a request with an ``error`` reply.
- `RpcConnectionLost`: the connection closed while a request waited for its
  reply, or before a message could be written (also a `ConnectionError`).
- `RpcConnectError`: `connect` gave up (also a `ConnectionError`).
"""

from __future__ import annotations

from streamer.errors import StreamerError

__all__ = [
    "RpcConnectError",
    "RpcConnectionLost",
    "RpcError",
    "RpcFrameTooLarge",
    "RpcProtocolError",
    "RpcRemoteError",
    "RpcSchemaError",
    "RpcTimeout",
]


class RpcError(StreamerError):
    """Base class of every control-plane error."""


class RpcProtocolError(RpcError):
    """The peer sent bytes or a message that break the control-plane protocol."""


class RpcSchemaError(RpcProtocolError, ValueError):
    """A message body does not match the schema registered for its kind.

    ``kind`` and ``field`` name what is wrong (``field`` is ``None`` when the
    problem is the kind itself, e.g. an unknown kind).
    """

    def __init__(self, kind: str, field: str | None, reason: str) -> None:
        where = f"{kind}.{field}" if field is not None else kind
        super().__init__(f"{where}: {reason}")
        self.kind = kind
        self.field = field
        self.reason = reason


class RpcFrameTooLarge(RpcProtocolError):
    """A frame announced (or would need) more bytes than ``max_frame_size``."""


class RpcTimeout(RpcError, TimeoutError):
    """A request got no reply within its timeout."""


class RpcRemoteError(RpcError):
    """The peer replied ``error`` to a request; ``message`` is its one-line reason."""

    def __init__(self, message: str, *, peer: str = "", kind: str = "") -> None:
        prefix = f"{peer} failed {kind}: " if peer and kind else ""
        super().__init__(f"{prefix}{message}")
        self.message = message
        self.peer = peer
        self.kind = kind


class RpcConnectionLost(RpcError, ConnectionError):
    """The connection closed before the reply arrived (or before a message was sent)."""


class RpcConnectError(RpcError, ConnectionError):
    """Could not open a connection to the peer (after the configured retries)."""
