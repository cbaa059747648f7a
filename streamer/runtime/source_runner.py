"""``SourceRunner``: the main loop of a source task (a ``KafkaSource`` at the chain's head).

Polls batches of records on the Kafka thread and feeds them to the chain on the
loop; assigns timestamps and generates source watermarks (bounded
out-of-orderness, per partition, idleness opt-in), sent at most once per
``watermark_interval`` (Flink's auto-watermark interval, default 200 ms; 0: after
every batch): at low rates a watermark per batch is one more frame to every
consumer per record; takes the checkpoints the
coordinator triggers between batches: positions after the last emitted record,
then the task's snapshot (which sends the barrier). When a checkpoint completes
it commits those positions to Kafka (for lag monitoring only: recovery uses the
checkpoint). Its consumer lag per partition (``metrics()["lag"]``) is refreshed on
the Kafka thread once per ``metrics_interval``, from librdkafka's cached high watermarks.

Lossless single-task recovery (``runtime.causal``): the order of a source's
output depends on how its polls interleave its partitions and on where the
coordinator's checkpoint triggers fall between batches. With a causal log on, it
emits a determinant before each batch (``["s", [[partition, n], ...]]``, runs of
partitions in emission order), before each checkpoint barrier (``["b", id]``) and
before each watermark or idle marker (``["w", wm]``: when one is sent depends on
the clock);
a restarted attempt seeks to the restored checkpoint's offsets and replays that
log: it polls into per-partition buffers and emits exactly the logged runs, takes
the logged (aborted) checkpoints and sends the logged watermarks at the same
points, then emits what is left in its buffers as its first live batch (so the
positions a live checkpoint stores are those of emitted records) and goes on live.

Threading: the loop, except the blocking Kafka consumer calls, which run on one
dedicated thread (the consumer is only touched there).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

from streamer.connectors import KafkaSource
from streamer.connectors.source import SourceRecord
from streamer.runtime.causal import DET, ReplayDiverged
from streamer.runtime.chain import Head
from streamer.runtime.eventtime import IDLE_WATERMARK, SourceWatermarks
from streamer.runtime.latency_trace import LatencyTrace
from streamer.runtime.outputs import SinkOutput, WriterOutput
from streamer.runtime.sink_commits import SinkCommitter
from streamer.runtime.snapshots import TaskSnapshotter
from streamer.runtime.task_context import TaskContext
from streamer.runtime.task_metrics import Counters
from streamer.runtime.watermark_output import WatermarkOutput


def _now_ms() -> int:
    return int(time.time() * 1000)


def _nothing() -> None:
    pass


def _runs(batch: list[SourceRecord]) -> list[list[int]]:
    """``[[partition, n], ...]``: the batch's partitions in emission order, run-length coded."""
    runs: list[list[int]] = []
    for rec in batch:
        if runs and runs[-1][0] == rec.partition:
            runs[-1][1] += 1
        else:
            runs.append([rec.partition, 1])
    return runs


