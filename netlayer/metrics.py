"""Counters of the data plane, per subpartition, partition and input channel.

Plain mutable counters, updated by their owner on the owner's event loop
(never locked; read them from the same loop, or accept a slightly stale
value). Hot paths update them per buffer, not per record, wherever possible.
`as_dict` gives a JSON-friendly snapshot.

Producer side, per subpartition, every record the writer routes to it ends in
exactly one of: ``records_dropped`` (routed while the subpartition was
unavailable), ``records_discarded`` (accepted, then thrown away unsent because
the consumer failed or a new consumer attempt reset the subpartition),
``records_out`` (its last byte was sent) or still pending (queued or in the
buffer being filled). So ``records_in == records_out + records_discarded +
pending`` and ``records_dropped`` is counted on top; ``records_routed ==
records_in + records_dropped``.

Loss accounting (lossy single-task recovery, `netlayer.partition.loss`):
``records_lost`` counts, over all consumer failovers of the subpartition, the
records routed to a failed consumer after the checkpoint barrier its next
attempt restores from.

Retention (lossless single-task recovery, `netlayer.partition.retention`):
``records_retained``, ``bytes_retained`` and ``bytes_spilled`` are gauges (what
is retained now; ``bytes_spilled`` is the size of the spill file), while
``records_replayed`` (records sent by replays), ``bytes_replayed`` (their
buffers' payload bytes), ``bytes_replayed_from_disk`` (the part read back from
the spill file) and ``retention_overflows`` are cumulative. The ``*_out``
counters count each frame once, at its first send: a replay's re-sends count
in ``records_replayed`` only, and a record held while the consumer was down is
pending until a replay (or the lossy reset that discards it) settles it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

__all__ = ["ChannelMetrics", "PartitionMetrics", "SubpartitionMetrics"]


@dataclass(slots=True)
class SubpartitionMetrics:
    """Counters of one `ResultSubpartition`.

    ``buffers_queued`` and ``credit`` are gauges and ``records_routed`` is
    derived: `ResultSubpartition.snapshot` fills them in (they stay 0 here).
    """

    records_in: int = 0
    """Records accepted (routed here while available and serialized)."""
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    buffers_out: int = 0
    events_out: int = 0
    records_dropped: int = 0
    """Records routed here while unavailable (consumer failed): never serialized."""
    records_lost: int = 0
    """Records routed to failed consumers after the barrier their next attempt restores."""
    records_discarded: int = 0
    """Accepted records thrown away unsent on a consumer failure or reset."""
    records_routed: int = 0
    """Records the writer routed here, queued or dropped (filled in by ``snapshot``)."""
    buffers_queued: int = 0
    max_buffers_queued: int = 0
    credit: int = 0
    backpressure_time: float = 0.0
    """Seconds the writer waited for room in this subpartition's queue."""
    resets: int = 0
    """PartitionRequests that reset the subpartition (consumer reconnected / new attempt)."""
    records_retained: int = 0
    """Records retained for a replay now (in memory or spilled)."""
    bytes_retained: int = 0
    """Bytes of the frames retained now (in memory or spilled)."""
    bytes_spilled: int = 0
    """Bytes of this subpartition's spill file now."""
    records_replayed: int = 0
    """Records sent by replays (again, or first if held while the consumer was down)."""
    bytes_replayed: int = 0
    """Payload bytes of the buffers replays sent."""
    bytes_replayed_from_disk: int = 0
    """The part of ``bytes_replayed`` read back from the spill file."""
    retention_overflows: int = 0
    """Times retention went past its bounds and gave up its history."""

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


@dataclass(slots=True)
class PartitionMetrics:
    """Sums over the subpartitions of a `ResultPartition`."""

    records_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    buffers_out: int = 0
    events_out: int = 0
    records_dropped: int = 0
    records_lost: int = 0
    records_discarded: int = 0
    records_routed: int = 0
    buffers_queued: int = 0
    max_buffers_queued: int = 0
    credit: int = 0
    backpressure_time: float = 0.0
    resets: int = 0
    records_retained: int = 0
    bytes_retained: int = 0
    bytes_spilled: int = 0
    records_replayed: int = 0
    bytes_replayed: int = 0
    bytes_replayed_from_disk: int = 0
    retention_overflows: int = 0

    @classmethod
    def total(cls, parts: list[SubpartitionMetrics]) -> PartitionMetrics:
        out = cls()
        for f in fields(cls):
            name = f.name
            values = [getattr(p, name) for p in parts]
            if name == "max_buffers_queued":
                setattr(out, name, max(values, default=0))
            else:
                setattr(out, name, sum(values))
        return out

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)


@dataclass(slots=True)
class ChannelMetrics:
    """Counters of one `InputChannel` (``buffers_queued`` and ``credit`` are gauges)."""

    records_in: int = 0
    """Complete records delivered to the task."""
    bytes_in: int = 0
    buffers_in: int = 0
    events_in: int = 0
    records_cleared: int = 0
    """Partial spanning records dropped because their producer was lost."""
    stale_discarded: int = 0
    """Frames discarded because they came from a stale producer attempt or connection."""
    buffers_queued: int = 0
    credit: int = 0
    """Credit the producer currently holds (granted, not yet used)."""
    backpressure_time: float = 0.0
    """Seconds the producer held no credit from this channel (the consumer throttled it)."""
    times_unavailable: int = 0
    updates_applied: int = 0

    def as_dict(self) -> dict[str, int | float]:
        return asdict(self)
