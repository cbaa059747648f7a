"""Consumer side: `InputGate`, `InputChannel`, `CachedChannelProvider`, `UnavailableEvent`.

A task has one `InputGate` per input, with one `InputChannel` per producer
subtask. Each channel has its own TCP connection, a queue of received
buffers and events, an expected sequence number and a `RecordDeserializer`.

Modules:

- `netlayer.gate.input_gate`: `InputGate` (batches, round robin, credit return, end of input);
- `netlayer.gate.channel`: `InputChannel` (the connection's listener: sequence, credit, queue);
- `netlayer.gate.states`: the channel's availability state table (pure);
- `netlayer.gate.connector`: `ChannelConnector` (connect, handshake, retry);
- `netlayer.gate.provider`: `CachedChannelProvider` (swap to a redeployed producer);
- `netlayer.gate.values`: `ChannelInfo`, `UnavailableEvent`, `ChannelUpdateError`, `ReplayRefused`.

Threading contract: everything runs on the task's asyncio event loop. The
coordinator-facing `InputGate.producer_failed` and
`CachedChannelProvider.update_partition_info` must be called on that loop too
(from another thread: ``loop.call_soon_threadsafe``). ``on_done`` callbacks
run on the loop.

Ordering contract: per channel, records and events come out in the order the
producer emitted them. A batch holds the records of one buffer, or exactly
one event, of one channel. Across channels, batches are served round robin.

Single-task recovery: when a producer is lost (its connection drops, its
frames break the protocol or the sequence, or `producer_failed` is called) an
`UnavailableEvent` is appended to its channel's queue, behind the data already
received, which is still delivered. When the task dequeues the event, the
channel drops its partial spanning record (``records_cleared``) and becomes
unavailable: it no longer counts for end of input, and `available_channels`
leaves it out so barrier alignment and the watermark minimum can too. The
`UnavailableEvent` itself is handed to the task as an item. `CachedChannelProvider`
then swaps the channel to the producer's new attempt (see its docstring).
Frames from a connection or producer attempt that is not the channel's
current one are discarded (``stale_discarded``).

Lossless recovery: a channel whose `ChannelInfo.replay_from` (or update's
``replay_from``) is set asks its producer to replay from that checkpoint; a
producer that cannot fails the connection with ``cannot replay from
checkpoint <id>: <why>`` (`ReplayRefused`, never retried), which ends like a
failed connection: an `UnavailableEvent` with that reason for an initial
connection, an ``on_done`` error for an update.
"""

from netlayer.gate.channel import InputChannel
from netlayer.gate.connector import ChannelConnector
from netlayer.gate.input_gate import DEFAULT_CREDITS_PER_CHANNEL, YIELD_EVERY, InputGate
from netlayer.gate.provider import CachedChannelProvider
from netlayer.gate.states import ChannelEvent, ChannelState
from netlayer.gate.values import (
    ChannelInfo,
    ChannelUpdateError,
    OnDone,
    ReplayRefused,
    UnavailableEvent,
)

__all__ = [
    "DEFAULT_CREDITS_PER_CHANNEL",
    "YIELD_EVERY",
    "CachedChannelProvider",
    "ChannelConnector",
    "ChannelEvent",
    "ChannelInfo",
    "ChannelState",
    "ChannelUpdateError",
    "InputChannel",
    "InputGate",
    "OnDone",
    "ReplayRefused",
    "UnavailableEvent",
]
