"""`ResultSubpartition`: the queue of buffers and events for one consumer subtask.

Threading contract: everything runs on the task's asyncio event loop (one
thread). The transport calls the ``on_*`` methods from its protocol callbacks
on that loop; `ResultSubpartition.mark_consumer_failed` must be called on it as
well (from another thread: ``loop.call_soon_threadsafe``). Nothing here blocks;
the only awaitable is the future `_add_buffers` hands the writer under
backpressure.

Ordering contract: records and events leave in exactly the order they were
emitted (an event first finishes the partly filled buffer). Buffers and events
share one sequence-number space that restarts at 0 whenever a consumer's (new)
attempt resets the subpartition or starts a replay.

Availability (single-task recovery) is the state table of
`netlayer.partition.states`; the subpartition holds it in ``state`` and changes
it only through `_fire`. A subpartition is available until its consumer fails
(its connection drops without a graceful `Close`, or `mark_consumer_failed`).
While its consumer is failed (lossy), records routed to it are dropped at once and
counted (``records_dropped``), its queue is discarded (``records_discarded``)
and the writer never waits for it. A `PartitionRequest` from a consumer attempt
>= the current one resets it (empty queue, sequence 0, credit from the request)
and makes it available again; an older attempt is rejected with an `Error`
frame. The very first request of a subpartition that has never been consumed
takes over its queue instead (nothing was sent yet). Loss accounting across
such a failover: `netlayer.partition.loss`.

Memory bound: at most ``capacity`` finished buffers, plus the buffer being
filled, plus the buffers a single record spans (the writer must await what
`RecordWriter.emit` returns before emitting again); events are never held back
by the bound (they are rare and small). The socket's write buffer is bounded
by credit and by the transport's high-water mark.

Retention (lossless single-task recovery, DESIGN.md section 9), opt-in per
partition (a `RetentionBudget`): every frame is retained as it is sent
(`SubpartitionQueue._on_sent`) in the subpartition's `RetentionStore` until
the checkpoint whose barrier follows it completes (`trim_barrier_marks`).
When the consumer fails the subpartition *retains* instead of dropping
(state ``RETAINING``): its queue, and everything routed to it while it is down,
is appended to the store, never queued, so the writer never waits for it.
Past the store's bounds it falls back to dropping (``CONSUMER_FAILED``). A
`PartitionRequest` with ``replay_from=C`` starts a `Replay`: the frames
retained after barrier C go out first, renumbered from 0, then the queue.
When it cannot (barrier C not retained, retention overflowed, records were
dropped, retention off) it answers with an `Error` starting with
``cannot replay from checkpoint C`` and changes nothing. A request without
``replay_from`` resets as described above (lossy) and forgets what was retained.
While retaining, the subpartition is not consumed: the partition waits for
the replay (or a lossy report) before it counts as consumed.

The class is split in two: `SubpartitionQueue` (`netlayer.partition.subpartition_queue`:
serializer, bounded queue, credit, send loop, holding while down) and
`ResultSubpartition` here (consumer attempts: failures, resets, replays, the
transport's callbacks).
"""

from __future__ import annotations

import logging

from netlayer.events import EndOfPartition, encode_event
from netlayer.partition.replay import Replay, cannot_replay
from netlayer.partition.retention import (
    GAP_DROPPED,
    GAP_OVERFLOW,
    GAP_RESET,
    RetentionBudget,
)
from netlayer.partition.states import SubpartitionEvent, SubpartitionState
from netlayer.partition.subpartition_queue import ConsumerLink, PartitionView, SubpartitionQueue
from netlayer.protocol.codec import encode
from netlayer.protocol.frames import PartitionResponse

__all__ = ["ConsumerLink", "ResultSubpartition"]

log = logging.getLogger(__name__)

_WAITING = SubpartitionState.WAITING_FOR_CONSUMER
_FINISHED = SubpartitionState.FINISHED
_RELEASED = SubpartitionState.RELEASED
_FAILED = SubpartitionState.CONSUMER_FAILED
_RETAINING = SubpartitionState.RETAINING


