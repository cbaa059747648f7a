"""Loss accounting of lossy single-task failovers: how many records a failover lost.

What a task restarted alone from checkpoint ``c`` loses is exactly what its
producers routed to it after the barrier of ``c``, up to the moment its new
attempt reattached: the records its old attempt took in after ``c`` (their effect
is rolled back with its state), the ones queued or in flight when it died, and
the ones dropped while it was down. Each producer counts that itself per
subpartition (``records_lost`` in netlayer: it knows where each barrier went and
when the new attempt reset the subpartition) and reports it as
``partitions[<id>]["lost"]`` in its metrics; this module adds up the growth over
the failover. (Reports without ``lost`` count ``dropped`` only, as before.)

Lossless recovery's figures come the same way: ``records_replayed`` (what the
producers sent again), the bytes of those replays read from retention memory and
from spill files, ``retention_overflows`` (times a producer's retention for the
task gave up, past its bounds) and ``records_deduplicated`` (re-emitted outputs the
consumers dropped). ``counting`` is true on the record until they are filled in.

Cleared records are the failed task's own partial outputs that its consumers
discarded when its channel went away.

Counters are per producer attempt: a peer that restarted meanwhile counts from
zero, so each peer contributes its growth within one attempt, never a negative.

Threading: the coordinator's loop only.
"""

from __future__ import annotations

import asyncio

from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.failover.records import FailoverRecord
from streamer.graph import ExchangeType, ExecutionGraph, TaskId

Counters = dict[TaskId, tuple[int, int]]  # per peer task: (metrics attempt, counter value)


def growth(before: Counters, after: Counters) -> int:
    """How much the counters grew from ``before`` to ``after``; a peer whose attempt
    changed in between counts all of its new attempt's value."""
    total = 0
    for peer, (attempt, value) in after.items():
        old_attempt, old_value = before.get(peer, (attempt, 0))
        total += value - old_value if old_attempt == attempt else value
    return total


class LossAccounting:
    """Baselines at a failure, counts from the metrics reports after recovery."""

    def __init__(self, eg: ExecutionGraph, store: ExecutionStore, metrics_interval: float):
        self.eg = eg
        self.store = store
        self.metrics_interval = metrics_interval
        self._baselines: dict[int, dict[str, Counters]] = {}
        self._offsets = {t: _gate_offsets(eg, t) for t in eg.tasks}

    def _counters(self, task: TaskId) -> dict[str, Counters]:
        """Every counter a failover of ``task`` reports, by the record field it fills."""
        return {
            "records_dropped": self.lost_for(task),
            "records_cleared": self.cleared_for(task),
            "records_replayed": self.lost_for(task, "replayed"),
            "records_deduplicated": self.cleared_for(task, "deduplicated"),
            "bytes_replayed": self.lost_for(task, "replayed_bytes"),
            "bytes_replayed_from_disk": self.lost_for(task, "replayed_disk_bytes"),
            "retention_overflows": self.lost_for(task, "overflows"),
        }

    def start(self, rec: FailoverRecord, task: TaskId) -> None:
        """``task`` failed and restarts alone: remember its peers' counters now (once per
        failover: a lossy retry after a refused replay keeps the first baseline)."""
        if rec.id not in self._baselines:
            self._baselines[rec.id] = self._counters(task)
            rec.counting = True

    def forget(self, rec: FailoverRecord) -> None:
        """``rec`` turned into a restart of a set: nothing is lost (it replays)."""
        self._baselines.pop(rec.id, None)
        rec.counting = False
        rec.records_dropped = None
        rec.records_cleared = None
        rec.records_replayed = None
        rec.records_deduplicated = None
        rec.bytes_replayed_from_memory = None
        rec.bytes_replayed_from_disk = None
        rec.retention_overflows = None

    async def count(self, rec: FailoverRecord, task: TaskId) -> None:
        """Fill ``rec``'s counts from the peers' next metrics reports (after recovery)."""
        try:
            await asyncio.sleep(2.5 * self.metrics_interval)
            baseline = self._baselines.pop(rec.id, None)
            if baseline is None:
                return
            now = self._counters(task)
            grown = {name: growth(baseline[name], now[name]) for name in now}
            rec.records_dropped = grown["records_dropped"]
            rec.records_cleared = grown["records_cleared"]
            rec.records_replayed = grown["records_replayed"]
            rec.records_deduplicated = grown["records_deduplicated"]
            rec.bytes_replayed_from_disk = grown["bytes_replayed_from_disk"]
            rec.bytes_replayed_from_memory = (
                grown["bytes_replayed"] - grown["bytes_replayed_from_disk"]
            )
            rec.retention_overflows = grown["retention_overflows"]
        finally:
            rec.counting = False

    def lost_for(self, task: TaskId, counter: str = "lost") -> Counters:
        """Per producer of ``task``: (metrics attempt, records it lost for ``task``, or
        the per-subpartition ``counter`` named, e.g. ``replayed``)."""
        out: Counters = {}
        for producer in self.eg.producers_of(task, ExchangeType.PIPELINED):
            pe = self.store[producer]
            parts = pe.metrics.get("partitions", {})
            total = 0
            for rp in self.eg.result_partitions(producer):
                subpartition = rp.find_subpartition(task)
                part = parts.get(rp.partition_id)
                if subpartition is not None and part is not None:
                    values = part.get(counter)
                    if values is None and counter == "lost":
                        values = part.get("dropped")  # a report without a loss ledger
                    total += values[subpartition] if values else 0
            out[producer] = (pe.metrics_attempt, total)
        return out

    def cleared_for(self, task: TaskId, counter: str = "cleared") -> Counters:
        """Per consumer of ``task``: (metrics attempt, partial records of ``task`` cleared,
        or the per-channel ``counter`` named, e.g. ``deduplicated``)."""
        out: Counters = {}
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            ce = self.store[consumer]
            channels = ce.metrics.get("channels", [])
            offsets = self._offsets[consumer]
            total = 0
            for gate_index, channel in self.eg.channels_between(task, consumer):
                flat = offsets[gate_index] + channel
                if flat < len(channels):
                    total += channels[flat].get(counter, 0)
            out[consumer] = (ce.metrics_attempt, total)
        return out


def _gate_offsets(eg: ExecutionGraph, task: TaskId) -> list[int]:
    offsets, n = [], 0
    for gate in eg.input_gates(task):
        offsets.append(n)
        n += len(gate.channels)
    return offsets
