"""The availability state table of a `ResultSubpartition` (pure: no asyncio, no sockets).

States (what the subpartition does with the records routed to it):

- ``WAITING_FOR_CONSUMER``: no `PartitionRequest` yet; records are queued (and
  backpressure the writer) for the first consumer, which takes the queue over.
- ``AVAILABLE``: a consumer attempt is attached; records are queued and sent
  against its credit.
- ``FINISHED``: `EndOfPartition` went out to the current consumer.
- ``RELEASED``: after `EndOfPartition`, the consumer let go (it closed or its
  connection ended); the subpartition is consumed.
- ``CONSUMER_FAILED``: the consumer is gone before the end; records routed
  here are dropped at once and counted, nothing is queued.
- ``RETAINING``: the consumer is gone, lossless mode (the partition retains,
  `netlayer.partition.retention`): records routed here are serialized and
  retained for a replay, never queued; the writer never waits for them.

Events:

- ``PARTITION_REQUEST``: a consumer attempt >= the current one connected
  (the owner resets the subpartition first unless it was waiting);
- ``END_OF_PARTITION_SENT``: the `EndOfPartition` frame was written;
- ``CONSUMER_RELEASED``: graceful close, or connection end, after `EndOfPartition`;
- ``CONSUMER_FAILED``: the connection dropped before the end, the consumer
  closed early, or the coordinator reported the consumer failed (repeatable:
  a later report refines the loss accounting and changes nothing else);
- ``CONSUMER_FAILED_LOSSLESS``: the same, with retention on and lossless mode:
  the subpartition retains instead of dropping (not from ``CONSUMER_FAILED``:
  what was dropped cannot be replayed);
- ``RETENTION_OVERFLOWED``: while retaining, retention went past its bounds;
  the subpartition falls back to dropping.
"""

from __future__ import annotations

from enum import Enum

from netlayer.statetable import Transitions, transition

__all__ = [
    "SUBPARTITION_TRANSITIONS",
    "SubpartitionEvent",
    "SubpartitionState",
    "next_subpartition_state",
]


class SubpartitionState(Enum):
    WAITING_FOR_CONSUMER = "waiting_for_consumer"
    AVAILABLE = "available"
    FINISHED = "finished"
    RELEASED = "released"
    CONSUMER_FAILED = "consumer_failed"
    RETAINING = "retaining"


class SubpartitionEvent(Enum):
    PARTITION_REQUEST = "partition_request"
    END_OF_PARTITION_SENT = "end_of_partition_sent"
    CONSUMER_RELEASED = "consumer_released"
    CONSUMER_FAILED = "consumer_failed"
    CONSUMER_FAILED_LOSSLESS = "consumer_failed_lossless"
    RETENTION_OVERFLOWED = "retention_overflowed"


_S = SubpartitionState
_E = SubpartitionEvent

SUBPARTITION_TRANSITIONS: Transitions[SubpartitionState, SubpartitionEvent] = {
    # Any consumer attempt may (re)connect, whatever happened before.
    **{(state, _E.PARTITION_REQUEST): _S.AVAILABLE for state in _S},
    (_S.AVAILABLE, _E.END_OF_PARTITION_SENT): _S.FINISHED,
    (_S.FINISHED, _E.CONSUMER_RELEASED): _S.RELEASED,
    # A consumer can fail at any time, even after it received EndOfPartition.
    **{(state, _E.CONSUMER_FAILED): _S.CONSUMER_FAILED for state in _S},
    **{
        (state, _E.CONSUMER_FAILED_LOSSLESS): _S.RETAINING
        for state in _S
        if state is not _S.CONSUMER_FAILED
    },
    (_S.RETAINING, _E.RETENTION_OVERFLOWED): _S.CONSUMER_FAILED,
}


def next_subpartition_state(
    state: SubpartitionState, event: SubpartitionEvent
) -> SubpartitionState:
    """The state after ``event``; `IllegalTransition` if the table does not allow it."""
    return transition("ResultSubpartition", SUBPARTITION_TRANSITIONS, state, event)
