"""The ``kafka`` exchange at runtime: FLIP-1's persisted exchange through a topic.

A kafka edge cuts pipelined regions: its producer side behaves like an
exactly-once Kafka sink, its consumer side like a Kafka source, and no
checkpoint barrier crosses the topic (`streamer.graph.exchanges`).

**Topic.** One partition per consumer subtask (the coordinator creates the topic
with the consumer's parallelism, or checks an existing one has enough). Every
record's key is the job id, so a job never reads what another run of it left in
the topic. Values are JSON:

- ``[ts, value]``: a data record (``ts``: its event time in ms, or null);
- ``{"w": [producer, wm]}``: producer subtask ``producer``'s watermark moved to
  ``wm`` (``IDLE_WATERMARK``: it went idle);
- ``{"e": producer}``: producer subtask ``producer`` finished (end of input).

**Producer side** (`ExchangeOutput`, the chain's tail): routes each record to the
partition of the consumer subtask a pipelined edge with the same partitioner
would send it to (``forward``: its own subtask; ``hash``: the key's key group's
subtask; ``rebalance``: round robin from its own subtask; ``broadcast``: every
partition), writing it into the open transaction of the exactly-once sink
machinery (`SinkOutput`, `streamer.runtime.sink_commits`): the transaction of
epoch ``n`` is sealed at the barrier of checkpoint ``n``, kept in the checkpoint
and committed when the checkpoint completes; a new attempt fences the old one and
writes again what its checkpoint holds beyond the commit marker. Watermarks and
idleness go to every partition as control records, in order with the data
(`ExchangeWatermarks`); at the end of input, the end marker.

**Consumer side** (`ExchangeReader`, a `SourceRunner` over the exchange topic):
reads its partition read-committed, so it sees each checkpoint's records once
that checkpoint completed (a checkpoint interval of latency); its offsets are its
part of every checkpoint, which the coordinator triggers at it as at a source
(barriers restart here, after the records it handed on). Event time comes in the
records: the reader combines the producers' watermarks (min over the producers
not idle, as over the channels of a pipelined gate, `WatermarkCombiner`) and
restores that state from its checkpoint. It ends once every producer's end marker
came. Lossless single-task recovery treats it as a source (determinants of its
batches and checkpoint positions; one partition, so its record order is fixed).

Threading: the task's loop, except the Kafka consumer calls (the reader's Kafka
thread, as in `SourceRunner`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from streamer.connectors import KafkaSink, KafkaSource
from streamer.connectors.source import SourceRecord
from streamer.graph import JobEdge, Partitioner, subtask_for_key
from streamer.graph.exchanges import kafka_input, kafka_output
from streamer.runtime.chain import Head
from streamer.runtime.eventtime import IDLE_WATERMARK, WatermarkCombiner
from streamer.runtime.operators import ChainedOperator
from streamer.runtime.outputs import SinkOutput, WriterOutput
from streamer.runtime.sink_commits import SinkCommitter
from streamer.runtime.source_runner import SourceRunner
from streamer.runtime.task_context import TaskContext
from streamer.runtime.task_metrics import Counters
from streamer.runtime.watermark_output import WatermarkOutput

__all__ = [
    "ExchangeOutput",
    "ExchangeReader",
    "ExchangeWatermarks",
    "open_exchange_output",
    "open_exchange_reader",
    "reads_exchange",
    "writes_exchange",
]

log = logging.getLogger(__name__)

WATERMARK, END = "w", "e"


def writes_exchange(ctx: TaskContext) -> JobEdge | None:
    """The kafka edge this task writes, if any."""
    return kafka_output(ctx.job.job_graph, ctx.vertex.vertex_id)


def reads_exchange(ctx: TaskContext) -> JobEdge | None:
    """The kafka edge this task reads, if any."""
    return kafka_input(ctx.job.job_graph, ctx.vertex.vertex_id)


# ------------------------------------------------------------------ producer side
class ExchangeOutput(SinkOutput):
    """The chain's tail writing the exchange topic (see the module docstring)."""

    def __init__(self, sink: KafkaSink, ctx: TaskContext, edge: JobEdge) -> None:
        super().__init__(sink, None)
        self.run_id = ctx.job_id
        self.subtask = ctx.task_id.subtask
        target = ctx.job.job_graph.vertex(edge.target_vertex)
        self.partitions = target.parallelism
        self.max_parallelism = target.max_parallelism
        self.partitioner = edge.partitioner
        self.key_fn = ctx.job.key_function(edge)
        self._next = self.subtask % self.partitions
        self.records = 0
        """Data records written (control records not counted)."""

    def collect(self, value: Any, ts: int | None, _input: int = 0) -> None:
        self.records += 1
        record = [ts, value]
        partitioner = self.partitioner
        if partitioner == Partitioner.FORWARD:
            self._write(self.subtask, record)
        elif partitioner == Partitioner.HASH:
            assert self.key_fn is not None
            key = self.key_fn(value)
            self._write(subtask_for_key(key, self.max_parallelism, self.partitions), record)
        elif partitioner == Partitioner.REBALANCE:
            self._write(self._next, record)
            self._next = (self._next + 1) % self.partitions
        else:
            self._to_all(record)

    def _write(self, partition: int, record: Any) -> None:
        self.sink.write(record, self.run_id, partition=partition)
        self._open.append([partition, record, None])

    def _to_all(self, record: Any) -> None:
        for partition in range(self.partitions):
            self._write(partition, record)

    def watermark(self, wm: int) -> None:
        """The producer's watermark (or `IDLE_WATERMARK`) to every consumer."""
        self._to_all({WATERMARK: [self.subtask, wm]})

    def finish(self) -> None:
        """End of input: the end marker to every consumer (committed by ``commit_final``)."""
        self._to_all({END: self.subtask})

    def replay(self, epochs: list[tuple[int, list[list[Any]]]], committed: int) -> int:
        """Write again every record of the epochs after ``committed`` to its partition."""
        written = 0
        for epoch, records in epochs:
            if epoch <= committed:
                continue
            for partition, record, _ts in records:
                self._write(int(partition), record)
            written += len(records)
        return written