class SourceRunner:
    def __init__(self, ctx: TaskContext, counters: Counters) -> None:
        self.ctx = ctx
        self.counters = counters
        self.source: KafkaSource | None = None
        self.kafka_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self.marks: SourceWatermarks | None = None
        self._triggers: list[int] = []
        self._positions_at: dict[int, dict[str, Any]] = {}
        self._broadcast: Callable[[Any], None] | None = None
        self._replay: deque[list[Any]] = deque()
        self._buffers: dict[int, deque[SourceRecord]] = {}
        self._lags: dict[str, int] = {}
        self._lags_due = 0.0
        self._lags_interval = float(ctx.config.get("metrics_interval", 1.0))
        self._wm_interval = float(ctx.config.get("watermark_interval", 0.2))
        self._wm_due = 0.0
        self._idle: Callable[[], None] = _nothing
        self.trace = LatencyTrace.for_task(ctx)
        """Sampled stage times for a latency breakdown (None: off, the default)."""

    def enable_causal_log(
        self, broadcast: Callable[[Any], None] | None, replay: list[Any] | None
    ) -> None:
        """Emit determinants through ``broadcast`` (None: no consumers) and replay
        ``replay`` (a log collected from the consumers) first."""
        self._broadcast = broadcast
        self._replay = deque(list(d) for d in replay or ())

    def event_time_state(self) -> dict[str, Any]:
        return {} if self.marks is None else {"source": self.marks.snapshot()}

    def restore_event_time(self, state: dict[str, Any]) -> None:
        if self.marks is not None and state.get("source"):
            self.marks.restore(state["source"])

    def open(self, op_config: dict[str, Any], snapshot: dict[str, Any] | None) -> None:
        """Open the source (seeking to ``snapshot``'s positions when restoring)."""
        ctx = self.ctx
        self.source = KafkaSource(
            ctx.config["bootstrap_servers"],
            op_config["topic"],
            subtask=ctx.task_id.subtask,
            parallelism=ctx.vertex.parallelism,
            start=op_config.get("start", "earliest"),
            group_id=f"streamer-{ctx.job.name}-{ctx.vertex.vertex_id}",
            key_serde=op_config.get("key_serde", "str"),
            value_serde=op_config.get("value_serde", "json"),
            on_decode_error=op_config.get("on_decode_error", "fail"),
            dead_letter_topic=op_config.get("dead_letter_topic"),
            bounded=bool(op_config.get("bounded", False)),
            kafka_config=ctx.config.get("kafka_config"),
        )
        if snapshot:
            self.source.restore(snapshot)
        self.source.open()
        bound = op_config.get("max_out_of_orderness_ms")
        if bound is not None:
            # idleness is opt-in (as in Flink): declaring a slow partition idle lets the
            # watermark pass its pending records, which then arrive late
            idle = ctx.config.get("idle_timeout_ms")
            self.marks = SourceWatermarks(int(bound), None if idle is None else int(idle), _now_ms)
            for partition in self.source.metrics.partitions:
                self.marks.partition_added(partition)

    # ---------------------------------------------------------------- control
    def trigger(self, checkpoint_id: int) -> None:
        """The coordinator triggers checkpoint ``checkpoint_id``: taken after this batch."""
        self._triggers.append(checkpoint_id)

    def on_checkpoint_complete(self, checkpoint_id: int) -> None:
        positions = self._positions_at.pop(checkpoint_id, None)
        for older in [c for c in self._positions_at if c < checkpoint_id]:
            del self._positions_at[older]
        if self.source is not None and positions is not None:
            # for lag monitoring only: the checkpoint is what recovery uses
            self.kafka_thread.submit(self.source.commit_offsets, positions)

    # ------------------------------------------------------------------- loop
    async def run(
        self,
        head: Head,
        output: WriterOutput | SinkOutput,
        watermarks: WatermarkOutput,
        snapshotter: TaskSnapshotter,
        commits: SinkCommitter,
    ) -> None:
        """Until a bounded source is done (or the task is cancelled).

        Subclasses (the kafka exchange's reader) change what a batch does with
        `_take`, when the input is over with `finished`, and what happens first
        with `_start`; the batch loop, replay and checkpoints stay here."""
        assert self.source is not None
        self._start(watermarks)
        self._idle = output.idle
        batch_size = int(self.ctx.config.get("source_batch", 500))
        broadcast = self._broadcast
        while True:
            if self._replay:
                entry = self._replay.popleft()
                if entry[0] == "b":  # a (since aborted) checkpoint was taken here
                    await self._checkpoint(int(entry[1]), snapshotter)
                    continue
                if entry[0] == "w":  # a watermark was sent here
                    self._replay_watermark(int(entry[1]), watermarks)
                    continue
                batch = await self._replayed(entry[1], batch_size)
                live = False
            elif self._buffers:
                batch = self._drain_buffers()  # the first live batch after a replay
                live = True
            else:
                batch = await self._next_live_batch(batch_size)
                live = True
            if batch and broadcast is not None:
                broadcast({DET: ["s", _runs(batch)]})
            self.counters.records_processed += self._take(batch, head, watermarks)
            if live and self.marks is not None:
                self._maybe_watermark(watermarks)
            if output.waits:
                await output.drain()
            while self._triggers and not self._replay and not self._buffers:
                await self._checkpoint(self._triggers.pop(0), snapshotter)
            if not batch and not self._replay:
                commits.maybe_commit()
                if self.finished:
                    return

    @property
    def finished(self) -> bool:
        """The input is over (a bounded source read to its end)."""
        return self.source is not None and self.source.finished

    def _start(self, watermarks: WatermarkOutput) -> None:
        """Before the first batch (a hook)."""

    async def _next_live_batch(self, batch_size: int) -> list[SourceRecord]:
        """What librdkafka already fetched is taken on the loop at once (after one turn
        of the loop); only an empty queue waits, on the Kafka thread (no thread hop per
        busy batch)."""
        assert self.source is not None
        batch = [] if self.source.discovery_due else self._poll(batch_size, 0.0)
        if batch:
            # still one trip through the event loop per batch: without it a busy source
            # starves its own flush timers, sockets and checkpoint triggers
            await asyncio.sleep(0)
            return batch
        self._idle()  # nothing fetched: what the outputs hold goes now (see WriterOutput.idle)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.kafka_thread, self._poll, batch_size, 0.05)

    def _take(self, batch: list[SourceRecord], head: Head, watermarks: WatermarkOutput) -> int:
        """Feed ``batch`` to the chain (event time from the record or the assigner);
        returns the records fed."""
        assigner = self._assigner
        marks = self.marks
        trace = self.trace
        if trace is not None:
            trace.source_batch("polled", batch)
        for rec in batch:
            value = rec.value
            ts = rec.timestamp if assigner is None else assigner(value)
            if marks is not None:
                marks.on_event(rec.partition, ts)
            head(value, ts, 0)
        if trace is not None:
            trace.source_batch("emitted", batch)
        return len(batch)

    def _maybe_watermark(self, watermarks: WatermarkOutput) -> None:
        """After a live batch (or an empty poll): send the watermark or idle marker, if
        one is due and there is one (once per ``watermark_interval``)."""
        assert self.marks is not None
        now = time.monotonic()
        if now < self._wm_due:
            return
        wm = self.marks.poll(_now_ms())
        if wm is None:
            return
        self._wm_due = now + self._wm_interval
        self._send_watermark(wm, watermarks)

    def _replay_watermark(self, wm: int, watermarks: WatermarkOutput) -> None:
        """Send a logged watermark again, at the point the log says."""
        if self.marks is not None:
            self.marks.replayed(wm)
        self._send_watermark(wm, watermarks)

    def _send_watermark(self, wm: int, watermarks: WatermarkOutput) -> None:
        """Its determinant (with a causal log), then the watermark or idle marker."""
        if self._broadcast is not None:
            self._broadcast({DET: ["w", wm]})
        if wm == IDLE_WATERMARK:
            watermarks.send_idle()
        else:
            watermarks.advance(wm)

    @functools.cached_property
    def _assigner(self) -> Callable[[Any], int] | None:
        uid = self.ctx.vertex.operators[0].config.get("timestamp_assigner")
        return None if uid is None else self.ctx.job.function(uid)

    async def _replayed(self, runs: list[list[int]], batch_size: int) -> list[SourceRecord]:
        """The logged batch: ``runs`` of records per partition, polled into buffers."""
        assert self.source is not None
        loop = asyncio.get_running_loop()
        need: dict[int, int] = {}
        for partition, n in runs:
            need[partition] = need.get(partition, 0) + n
        deadline = time.monotonic() + 30.0
        while any(len(self._buffers.get(p, ())) < n for p, n in need.items()):
            if time.monotonic() > deadline:
                raise ReplayDiverged(
                    "cannot replay from checkpoint: the source's logged records did not "
                    f"come back within 30 s (needed {need})"
                )
            polled = await loop.run_in_executor(self.kafka_thread, self._poll, batch_size, 0.05)
            for rec in polled:
                self._buffers.setdefault(rec.partition, deque()).append(rec)
        batch = [self._buffers[p].popleft() for p, n in runs for _ in range(n)]
        self._buffers = {p: b for p, b in self._buffers.items() if b}
        return batch

    def _poll(self, batch_size: int, timeout: float) -> list[SourceRecord]:
        """A batch (waiting up to ``timeout``: then on the Kafka thread), and the
        consumer lag once per metrics interval. Never called concurrently."""
        assert self.source is not None
        batch = self.source.poll_batch(batch_size, timeout)
        now = time.monotonic()
        if now >= self._lags_due:
            self._lags_due = now + self._lags_interval
            self._lags = self.source.lags()
        return batch

    def _drain_buffers(self) -> list[SourceRecord]:
        batch = [rec for buffered in self._buffers.values() for rec in buffered]
        self._buffers = {}
        return batch

    async def _checkpoint(self, checkpoint_id: int, snapshotter: TaskSnapshotter) -> None:
        """Snapshot the positions after the last emitted record, then the task's state."""
        assert self.source is not None
        if self._broadcast is not None:
            self._broadcast({DET: ["b", checkpoint_id]})
        loop = asyncio.get_running_loop()
        positions = await loop.run_in_executor(self.kafka_thread, self.source.snapshot)
        self._positions_at[checkpoint_id] = positions
        snapshotter.take(checkpoint_id, source=positions)

    # ---------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        assert self.source is not None
        snapshot = {"topic": self.source.topic, "positions": self.source.positions()}
        return {**asdict(self.source.metrics), "snapshot": snapshot, "lag": dict(self._lags)}

    async def close(self) -> None:
        if self.trace is not None:
            self.trace.flush()
        if self.source is not None:
            await asyncio.get_running_loop().run_in_executor(self.kafka_thread, self.source.close)
        self.kafka_thread.shutdown(wait=False)
