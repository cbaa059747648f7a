"""Where a chain's results go: the task's ``RecordWriter``s, or a Kafka sink.

``NetworkOutputs`` opens a task's network side: one netlayer ``ResultPartition``
per output edge, served by the task's ``PartitionServer``, each fed by a
``RecordWriter`` (hash edges with the edge's key function); ``WriterOutput`` is
the chain tail over those writers.

``SinkOutput`` with exactly-once delivery is a write-ahead sink on top of the
transactional ``KafkaSink``: every record written since the last committed
checkpoint is also kept here, in segments cut at barriers. At the barrier of
checkpoint ``n`` the sink seals its transaction (``prepare_commit``) and the task
stores the uncommitted records in the checkpoint, per epoch; on
``checkpoint_complete(n)`` it commits. If the task dies between completion and
commit, the new attempt (restored from checkpoint ``n``) reads the sink's commit
marker (``KafkaSink.committed_epoch``, written inside each transaction) and writes
the records of every epoch after it again into its first transaction: nothing
lost, nothing twice, whether or not the old attempt lived to report its commit
(librdkafka cannot resume a transaction of another producer, so this replaces
Flink's re-commit). At-least-once sinks just flush at each barrier.

Threading: the task's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from netlayer.partition import RecordWriter, ResultPartition
from netlayer.partition.retention import (
    DEFAULT_MAX_SPILL_BYTES,
    DEFAULT_RETENTION_BYTES,
    RetentionBudget,
)
from netlayer.transport import PartitionServer
from streamer.connectors import Delivery, KafkaSink
from streamer.graph import ExchangeType, Partitioner
from streamer.runtime.task_context import TaskContext
from streamer.security.tls import server_ssl

log = logging.getLogger(__name__)

PIPELINED = ExchangeType.PIPELINED


def retention_budget(ctx: TaskContext) -> RetentionBudget | None:
    """Lossless single-task recovery (``individual_recovery=lossless``): the partitions
    retain what they sent since the last completed checkpoint, in memory up to
    ``retention_bytes``, then spilled under this attempt's state directory up to
    ``retention_spill_bytes``."""
    if ctx.config.get("individual_recovery", "lossy") != "lossless":
        return None
    base = Path(ctx.config.get("state_dir") or Path.cwd() / "streamer-state")
    name = f"{str(ctx.task_id).replace('#', '-')}-a{ctx.attempt}"
    return RetentionBudget(
        int(ctx.config.get("retention_bytes", DEFAULT_RETENTION_BYTES)),
        spill_dir=base / ctx.job_id / "retention" / name,
        max_spill_bytes=int(ctx.config.get("retention_spill_bytes", DEFAULT_MAX_SPILL_BYTES)),
    )


class NetworkOutputs:
    """The task's result partitions, their writers and the server consumers connect to."""

    def __init__(self, ctx: TaskContext) -> None:
        self.ctx = ctx
        self.server: PartitionServer | None = None
        self.partitions: dict[str, ResultPartition] = {}
        self.writers: list[RecordWriter] = []
        self.output: WriterOutput | None = None
        """The chain tail feeding the writers (None: the task has no output edge)."""

    async def open(self) -> None:
        ctx = self.ctx
        # (a kafka exchange is written by its own tail: runtime.kafka_exchange)
        partitions = [
            rp for rp in ctx.eg.result_partitions(ctx.task_id) if rp.exchange == PIPELINED
        ]
        if not partitions:
            return
        self.server = PartitionServer(
            ctx.config.get("bind_host", "127.0.0.1"), auth_key=ctx.data_key, ssl=server_ssl()
        )
        retention = retention_budget(ctx)
        writers: list[tuple[RecordWriter, Callable[[Any], Any] | None]] = []
        for rp in partitions:
            edge = rp.edge
            partition = ResultPartition(
                rp.partition_id,
                len(rp.subpartitions),
                ctx.attempt,
                buffer_timeout=ctx.config.get("buffer_timeout", 0.005),
                retention=retention,
            )
            self.server.register(partition)
            self.partitions[rp.partition_id] = partition
            target = ctx.job.job_graph.vertex(edge.target_vertex)
            writer = RecordWriter(
                partition,
                str(edge.partitioner),  # type: ignore[arg-type]
                max_parallelism=target.max_parallelism,
                start_index=ctx.task_id.subtask,
            )
            self.writers.append(writer)
            hashed = edge.partitioner == Partitioner.HASH
            writers.append((writer, ctx.job.key_function(edge) if hashed else None))
        await self.server.start()
        self.output = WriterOutput(writers)

    def restore(self, restore: dict[str, Any]) -> None:
        """Round-robin positions of the restored checkpoint (a replay routes the same way);
        what this attempt emits follows that checkpoint's barrier (a consumer restarted
        later may ask for a replay from it)."""
        for writer, position in zip(self.writers, restore.get("writers") or (), strict=False):
            writer.position = position
        checkpoint_id = restore.get("checkpoint_id")
        if checkpoint_id is not None:
            for partition in self.partitions.values():
                partition.restored_from(int(checkpoint_id))

    def broadcast_lazily(self, record: Any) -> None:
        """``record`` to every consumer of every output, each copy right before the next
        record or event that consumer gets (`RecordWriter.broadcast_lazily`)."""
        for writer in self.writers:
            writer.broadcast_lazily(record)

    def data_address(self) -> str:
        """``host:port`` consumers connect to ("" without outputs)."""
        if self.server is None:
            return ""
        host = self.ctx.config.get("advertise_host") or self.server.host
        return f"{host}:{self.server.port}"

    async def finish(self) -> None:
        """End of input: ``EndOfPartition`` everywhere, then wait until consumers drained."""
        for writer in self.writers:
            writer.finish()
        timeout = float(self.ctx.config.get("finish_timeout", 30.0))
        for partition in self.partitions.values():
            try:
                await asyncio.wait_for(partition.wait_consumed(), timeout)
            except TimeoutError:
                log.warning("task %s: consumers of %s did not drain", self.ctx, partition)

    async def close(self) -> None:
        for partition in self.partitions.values():
            partition.close()
        if self.server is not None:
            await self.server.close()


