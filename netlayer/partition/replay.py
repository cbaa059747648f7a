"""`Replay`: a subpartition sends its retained frames again to a new consumer attempt.

A `PartitionRequest` with ``replay_from=C`` (the consumer's new attempt
restored checkpoint C) is served, when the subpartition's `RetentionStore`
holds barrier C, by a `Replay` over the entries after that barrier up to the
end of the log at request time: what the failed attempt had been sent after C,
then what was held while it was down. They go out first, renumbered from 0
for the new attempt (buffers need credit as usual; events do not), before
anything in the subpartition's queue, whose entries are numbered after them.

Counting: every record a replay sends counts in ``records_replayed`` and its
buffer's payload in ``bytes_replayed`` (and ``bytes_replayed_from_disk`` when it
was read back from the spill file); an entry
that had never been sent (held while the consumer was down) also counts in
the ``*_out`` counters, which count each frame once, at its first send.

Single-threaded: the subpartition calls `Replay.pump` from its ``_try_send``
on the task's event loop.
"""

from __future__ import annotations

from collections.abc import Sized
from typing import Protocol

from netlayer.events import KIND_END_OF_PARTITION
from netlayer.metrics import SubpartitionMetrics
from netlayer.partition.retention import EVENT, RetentionStore
from netlayer.partition.states import SubpartitionEvent
from netlayer.protocol.codec import finish_buffer_frame, restamp_event_frame
from netlayer.protocol.frames import BUFFER_FRAME_HEADER_SIZE, CANNOT_REPLAY, FRAME_HEADER_SIZE

__all__ = ["Replay", "cannot_replay"]

_KIND_OFFSET = FRAME_HEADER_SIZE + 8


def cannot_replay(checkpoint_id: int, why: str) -> str:
    """The `Error` text refusing a replay: ``cannot replay from checkpoint <id>: <why>``."""
    return f"{CANNOT_REPLAY} {checkpoint_id}: {why}"


class Link(Protocol):
    """What a replay needs of the consumer connection (a `ConsumerLink`)."""

    @property
    def writable(self) -> bool: ...

    def write(self, data: bytes | bytearray) -> None: ...


class ReplayingSubpartition(Protocol):
    """What a replay needs of its `ResultSubpartition`."""

    credit: int
    metrics: SubpartitionMetrics

    @property
    def queue(self) -> Sized: ...

    def _fire(self, event: SubpartitionEvent) -> None: ...


class Replay:
    """Sends a store's entries ``[start, end)`` again, numbered from 0 (module docstring)."""

    __slots__ = ("checkpoint_id", "end", "next_seq", "position", "store")

    def __init__(self, store: RetentionStore, checkpoint_id: int, start: int) -> None:
        self.store = store
        self.checkpoint_id = checkpoint_id
        self.position = start
        self.end = store.end
        self.next_seq = 0
        store.pinned = start
        # What precedes the start and never went out never will (the consumer restored past it).
        store.unsent_from = max(store.unsent_from, start)

    def __repr__(self) -> str:
        return f"<Replay from checkpoint {self.checkpoint_id} at {self.position}/{self.end}>"

    @property
    def frames(self) -> int:
        """Frames still to send."""
        return self.end - self.position

    def stop(self) -> None:
        """Abandon the replay (its consumer went away); the store may release again."""
        if self.store.pinned is not None:
            self.store.pinned = None
        self.position = self.end

    def pump(self, sp: ReplayingSubpartition, link: Link) -> bool:
        """Send what credit and the link allow; True once every frame went out."""
        store = self.store
        m = sp.metrics
        pos, end = self.position, self.end
        while pos < end:
            if not link.writable:
                break
            n = store.records_at(pos)
            if n != EVENT and sp.credit <= 0:
                break
            spilled = store.is_spilled(pos)
            frame = store.frame_at(pos)
            first = pos >= store.unsent_from
            if n != EVENT:
                sp.credit -= 1
                finish_buffer_frame(frame, self.next_seq, end - pos - 1 + len(sp.queue))
                m.records_replayed += n
                payload = len(frame) - BUFFER_FRAME_HEADER_SIZE
                m.bytes_replayed += payload
                if spilled:
                    m.bytes_replayed_from_disk += payload
                if first:
                    m.records_out += n
                    m.bytes_out += len(frame) - BUFFER_FRAME_HEADER_SIZE
                    m.buffers_out += 1
            else:
                restamp_event_frame(frame, self.next_seq)
                if first:
                    m.events_out += 1
            if first:
                store.unsent_from = pos + 1
            pos += 1
            self.next_seq += 1
            self.position = store.pinned = pos
            link.write(frame)
            if n == EVENT and frame[_KIND_OFFSET] == KIND_END_OF_PARTITION:
                sp._fire(SubpartitionEvent.END_OF_PARTITION_SENT)
        if pos < end:
            return False
        store.pinned = None
        return True