class ExchangeWatermarks(WatermarkOutput):
    """A producer's watermark output: operators, then the exchange's control records."""

    def __init__(self, operators: Sequence[ChainedOperator], output: ExchangeOutput) -> None:
        super().__init__(operators, ())
        self.output = output

    def advance(self, wm: int) -> None:
        super().advance(wm)
        self.output.watermark(wm)

    def send_idle(self) -> None:
        self.output.watermark(IDLE_WATERMARK)


def open_exchange_output(ctx: TaskContext, edge: JobEdge, commits: SinkCommitter) -> ExchangeOutput:
    """Open the exchange's transactional producer as ``commits``' sink; the chain's tail."""
    sink = KafkaSink(
        ctx.config["bootstrap_servers"],
        str(edge.topic),
        job=ctx.job.name,
        vertex=ctx.vertex.vertex_id,
        subtask=ctx.task_id.subtask,
        delivery="exactly_once",
        run_id=ctx.job_id,
        kafka_config=ctx.config.get("kafka_config"),
    )
    sink.open()
    output = ExchangeOutput(sink, ctx, edge)
    commits.sink, commits.output = sink, output  # it commits per checkpoint, as for a sink
    return output


def watermark_output(
    operators: Sequence[ChainedOperator],
    writers: Sequence[Any],
    output: WriterOutput | SinkOutput | None,
) -> WatermarkOutput:
    """The task's watermark output: through the exchange when its tail writes one."""
    if isinstance(output, ExchangeOutput):
        return ExchangeWatermarks(operators, output)
    return WatermarkOutput(operators, writers)