class ResultSubpartition(SubpartitionQueue):
    """The queue of buffers and events for one consumer subtask (see the module docstring)."""

    def __init__(
        self,
        partition: PartitionView,
        index: int,
        buffer_size: int,
        capacity: int,
        retention: RetentionBudget | None = None,
    ):
        super().__init__(partition, index, buffer_size, capacity)
        if retention is not None:
            name = f"{partition.partition_id}[{index}]"
            self.retention = retention.store(name, self._on_retention_overflow)

    def __repr__(self) -> str:
        return (
            f"<ResultSubpartition {self.partition.partition_id}[{self.index}] "
            f"{self.state.name} attempt={self.consumer_attempt} "
            f"queued={len(self.queue)} credit={self.credit}>"
        )

    @property
    def is_consumed(self) -> bool:
        """EndOfPartition was delivered and the consumer let go, or the consumer is gone (lossy)."""
        return self.state is _RELEASED or self.state is _FAILED

    @property
    def retention_overflowed(self) -> bool:
        """Retention went past its bounds; nothing before its next barrier can be replayed."""
        return self.retention is not None and self.retention.overflowed

    @property
    def barrier_marks(self) -> dict[int, int]:
        """``checkpoint_id -> records_routed`` when that barrier was added (read only)."""
        return self.loss.barrier_marks

    def trim_barrier_marks(self, completed_checkpoint_id: int) -> None:
        """Forget older marks; release what was retained up to that checkpoint's barrier."""
        self.loss.trim(completed_checkpoint_id)
        if self.retention is not None:
            self.retention.trim(completed_checkpoint_id)

    def mark_consumer_failed(
        self,
        consumer_attempt: int | None = None,
        reason: str = "",
        restore_checkpoint: int | None = None,
        lossless: bool | None = None,
    ) -> None:
        """The consumer is gone: retain (lossless) or drop everything for it until it is back.

        ``lossless``: retain for a replay; ``None`` means yes if the partition
        retains (without retention, or once retention gave up, it is lossy).
        ``restore_checkpoint``: the checkpoint the consumer's next attempt
        restores (``None``: nothing, or not known); it sets the loss base (see
        `netlayer.partition.loss`), so report it before that attempt connects.
        A report about an attempt older than the current consumer's is stale
        and ignored (the new attempt already reconnected); a repeated report
        only refines the loss base, or turns retaining into dropping (lossy).
        """
        if consumer_attempt is not None and consumer_attempt < self.consumer_attempt:
            return
        store = self.retention
        retain = store is not None and store.gap is None and lossless is not False
        repeated = self._down
        self.loss.on_consumer_failed(restore_checkpoint, repeated=repeated)
        if repeated and (retain or self._dropping):
            return
        what = "retaining" if retain else "dropping"
        log.info("%r: consumer failed (%s); %s its records", self, reason or "unknown", what)
        self._detach(None)
        self.credit = 0
        if retain:
            self._fire(SubpartitionEvent.CONSUMER_FAILED_LOSSLESS)
            self._retain_queue()
        else:
            self._fire(SubpartitionEvent.CONSUMER_FAILED)
            self._discard(GAP_DROPPED)
        self._wake_writer()
        self.partition._check_consumed()

    def _retain_queue(self) -> None:
        """Just went down losslessly: the queue (and a deferred flush) moves to retention."""
        if self._replay is not None:
            self._replay.stop()
            self._replay = None
        entries = list(self.queue)
        self.queue.clear()
        for _, frame, n in entries:
            self._hold(frame, n)
        if self._flush_pending:
            self._flush_pending = False
            self.flush()

    def _on_retention_overflow(self, unsent_records: int) -> None:
        """Retention gave up its history (past its bounds), with that many never-sent records."""
        m = self.metrics
        m.retention_overflows += 1
        m.records_discarded += unsent_records
        replay, self._replay = self._replay, None
        if self.state is _RETAINING:
            self._fire(SubpartitionEvent.RETENTION_OVERFLOWED)
            self._discard(GAP_OVERFLOW)
        elif replay is not None:  # the new attempt cannot get the rest of it
            error = cannot_replay(replay.checkpoint_id, "retention overflowed during the replay")
            self._detach(error)
            self.mark_consumer_failed(reason=error, lossless=False)

    def _replay_refused(self, checkpoint_id: int) -> str | None:
        """Why a replay from ``checkpoint_id`` cannot be served now, or ``None``."""
        store = self.retention
        if store is None:
            return "the producer retains nothing (retention is off)"
        if store.start_of(checkpoint_id) is None:
            return store.gap or "its barrier is not retained (trimmed, or never sent)"
        return None

    def on_partition_request(
        self,
        link: ConsumerLink,
        consumer_attempt: int,
        credit: int,
        replay_from: int | None = None,
    ) -> bool:
        """A consumer (re)connected; reset or replay and re-enable, or reject the request."""
        if consumer_attempt < self.consumer_attempt:
            reason = (
                f"stale consumer attempt {consumer_attempt} for "
                f"{self.partition.partition_id}[{self.index}] (current {self.consumer_attempt})"
            )
            log.warning("rejecting PartitionRequest: %s", reason)
            link.close(reason)
            return False
        why = None if replay_from is None else self._replay_refused(replay_from)
        if why is None and self._link is not None and self._link is not link:
            self._detach(f"superseded by consumer attempt {consumer_attempt}")
        if why is None and replay_from is not None:
            if not self._down:  # its failure was not reported: retain its queue now
                self._fire(SubpartitionEvent.CONSUMER_FAILED_LOSSLESS)
                self._retain_queue()
            self.flush()  # the partly filled buffer goes with the replay
            why = self._replay_refused(replay_from)  # (retaining may have overflowed)
        if why is not None:
            assert replay_from is not None
            error = cannot_replay(replay_from, why)
            log.warning("refusing PartitionRequest of %r: %s", self, error)
            link.close(error)
            return False
        reset = self.state is not _WAITING
        if replay_from is not None:
            assert self.retention is not None
            start = self.retention.start_of(replay_from)
            assert start is not None
            self._replay = Replay(self.retention, replay_from, start)
            self.next_seq = self._replay.frames
            self.loss.on_replay(replay_from)
            self.metrics.resets += 1
        elif reset:
            new_attempt = consumer_attempt > self.consumer_attempt
            self.metrics.records_lost += self.loss.on_reset(
                self.records_routed, new_attempt=new_attempt
            )
            self._discard(GAP_RESET)
            self.next_seq = 0
            self.metrics.resets += 1
        self._fire(SubpartitionEvent.PARTITION_REQUEST)
        self.consumer_attempt = consumer_attempt
        self.credit = credit
        self._link = link
        part = self.partition
        link.write(encode(PartitionResponse(part.partition_id, self.index, part.attempt)))
        if reset and part.finished and replay_from is None:
            kind, payload = encode_event(EndOfPartition())
            self.add_event(kind, payload)
        log.debug("%r: serving a consumer (reset=%s, replay=%r)", self, reset, self._replay)
        self._try_send()
        return True

    def on_add_credit(self, link: ConsumerLink, credit: int) -> None:
        if link is self._link:
            self.credit += credit
            self._try_send()

    def on_writable(self, link: ConsumerLink) -> None:
        if link is self._link:
            self._try_send()

    def on_consumer_close(self, link: ConsumerLink) -> None:
        """The consumer closed gracefully (after EndOfPartition, or because it stopped)."""
        if link is not self._link:
            return
        if self.state is _FINISHED:
            link.close(None)
            self._release()
        else:
            self.mark_consumer_failed(reason="consumer closed before the end of the partition")

    def on_connection_lost(self, link: ConsumerLink, reason: str) -> None:
        if link is not self._link:
            return
        if self.state is _FINISHED:
            self._release()
        else:
            self.mark_consumer_failed(reason=reason)

    def _release(self) -> None:
        self._link = None
        self._fire(SubpartitionEvent.CONSUMER_RELEASED)
        self.partition._check_consumed()
