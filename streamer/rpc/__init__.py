"""The control plane: length-prefixed orjson messages over TCP.

Coordinator, workers, task processes and CLI clients talk through it. Layers:

- `streamer.rpc.messages`: the `Message` value and the data-driven registry of
  message kinds and their body schemas (`register`).
- `streamer.rpc.codec`: the sans-io codec (`RpcDecoder`, `encode`) and the
  wire format (frame and envelope, including how a request is told apart from
  a notification: the envelope's ``"w": true``).
- `streamer.rpc.transport`: the thin asyncio layer (`RpcConnection`,
  `connect`, `RpcServer`).

Threading: the codec is pure and per connection; the transport belongs to one
event loop and is not thread-safe. Ordering: per connection, messages go out
in the order of the send calls and come in (to the handler) in arrival order;
replies are matched to requests by id.
"""

from __future__ import annotations

from streamer.rpc.codec import (
    DEFAULT_MAX_FRAME_SIZE,
    MAGIC,
    PROTOCOL_VERSION,
    RpcDecoder,
    encode,
)
from streamer.rpc.errors import (
    RpcConnectError,
    RpcConnectionLost,
    RpcError,
    RpcFrameTooLarge,
    RpcProtocolError,
    RpcRemoteError,
    RpcSchemaError,
    RpcTimeout,
)
from streamer.rpc.kinds import KINDS, builtin_registry, parse
from streamer.rpc.messages import (
    ERROR_KIND,
    REGISTRY,
    KindSpec,
    Message,
    Registry,
    register,
)
from streamer.rpc.states import TaskState
from streamer.rpc.transport import (
    DEFAULT_REQUEST_TIMEOUT,
    CloseCallback,
    Handler,
    RpcConnection,
    RpcServer,
    connect,
)

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "DEFAULT_REQUEST_TIMEOUT",
    "ERROR_KIND",
    "KINDS",
    "MAGIC",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "CloseCallback",
    "Handler",
    "KindSpec",
    "Message",
    "Registry",
    "RpcConnectError",
    "RpcConnection",
    "RpcConnectionLost",
    "RpcDecoder",
    "RpcError",
    "RpcFrameTooLarge",
    "RpcProtocolError",
    "RpcRemoteError",
    "RpcSchemaError",
    "RpcServer",
    "RpcTimeout",
    "TaskState",
    "builtin_registry",
    "connect",
    "encode",
    "parse",
    "register",
]
