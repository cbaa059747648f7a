"""The availability state table of an `InputChannel` (pure: no asyncio, no sockets).

States (as the channel's connection and the task see it):

- ``CONNECTING``: the initial connection and handshake are in progress; the
  channel already counts for the task (alignment, watermarks, end of input).
- ``AVAILABLE``: connected to the producer attempt ``producer_attempt``; data flows.
- ``DRAINING``: the producer was lost; its `UnavailableEvent` is queued behind
  the data still to be delivered. The channel counts for the task until the
  task dequeues that event.
- ``UNAVAILABLE``: the task dequeued the `UnavailableEvent`; waiting for an
  update (UpdatePartitionInfo) to the producer's next attempt.
- ``UPDATE_PENDING``: an update is being applied: connecting to the new
  attempt. Still unavailable to the task.
- ``FINISHING``: `EndOfPartition` was received and is queued; a producer loss
  no longer matters.
- ``FINISHED``: the task dequeued `EndOfPartition`.

``CONNECTING``, ``AVAILABLE``, ``DRAINING``, ``FINISHING`` and ``FINISHED``
count as available to the task; ``UNAVAILABLE`` and ``UPDATE_PENDING`` do not.

Events:

- ``CONNECTED``: the handshake with the expected producer attempt succeeded;
- ``PRODUCER_LOST``: the connection dropped or broke the protocol, the initial
  connection failed, or the coordinator reported the producer failed;
- ``UNAVAILABLE_DEQUEUED``: the task took the `UnavailableEvent`;
- ``UPDATE_APPLIED``: an update to a new producer attempt started connecting
  (also replacing a pending one);
- ``CONNECT_FAILED``: connecting to the new attempt gave up;
- ``END_OF_PARTITION_RECEIVED``: the `EndOfPartition` frame arrived;
- ``END_OF_PARTITION_DEQUEUED``: the task took it.
"""

from __future__ import annotations

from enum import Enum

from netlayer.statetable import Transitions, transition

__all__ = [
    "AVAILABLE_TO_TASK",
    "CHANNEL_TRANSITIONS",
    "ChannelEvent",
    "ChannelState",
    "next_channel_state",
]


class ChannelState(Enum):
    CONNECTING = "connecting"
    AVAILABLE = "available"
    DRAINING = "draining"
    UNAVAILABLE = "unavailable"
    UPDATE_PENDING = "update_pending"
    FINISHING = "finishing"
    FINISHED = "finished"


class ChannelEvent(Enum):
    CONNECTED = "connected"
    PRODUCER_LOST = "producer_lost"
    UNAVAILABLE_DEQUEUED = "unavailable_dequeued"
    UPDATE_APPLIED = "update_applied"
    CONNECT_FAILED = "connect_failed"
    END_OF_PARTITION_RECEIVED = "end_of_partition_received"
    END_OF_PARTITION_DEQUEUED = "end_of_partition_dequeued"


_S = ChannelState
_E = ChannelEvent

CHANNEL_TRANSITIONS: Transitions[ChannelState, ChannelEvent] = {
    (_S.CONNECTING, _E.CONNECTED): _S.AVAILABLE,
    (_S.CONNECTING, _E.PRODUCER_LOST): _S.DRAINING,
    (_S.AVAILABLE, _E.PRODUCER_LOST): _S.DRAINING,
    (_S.AVAILABLE, _E.END_OF_PARTITION_RECEIVED): _S.FINISHING,
    (_S.DRAINING, _E.UNAVAILABLE_DEQUEUED): _S.UNAVAILABLE,
    (_S.UNAVAILABLE, _E.UPDATE_APPLIED): _S.UPDATE_PENDING,
    (_S.UPDATE_PENDING, _E.UPDATE_APPLIED): _S.UPDATE_PENDING,
    (_S.UPDATE_PENDING, _E.CONNECTED): _S.AVAILABLE,
    (_S.UPDATE_PENDING, _E.CONNECT_FAILED): _S.UNAVAILABLE,
    # Lost again while reconnecting: the reconnection is abandoned (no new UnavailableEvent).
    (_S.UPDATE_PENDING, _E.PRODUCER_LOST): _S.UNAVAILABLE,
    (_S.FINISHING, _E.END_OF_PARTITION_DEQUEUED): _S.FINISHED,
}

AVAILABLE_TO_TASK = frozenset({_S.CONNECTING, _S.AVAILABLE, _S.DRAINING, _S.FINISHING, _S.FINISHED})
"""States in which the channel counts for alignment, watermarks and end of input."""


def next_channel_state(state: ChannelState, event: ChannelEvent) -> ChannelState:
    """The state after ``event``; `IllegalTransition` if the table does not allow it."""
    return transition("InputChannel", CHANNEL_TRANSITIONS, state, event)