# ------------------------------------------------------------------ consumer side
class ExchangeReader(SourceRunner):
    """Reads this subtask's partition of the exchange topic (see the module docstring)."""

    def __init__(self, ctx: TaskContext, counters: Counters, edge: JobEdge) -> None:
        super().__init__(ctx, counters)
        self.edge = edge
        self.producers = ctx.job.job_graph.vertex(edge.source_vertex).parallelism
        self.input_index = edge.input_index
        self.combiner = WatermarkCombiner(self.producers)
        self.ended: set[int] = set()
        self.skipped = 0
        """Records of another run of the job (another key) that were skipped."""
        self._idle_sent = False
        self._watermarks: WatermarkOutput | None = None
        self._restored_output: int | None = None

    def open(self, op_config: dict[str, Any], snapshot: dict[str, Any] | None) -> None:
        """Open the topic's reader (``op_config`` is unused: the edge says everything)."""
        ctx = self.ctx
        self.source = KafkaSource(
            ctx.config["bootstrap_servers"],
            str(self.edge.topic),
            subtask=ctx.task_id.subtask,
            parallelism=ctx.vertex.parallelism,
            start="earliest",
            group_id=f"streamer-{ctx.job.name}-{ctx.vertex.vertex_id}-exchange",
            kafka_config=ctx.config.get("kafka_config"),
        )
        if snapshot:
            self.source.restore(snapshot)
        self.source.open()

    def event_time_state(self) -> dict[str, Any]:
        output = None if self._watermarks is None else self._watermarks.current
        return {
            "exchange": self.combiner.snapshot(),
            "output": output,
            "idle_sent": self._idle_sent,
            "ended": sorted(self.ended),
        }

    def restore_event_time(self, state: dict[str, Any]) -> None:
        if state.get("exchange"):
            self.combiner.restore(state["exchange"])
        self._restored_output = state.get("output")
        self._idle_sent = bool(state.get("idle_sent"))
        self.ended = {int(p) for p in state.get("ended") or ()}

    @property
    def finished(self) -> bool:
        return len(self.ended) >= self.producers

    def _start(self, watermarks: WatermarkOutput) -> None:
        """`SourceRunner.run`'s loop, with the exchange's records and event time."""
        self._watermarks = watermarks
        if self._restored_output is not None:
            watermarks.current = self._restored_output

    def _take(self, batch: list[SourceRecord], head: Head, watermarks: WatermarkOutput) -> int:
        """Feed ``batch``'s data records to the chain, apply its control records."""
        n = 0
        run_id, index = self.ctx.job_id, self.input_index
        for rec in batch:
            if rec.key != run_id:
                self.skipped += 1
                continue
            value = rec.value
            if value.__class__ is list:
                head(value[1], value[0], index)
                n += 1
            elif WATERMARK in value:
                producer, wm = value[WATERMARK]
                self._combined(self.combiner.on_watermark(int(producer), int(wm)), watermarks)
            elif END in value:
                producer = int(value[END])
                self.ended.add(producer)
                self._combined(self.combiner.on_end_of_partition(producer), watermarks)
            else:
                log.warning("task %s: unknown exchange record %r", self.ctx, value)
        return n

    def _combined(self, wm: int | None, watermarks: WatermarkOutput) -> None:
        """After a control record: advance, or tell consumers every producer went idle."""
        if wm is not None:
            watermarks.advance(wm)
        idle = self.combiner.idle
        if idle and not self._idle_sent:
            watermarks.send_idle()
        self._idle_sent = idle

    def metrics(self) -> dict[str, Any]:
        return {**super().metrics(), "skipped_other_runs": self.skipped}


def open_exchange_reader(
    ctx: TaskContext, edge: JobEdge, counters: Counters, snapshot: dict[str, Any] | None
) -> ExchangeReader:
    """The consumer side's main loop, positioned at ``snapshot``'s offsets (restored)."""
    reader = ExchangeReader(ctx, counters, edge)
    reader.open({}, snapshot)
    return reader