class WriterOutput:
    """Chain tail feeding every output edge's ``RecordWriter`` (hash edges with their key)."""

    __slots__ = ("_blocked", "_blocked_since", "_emit", "_key_fn", "_writers", "records", "waits")

    def __init__(self, writers: list[tuple[RecordWriter, Callable[[Any], Any] | None]]) -> None:
        self._writers = writers
        self.waits: list[Awaitable[None]] = []
        self.records = 0
        """Records the chain emitted (data only: determinants are broadcast beside it)."""
        self._blocked = 0.0
        self._blocked_since: float | None = None
        # one output edge (the usual case): its emit and key function, without the loop
        self._emit = writers[0][0].emit if len(writers) == 1 else None
        self._key_fn = writers[0][1] if len(writers) == 1 else None

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None:
        self.records += 1
        emit = self._emit
        if emit is not None:
            key_fn = self._key_fn
            wait = emit([ts, value]) if key_fn is None else emit([ts, value], key_fn(value))
            if wait is not None:
                self.waits.append(wait)
            return
        record = [ts, value]
        for writer, key_fn in self._writers:
            wait = writer.emit(record) if key_fn is None else writer.emit(record, key_fn(value))
            if wait is not None:
                self.waits.append(wait)

    async def drain(self) -> None:
        """Wait out the backpressure the last emits reported (timed: `blocked_seconds`)."""
        self._blocked_since = since = time.monotonic()
        try:
            while self.waits:
                await self.waits.pop()
        finally:
            self._blocked += time.monotonic() - since
            self._blocked_since = None

    def idle(self) -> None:
        """The task has no input ready: send what its buffers hold now, rather than when
        ``buffer_timeout`` runs out (lower latency, and no timer wake-up to come)."""
        for writer, _ in self._writers:
            writer.flush()

    def blocked_seconds(self) -> float:
        """Seconds spent waiting for room in the outputs (back-pressure), a wait going on
        now included."""
        since = self._blocked_since
        return self._blocked + (0.0 if since is None else time.monotonic() - since)


class SinkOutput:
    """Chain tail writing to Kafka; see the module docstring for the exactly-once contract."""

    __slots__ = ("_open", "_sealed", "exactly_once", "key_fn", "sink", "waits")

    def __init__(self, sink: KafkaSink, key_fn: Callable[[Any], Any] | None) -> None:
        self.sink = sink
        self.key_fn = key_fn
        self.exactly_once = sink.delivery is Delivery.EXACTLY_ONCE
        self.waits: list[Awaitable[None]] = []
        self._open: list[list[Any]] = []  # written since the last barrier
        self._sealed: list[tuple[int, list[list[Any]]]] = []  # per barrier, not yet committed

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None:
        # Kafka records get the produce time, not the event time: an old event time
        # would make the broker roll and delete segments by retention (as in Flink,
        # where writing event time as the record timestamp is opt-in)
        key = None if self.key_fn is None else self.key_fn(value)
        self.sink.write(value, key)
        if self.exactly_once:
            self._open.append([key, value, ts])

    async def drain(self) -> None:
        return None

    def idle(self) -> None:
        """Nothing to do: the producer's own linger sends what it holds."""

    def on_barrier(self, checkpoint_id: int) -> list[tuple[int, list[list[Any]]]]:
        """Seal the epoch; returns ``(epoch, records)`` of every epoch not yet committed
        (to store in the checkpoint)."""
        self.sink.prepare_commit(checkpoint_id)
        if not self.exactly_once:
            return []
        self._sealed.append((checkpoint_id, self._open))
        self._open = []
        return list(self._sealed)

    def on_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` completed: commit every sealed epoch up to it."""
        self.sink.commit(checkpoint_id)
        self._sealed = [(cid, records) for cid, records in self._sealed if cid > checkpoint_id]

    def replay(self, epochs: list[tuple[int, list[list[Any]]]], committed: int) -> int:
        """Write again the records of every epoch after ``committed`` (the sink's commit
        marker); returns how many."""
        written = 0
        for epoch, records in epochs:
            if epoch <= committed:
                continue
            for key, value, ts in records:
                self.sink.write(value, key)
                if self.exactly_once:
                    self._open.append([key, value, ts])
            written += len(records)
        return written
