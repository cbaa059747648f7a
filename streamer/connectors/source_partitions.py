"""The partitions of a ``KafkaSource`` subtask: which it owns, where each starts, and
how far it has read.

``SourcePositions`` holds the next offset to read per owned partition (what a
checkpoint stores and a restore resumes from), a bounded source's end offsets, and
the lag against librdkafka's cached high watermarks. ``PartitionAssigner`` assigns
the owned partitions to the consumer at concrete start offsets (a restored position,
else the ``start`` setting) and finds partitions that appear later (read from their
beginning).

Threading: not thread-safe, like the source that owns them; ``SourcePositions.copy``
may be called from another thread.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streamer.connectors.kafka_common import topic_partitions
from streamer.errors import ConnectorError

log = logging.getLogger(__name__)

StartFrom = str | int  # "earliest" | "latest" | "committed" | a timestamp in ms


def owned_partitions(num_partitions: int, subtask: int, parallelism: int) -> list[int]:
    """The partitions a subtask reads: ``p % parallelism == subtask``."""
    return [p for p in range(num_partitions) if p % parallelism == subtask]


class SourcePositions:
    """Next offset to read per owned partition, and a bounded source's end offsets."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.next: dict[int, int] = {}
        """Partition -> the offset of the next record to deliver."""
        self.ends: dict[int, int] = {}
        """Bounded mode: partition -> the high watermark seen at assignment (stop there)."""
        self.restored: dict[int, int] | None = None
        """Positions of the snapshot restored before the first assignment, if any."""

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take ``snapshot()`` output; the assigner starts owned partitions there."""
        if snapshot.get("topic") != self.topic:
            raise ConnectorError(
                f"source snapshot is for topic {snapshot.get('topic')!r}, not {self.topic!r}"
            )
        self.restored = {int(p): int(o) for p, o in snapshot["positions"].items()}

    def snapshot(self) -> dict[str, Any]:
        """``{"topic", "positions": {partition: next offset}}``; JSON-able."""
        return {
            "topic": self.topic,
            "positions": {str(p): o for p, o in sorted(self.next.items())},
        }

    def copy(self) -> dict[str, int]:
        """A copy of the next offset to read per partition (safe from another thread)."""
        return {str(p): o for p, o in dict(self.next).items()}

    def reached_ends(self) -> bool:
        """Every partition with an end offset was read up to it."""
        return all(self.next.get(p, 0) >= end for p, end in self.ends.items())

    def lags(self, consumer: Any) -> dict[str, int]:
        """Per partition: the high watermark the last fetch reported (librdkafka's cached
        value: no broker request) minus the next offset to read; partitions without a
        fetch yet are left out."""
        from confluent_kafka import TopicPartition

        out: dict[str, int] = {}
        for p, position in sorted(self.next.items()):
            _low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)
            if high is not None and high >= 0:
                out[str(p)] = max(0, int(high) - position)
        return out


class PartitionAssigner:
    """Assigns a subtask's partitions at concrete start offsets (so that every snapshot
    holds real numbers) and checks now and then for partitions that appeared."""

    def __init__(
        self,
        positions: SourcePositions,
        bootstrap_servers: str,
        *,
        subtask: int,
        parallelism: int,
        start: StartFrom,
        bounded: bool,
        discovery_interval: float,
        metadata_timeout: float,
    ) -> None:
        self.positions = positions
        self.topic = positions.topic
        self.bootstrap_servers = bootstrap_servers
        self.subtask = subtask
        self.parallelism = parallelism
        self.start = start
        self.bounded = bounded
        self.discovery_interval = discovery_interval
        self.metadata_timeout = metadata_timeout
        self.num_partitions = 0
        self._consumer: Any = None
        self._next_discovery = 0.0

    def open(self, consumer: Any, num_partitions: int) -> None:
        """Assign the owned partitions of a topic of ``num_partitions`` to ``consumer``."""
        self._consumer = consumer
        self.num_partitions = num_partitions
        mine = owned_partitions(num_partitions, self.subtask, self.parallelism)
        self._assign(mine, initial=True)
        self._next_discovery = time.monotonic() + self.discovery_interval

    @property
    def discovery_due(self) -> bool:
        """Whether it is time to look for new partitions (never in bounded mode)."""
        return not self.bounded and time.monotonic() >= self._next_discovery

    def discover(self) -> list[int]:
        """Assign owned partitions that appeared since the last check; returns the new ones."""
        self._next_discovery = time.monotonic() + self.discovery_interval
        try:
            count = topic_partitions(self._consumer, self.topic, self.bootstrap_servers, 5.0)
        except ConnectorError as exc:
            log.warning("partition discovery for %s failed: %s", self.topic, exc)
            return []
        if count <= self.num_partitions:
            return []
        new = [
            p
            for p in owned_partitions(count, self.subtask, self.parallelism)
            if p not in self.positions.next
        ]
        self.num_partitions = count
        self._assign(new, initial=False)
        return new

    def _assign(self, partitions: list[int], *, initial: bool) -> None:
        from confluent_kafka import TopicPartition

        if not partitions:
            return
        starts = self._start_offsets(partitions, initial=initial)
        self.positions.next.update(starts)
        if self.bounded:
            for p in partitions:
                self.positions.ends[p] = self._watermarks(p)[1]
        self._consumer.incremental_assign(
            [TopicPartition(self.topic, p, starts[p]) for p in partitions]
        )
        log.info(
            "source %s[%d] assigned partitions %s at %s",
            self.topic,
            self.subtask,
            partitions,
            starts,
        )

    def _watermarks(self, partition: int) -> tuple[int, int]:
        from confluent_kafka import TopicPartition

        low, high = self._consumer.get_watermark_offsets(
            TopicPartition(self.topic, partition), timeout=self.metadata_timeout
        )
        return int(low), int(high)

    def _start_offsets(self, partitions: list[int], *, initial: bool) -> dict[int, int]:
        """Concrete start offsets: restored, else a new partition's beginning, else ``start``."""
        from confluent_kafka import TopicPartition

        restored = self.positions.restored
        out: dict[int, int] = {}
        todo = []
        for p in partitions:
            if initial and restored is not None and p in restored:
                out[p] = restored[p]
            elif not initial or restored is not None:
                out[p] = self._watermarks(p)[0]  # a new partition: read it from the beginning
            else:
                todo.append(p)
        if not todo:
            return out
        if self.start == "earliest":
            out.update({p: self._watermarks(p)[0] for p in todo})
        elif self.start == "latest":
            out.update({p: self._watermarks(p)[1] for p in todo})
        elif self.start == "committed":
            committed = self._consumer.committed(
                [TopicPartition(self.topic, p) for p in todo], timeout=self.metadata_timeout
            )
            for tp in committed:
                out[tp.partition] = (
                    tp.offset if tp.offset >= 0 else self._watermarks(tp.partition)[0]
                )
        else:
            found = self._consumer.offsets_for_times(
                [TopicPartition(self.topic, p, int(self.start)) for p in todo],
                timeout=self.metadata_timeout,
            )
            for tp in found:
                out[tp.partition] = (
                    tp.offset if tp.offset >= 0 else self._watermarks(tp.partition)[1]
                )
        return out
