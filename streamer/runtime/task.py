"""``Task``: one subtask running in its own process (InputGate -> operators -> RecordWriter).

Lifecycle, driven by the deployment the worker hands over:

1. load the job by reference and check it builds the submitted graph;
2. open the outputs: one netlayer ``ResultPartition`` per output edge, served by
   this task's ``PartitionServer``, each fed by a ``RecordWriter``;
3. say ``task_hello`` to the coordinator with the data address and get the
   ``task_plan``: the producers' addresses and attempts for every input channel
   (and what to restore);
4. open the inputs: one netlayer ``InputGate`` over the channels of all input
   edges (``channel_input`` maps a flat channel index to the operator input);
   sources open a ``KafkaSource``, sinks a ``KafkaSink``;
5. report ``RUNNING``, run the main loop until end of input, cancel or error,
   then report ``FINISHED``, ``CANCELED`` or ``FAILED`` (with the traceback).

Wire records between tasks are ``[timestamp_ms | None, value]`` lists.

If the control connection to the coordinator is lost, the task stops: the
coordinator has declared it (or its worker) dead and may run a new attempt.

Control messages from the coordinator (single-task recovery): ``consumer_failed``
marks a subpartition unavailable (records for it are dropped), ``producer_failed``
queues an ``UnavailableEvent`` on a channel, ``update_partition_info`` swaps a
channel to a producer's new attempt through the ``CachedChannelProvider`` and
acks when done, ``cancel_task`` stops the task.

Threading: one asyncio loop runs everything, except the blocking Kafka consumer
calls, which run on one dedicated thread (the consumer is only touched there).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark
from netlayer.gate import ChannelInfo, InputGate, UnavailableEvent
from netlayer.partition import RecordWriter, ResultPartition
from netlayer.transport import PartitionServer
from streamer.api import load_job
from streamer.connectors import KafkaSink, KafkaSource
from streamer.graph import JobGraph, OperatorKind, Partitioner, TaskId
from streamer.rpc import Message, RpcConnection, connect
from streamer.runtime.checkpointing import BarrierAligner, task_dir
from streamer.runtime.eventtime import IDLE_WATERMARK
from streamer.runtime.operators import ChainedOperator, Output, TaskInfo, build_chain
from streamer.runtime.outputs import SinkOutput, WriterOutput

log = logging.getLogger(__name__)

RUNNING, FINISHED, CANCELED, FAILED = "RUNNING", "FINISHED", "CANCELED", "FAILED"


def _now_ms() -> int:
    return int(time.time() * 1000)


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


class Task:
    """One subtask; ``await Task(deployment).run()`` returns its final state."""

    def __init__(self, deployment: dict[str, Any]) -> None:
        self.dep = deployment
        self.config: dict[str, Any] = deployment["config"]
        self.job_id: str = deployment["job_id"]
        self.task_id = TaskId.parse(deployment["task"])
        self.attempt: int = deployment["attempt"]
        self.job = load_job(deployment["job_ref"], self.config.get("params"))
        self.job.check_graph(JobGraph.from_dict(deployment["job_graph"]))
        self.eg = self.job.execution_graph()
        self.vertex = self.eg.vertex_of(self.task_id)
        self.info = TaskInfo(
            self.job_id,
            self.job.name,
            self.vertex.vertex_id,
            self.task_id.subtask,
            self.vertex.parallelism,
            self.attempt,
        )
        self.hooks: dict[str, Any] = self.config.get("test_hooks") or {}
        self.rpc: RpcConnection | None = None
        self.server: PartitionServer | None = None
        self.partitions: dict[str, ResultPartition] = {}
        self.writers: list[RecordWriter] = []
        self.gate: InputGate | None = None
        self.gate_offsets: list[int] = []
        self.channel_input: list[int] = []
        self.source: KafkaSource | None = None
        self.sink: KafkaSink | None = None
        self.output: WriterOutput | SinkOutput | None = None
        self.kafka_thread = ThreadPoolExecutor(1, thread_name_prefix="kafka")
        self.records_processed = 0
        self.unavailable_events = 0
        self.started_at = time.time()
        self._main: asyncio.Task[None] | None = None
        self._cancel_requested = False
        self._background: set[asyncio.Future[None]] = set()
        self.checkpoint_root: str | None = self.config.get("checkpoint_dir")
        self.aligner: BarrierAligner | None = None
        self.operators: list[ChainedOperator] = []
        self.state_backend: Any = None
        self.restore: dict[str, Any] = {}
        self._triggers: list[int] = []
        self.watermarks: Any = None  # SourceWatermarks (source) or WatermarkCombiner (inputs)
        self.watermark: int | None = None
        self.checkpoints_taken = 0
        self._source_positions_at: dict[int, dict[str, Any]] = {}
        self._idle_sent = False

    def __str__(self) -> str:
        return f"{self.job_id}/{self.task_id}@{self.attempt}"

    # -------------------------------------------------------------------- run
    async def run(self) -> str:
        state = FAILED
        error: BaseException | None = None
        try:
            await self._open_outputs()
            plan = await self._hello()
            await self._open_inputs(plan)
            head = self._build_operators()
            await self._report_state(RUNNING)
            metrics = asyncio.ensure_future(self._metrics_loop())
            commits = asyncio.ensure_future(self._sink_commit_loop())
            self._main = asyncio.ensure_future(self._run_main(head))
            try:
                await self._main
                state = FINISHED
            except asyncio.CancelledError:
                if not self._cancel_requested:
                    raise
                state = CANCELED
            finally:
                metrics.cancel()
                commits.cancel()
            await self._finish(state)
        except Exception as exc:
            error = exc
            log.exception("task %s failed", self)
        if error is not None:
            await self._report_state(
                FAILED,
                error=f"{type(error).__name__}: {error}".splitlines()[0][:500],
                tb="".join(traceback.format_exception(error))[-8000:],
            )
        else:
            await self._report_state(state)
        await self._close()
        return FAILED if error is not None else state

    async def _run_main(self, head: Callable[[Any, int | None, int], None]) -> None:
        if self.source is not None:
            await self._source_loop(head)
        else:
            await self._input_loop(head)

    # ---------------------------------------------------------------- outputs
    async def _open_outputs(self) -> None:
        partitions = self.eg.result_partitions(self.task_id)
        if not partitions:
            return
        self.server = PartitionServer(self.config.get("bind_host", "127.0.0.1"))
        writers: list[tuple[RecordWriter, Callable[[Any], Any] | None]] = []
        for rp in partitions:
            edge = rp.edge
            partition = ResultPartition(
                rp.partition_id,
                len(rp.subpartitions),
                self.attempt,
                buffer_timeout=self.config.get("buffer_timeout", 0.005),
            )
            self.server.register(partition)
            self.partitions[rp.partition_id] = partition
            target = self.job.job_graph.vertex(edge.target_vertex)
            writer = RecordWriter(
                partition,
                str(edge.partitioner),  # type: ignore[arg-type]
                max_parallelism=target.max_parallelism,
                start_index=self.task_id.subtask,
            )
            self.writers.append(writer)
            key_fn = self.job.key_function(edge) if edge.partitioner == Partitioner.HASH else None
            writers.append((writer, key_fn))
        await self.server.start()
        self.output = WriterOutput(writers)

    def data_address(self) -> str:
        if self.server is None:
            return ""
        host = self.config.get("advertise_host") or self.server.host
        return f"{host}:{self.server.port}"

    # ------------------------------------------------------------------ hello
    async def _hello(self) -> dict[str, Any]:
        host, port = parse_address(self.config["coordinator"])
        self.rpc = await connect(
            host, port, self._on_control, name=f"task {self}", timeout=10.0, retries=20
        )
        self.rpc.on_close(self._on_control_lost)
        reply = await self.rpc.request(
            "task_hello",
            {
                "job_id": self.job_id,
                "task": str(self.task_id),
                "attempt": self.attempt,
                "data_address": self.data_address(),
                "pid": os.getpid(),
            },
            timeout=float(self.config.get("hello_timeout", 120.0)),
        )
        return dict(reply.body)

    # ----------------------------------------------------------------- inputs
    async def _open_inputs(self, plan: dict[str, Any]) -> None:
        gates = self.eg.input_gates(self.task_id)
        restore: dict[str, Any] = plan.get("restore") or self.dep.get("restore") or {}
        self.restore = restore
        head = self.vertex.operators[0]
        if head.kind == OperatorKind.KAFKA_SOURCE:
            self._open_source(head.config, restore.get("source"))
        tail = self.vertex.operators[-1]
        if tail.kind == OperatorKind.KAFKA_SINK:
            self._open_sink(tail.config)
        if not gates:
            return
        channels: list[ChannelInfo] = []
        for gate, planned in zip(gates, plan["inputs"], strict=True):
            self.gate_offsets.append(len(channels))
            for producer, where in zip(gate.channels, planned, strict=True):
                partition_id = f"{gate.edge.edge_id}@{producer.subtask}"
                address = parse_address(where["address"])
                channels.append(
                    ChannelInfo(partition_id, gate.subpartition, address, where["attempt"])
                )
                self.channel_input.append(gate.gate_index)
        self.gate = InputGate(
            channels,
            self.attempt,
            connect_timeout=float(self.config.get("connect_timeout", 10.0)),
            # end of input waits for a producer under recovery: its new attempt still
            # has records for us (alignment and watermarks do leave it out)
            wait_for_unavailable=True,
        )
        await self.gate.start()
        self.aligner = BarrierAligner(self.gate, self.gate.channels)  # type: ignore[arg-type]
        from streamer.runtime.eventtime import WatermarkCombiner

        self.watermarks = WatermarkCombiner(len(channels))

    def _open_source(self, config: dict[str, Any], snapshot: dict[str, Any] | None) -> None:
        self.source = KafkaSource(
            self.config["bootstrap_servers"],
            config["topic"],
            subtask=self.task_id.subtask,
            parallelism=self.vertex.parallelism,
            start=config.get("start", "earliest"),
            group_id=f"streamer-{self.job.name}-{self.vertex.vertex_id}",
            key_serde=config.get("key_serde", "str"),
            value_serde=config.get("value_serde", "json"),
            on_decode_error=config.get("on_decode_error", "fail"),
            dead_letter_topic=config.get("dead_letter_topic"),
            bounded=bool(config.get("bounded", False)),
        )
        if snapshot:
            self.source.restore(snapshot)
        self.source.open()

    def _open_sink(self, config: dict[str, Any]) -> None:
        self.sink = KafkaSink(
            self.config["bootstrap_servers"],
            config["topic"],
            job=self.job.name,
            vertex=self.vertex.vertex_id,
            subtask=self.task_id.subtask,
            delivery=config.get("delivery", "at_least_once"),
            key_serde=config.get("key_serde", "str"),
            value_serde=config.get("value_serde", "json"),
            run_id=self.job_id,
        )
        self.sink.open()
        key_uid = config.get("key_fn")
        self.output = SinkOutput(self.sink, None if key_uid is None else self.job.function(key_uid))

    def _build_operators(self) -> Callable[[Any, int | None, int], None]:
        """Wire the chain; returns the callable that takes ``(value, ts, input_index)``."""
        assert self.output is not None, f"vertex {self.vertex.vertex_id} has no output"
        tail: Output = self.output
        if any(
            op.kind in (OperatorKind.PROCESS, OperatorKind.JOIN) for op in self.vertex.operators
        ):
            self.state_backend = self._open_state_backend()
        operators, first = build_chain(self.job, self.vertex, tail, self.info, self.state_backend)
        self.operators = operators
        from streamer.runtime.join_factory import RuntimeIntervalJoin, attach_late_output

        for op in operators:
            if isinstance(op, RuntimeIntervalJoin):
                attach_late_output(op, self.config["bootstrap_servers"])
            saved = self.restore.get("operators", {}).get(op.spec.uid)
            if saved is not None or self.restore.get("keyed"):
                op.restore_state(saved)  # None: rebuild in-memory indexes from the state
        replay = self.restore.get("sink_replay_file")
        if replay and isinstance(self.output, SinkOutput):
            self._replay_sink(Path(replay), self.output)
        if operators:
            return operators[0].process
        collect = first.collect
        return lambda value, ts, _input: collect(value, ts)

    def _replay_sink(self, path: Path, output: SinkOutput) -> None:
        """Write again what the restored checkpoint holds beyond the sink's commit marker."""
        epochs = [(int(e), records) for e, records in orjson.loads(path.read_bytes())]
        committed = output.sink.committed_epoch()
        written = output.replay(epochs, committed)
        log.info(
            "task %s: commit marker at epoch %d; re-wrote %d records of later epochs",
            self, committed, written,
        )  # fmt: skip

    def _open_state_backend(self) -> Any:
        """RocksDB keyed state in this attempt's working directory, restored if asked."""
        from streamer.graph import key_group_range
        from streamer.state import KeyedStateBackend

        base = Path(self.config.get("state_dir") or Path.cwd() / "streamer-state")
        path = base / self.job_id / f"{str(self.task_id).replace('#', '-')}-a{self.attempt}"
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        maxp = self.vertex.max_parallelism
        groups = key_group_range(self.task_id.subtask, maxp, self.vertex.parallelism)
        sources = [(Path(d), meta) for d, meta in self.restore.get("keyed", [])]
        if sources:
            return KeyedStateBackend.restore(path, sources, max_parallelism=maxp, key_groups=groups)
        return KeyedStateBackend.open(path, max_parallelism=maxp, key_groups=groups)

    # ------------------------------------------------------------- main loops
    async def _source_loop(self, head: Callable[[Any, int | None, int], None]) -> None:
        source = self.source
        output = self.output
        assert source is not None and output is not None
        loop = asyncio.get_running_loop()
        config = self.vertex.operators[0].config
        assigner_uid = config.get("timestamp_assigner")
        assigner = None if assigner_uid is None else self.job.function(assigner_uid)
        bound = config.get("max_out_of_orderness_ms")
        if bound is not None:
            from streamer.runtime.eventtime import SourceWatermarks

            # idleness is opt-in (as in Flink): declaring a slow partition idle lets the
            # watermark pass its pending records, which then arrive late
            idle = self.config.get("idle_timeout_ms")
            self.watermarks = SourceWatermarks(
                int(bound), None if idle is None else int(idle), _now_ms
            )
            for partition in source.metrics.partitions:
                self.watermarks.partition_added(partition)
        marks = self.watermarks
        batch_size = int(self.config.get("source_batch", 500))
        while True:
            batch = await loop.run_in_executor(
                self.kafka_thread, source.poll_batch, batch_size, 0.05
            )
            for rec in batch:
                value = rec.value
                ts = rec.timestamp if assigner is None else assigner(value)
                if marks is not None:
                    marks.on_event(rec.partition, ts)
                head(value, ts, 0)
            self.records_processed += len(batch)
            if marks is not None:
                wm = marks.poll(_now_ms())
                if wm == IDLE_WATERMARK:
                    self._send_idle()
                elif wm is not None:
                    self._advance_watermark(wm)
            if output.waits:
                await output.drain()
            while self._triggers:
                await self._source_checkpoint(self._triggers.pop(0))
            if not batch:
                self._periodic_sink_commit()
                if source.finished:
                    return

    async def _source_checkpoint(self, checkpoint_id: int) -> None:
        """Snapshot the positions after the last emitted record, then send the barrier."""
        assert self.source is not None
        loop = asyncio.get_running_loop()
        positions = await loop.run_in_executor(self.kafka_thread, self.source.snapshot)
        self._source_positions_at[checkpoint_id] = positions
        self._snapshot(checkpoint_id, source=positions)

    async def _input_loop(self, head: Callable[[Any, int | None, int], None]) -> None:
        gate = self.gate
        output = self.output
        assert gate is not None and output is not None
        channel_input = self.channel_input
        while True:
            batch = await gate.next_batch()
            if batch is None:
                return  # every channel reached EndOfPartition
            channel, items = batch
            inp = channel_input[channel]
            n = 0
            for item in items:
                if item.__class__ is list:
                    head(item[1], item[0], inp)
                    n += 1
                else:
                    self._on_event(channel, item)
            self.records_processed += n
            if output.waits:
                await output.drain()
            self._periodic_sink_commit()

    def _on_event(self, channel: int, event: Any) -> None:
        aligner = self.aligner
        assert aligner is not None
        if isinstance(event, CheckpointBarrier):
            done = aligner.on_barrier(channel, event.checkpoint_id, time.monotonic())
            if done is not None:
                self._snapshot(done)
        elif isinstance(event, Watermark):
            self._on_combined(self.watermarks.on_watermark(channel, event.timestamp))
        elif isinstance(event, UnavailableEvent):
            self.unavailable_events += 1
            log.info("task %s: channel %d unavailable (%s)", self, channel, event.reason)
            self._on_combined(self.watermarks.set_available(channel, False))
            done = aligner.on_channel_changed()
            if done is not None:
                self._snapshot(done)
        elif isinstance(event, EndOfPartition):
            self._on_combined(self.watermarks.on_end_of_partition(channel))
            done = aligner.on_channel_changed()
            if done is not None:
                self._snapshot(done)
        else:
            log.warning("task %s: unknown event %r on channel %d", self, event, channel)

    def _on_combined(self, wm: int | None) -> None:
        """After the combiner saw an event: advance, or tell consumers we went idle."""
        if wm is not None:
            self._advance_watermark(wm)
        idle = self.watermarks.idle
        if idle and not self._idle_sent:
            self._send_idle()
        self._idle_sent = idle

    def _send_idle(self) -> None:
        """An idle marker goes to consumers only; it is not a time for our operators."""
        event = Watermark(IDLE_WATERMARK)
        for writer in self.writers:
            writer.broadcast_event(event)

    def _advance_watermark(self, wm: int) -> None:
        """Event time moved to ``wm``: operators expire state, then the watermark goes on."""
        self.watermark = wm
        for op in self.operators:
            op.on_watermark(wm)
        event = Watermark(wm)
        for writer in self.writers:
            writer.broadcast_event(event)

    # ------------------------------------------------------------ checkpoints
    def _snapshot(self, checkpoint_id: int, *, source: dict[str, Any] | None = None) -> None:
        """Write this task's part of checkpoint ``checkpoint_id``, forward the barrier, ack.

        Runs on the loop between records, after alignment: the state is exactly
        that of the records before the barrier on every channel.
        """
        if self.checkpoint_root is None:
            return
        started = time.monotonic()
        directory = task_dir(self.checkpoint_root, checkpoint_id, str(self.task_id))
        directory.mkdir(parents=True, exist_ok=True)
        meta: dict[str, Any] = {"task": str(self.task_id), "attempt": self.attempt}
        if source is not None:
            meta["source"] = source
        if self.state_backend is not None:
            meta["keyed"] = self.state_backend.snapshot(directory / "keyed")
        operators = {}
        for op in self.operators:
            saved = op.snapshot_state()
            if saved is not None:
                operators[op.spec.uid] = saved
        if operators:
            meta["operators"] = operators
        if isinstance(self.output, SinkOutput):
            pending = self.output.on_barrier(checkpoint_id)
            if self.output.exactly_once:
                (directory / "sink.json").write_bytes(orjson.dumps(pending))
                meta["sink_records"] = sum(len(records) for _, records in pending)
        (directory / "task.json").write_bytes(orjson.dumps(meta))
        barrier = CheckpointBarrier(checkpoint_id, int(time.time() * 1000))
        for writer in self.writers:
            writer.broadcast_event(barrier)
        self.checkpoints_taken += 1
        body = {
            "job_id": self.job_id,
            "task": str(self.task_id),
            "attempt": self.attempt,
            "checkpoint_id": checkpoint_id,
            "state": {
                "dir": str(directory),
                "keyed": meta.get("keyed"),
                "source": source,
                "sink_records": meta.get("sink_records"),
                "snapshot_seconds": round(time.monotonic() - started, 4),
            },
        }
        self._send("checkpoint_ack", body)

    def _send(self, kind: str, body: dict[str, Any]) -> None:
        if self.rpc is None or self.rpc.closed:
            return
        fut = asyncio.ensure_future(self.rpc.notify(kind, body))
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    def _checkpoint_complete(self, checkpoint_id: int) -> None:
        if isinstance(self.output, SinkOutput):
            self.output.on_complete(checkpoint_id)
            die_at = self.hooks.get("die_after_commit", {}).get(str(self.task_id))
            if self.attempt == 0 and die_at is not None and checkpoint_id >= die_at:
                os.kill(os.getpid(), signal.SIGKILL)  # committed, and nobody was told
            body = {
                "job_id": self.job_id,
                "task": str(self.task_id),
                "attempt": self.attempt,
                "checkpoint_id": checkpoint_id,
            }
            self._send("checkpoint_committed", body)
        positions = self._source_positions_at.pop(checkpoint_id, None)
        for older in [c for c in self._source_positions_at if c < checkpoint_id]:
            del self._source_positions_at[older]
        if self.source is not None and positions is not None:
            # for lag monitoring only: the checkpoint is what recovery uses
            self.kafka_thread.submit(self.source.commit_offsets, positions)

    _last_sink_commit = 0.0
    _sink_epoch = 0

    def _periodic_sink_commit(self) -> None:
        """Without checkpoints, a sink makes its output durable about once a second."""
        if self.sink is None or self.config.get("checkpoint_interval") is not None:
            return  # with periodic checkpoints, the sink commits when they complete
        now = time.monotonic()
        if now - self._last_sink_commit < float(self.config.get("sink_commit_interval", 1.0)):
            return
        self._last_sink_commit = now
        self._commit_sink_now()

    async def _sink_commit_loop(self) -> None:
        """Commit a quiet sink's output too (between batches, on the task's loop)."""
        interval = float(self.config.get("sink_commit_interval", 1.0))
        while True:
            await asyncio.sleep(interval)
            self._periodic_sink_commit()

    def _commit_sink_now(self) -> None:
        """Seal and commit everything written so far (not tied to a checkpoint)."""
        assert isinstance(self.output, SinkOutput)
        self._sink_epoch += 1
        # above every checkpoint id: it also covers an epoch a savepoint sealed
        epoch = 1_000_000_000_000 + self._sink_epoch
        self.output.on_barrier(epoch)
        self.output.on_complete(epoch)

    # ----------------------------------------------------------------- finish
    async def _finish(self, state: str) -> None:
        if state == FINISHED:
            for writer in self.writers:
                writer.finish()
            timeout = float(self.config.get("finish_timeout", 30.0))
            for partition in self.partitions.values():
                try:
                    await asyncio.wait_for(partition.wait_consumed(), timeout)
                except TimeoutError:
                    log.warning("task %s: consumers of %s did not drain", self, partition)
            if self.sink is not None:
                self._commit_sink_now()

    async def _close(self) -> None:
        await self._send_metrics()
        if self.gate is not None:
            await self.gate.close()
        for partition in self.partitions.values():
            partition.close()
        if self.server is not None:
            await self.server.close()
        if self.sink is not None:
            self.sink.close()
        if self.source is not None:
            await asyncio.get_running_loop().run_in_executor(self.kafka_thread, self.source.close)
        self.kafka_thread.shutdown(wait=False)
        if self.rpc is not None:
            await self.rpc.close(reason="task ended")

    # ---------------------------------------------------------------- control
    async def _on_control(self, conn: RpcConnection, msg: Message) -> None:
        body = msg.body
        if msg.kind == "consumer_failed":
            partition = self.partitions.get(body["partition_id"])
            if partition is not None:
                partition.mark_consumer_failed(body["subpartition"])
        elif msg.kind == "producer_failed":
            if self.gate is not None:
                index = self.gate_offsets[body["gate"]] + body["channel"]
                self.gate.producer_failed(index, reason="coordinator: producer failed")
        elif msg.kind == "update_partition_info":
            self._update_partition_info(conn, msg)
        elif msg.kind == "trigger_checkpoint":
            self._triggers.append(body["checkpoint_id"])
        elif msg.kind == "checkpoint_complete":
            self._checkpoint_complete(body["checkpoint_id"])
        elif msg.kind == "checkpoint_abort":
            if self.aligner is not None:
                self.aligner.abort(body["checkpoint_id"])
        elif msg.kind == "cancel_task":
            self._cancel_requested = True
            if self._main is not None:
                self._main.cancel()
            if msg.wants_reply:
                await conn.reply(msg, "ok")
        else:
            raise ValueError(f"task {self} does not handle {msg.kind!r}")

    def _on_control_lost(self, conn: RpcConnection) -> None:
        """Without its coordinator a task cannot be coordinated: it stops (CANCELED)."""
        if self._main is not None and not self._main.done():
            log.warning("task %s: control connection lost (%s); stopping", self, conn.close_reason)
            self._cancel_requested = True
            self._main.cancel()

    def _update_partition_info(self, conn: RpcConnection, msg: Message) -> None:
        body = msg.body
        assert self.gate is not None
        index = self.gate_offsets[body["gate"]] + body["channel"]
        never_ack = str(self.task_id) in self.hooks.get("never_ack_channel_update", ())

        def done(_channel: int, error: Exception | None) -> None:
            if never_ack:
                log.warning("task %s: test hook swallows the channel update ack", self)
                return
            if error is None and self.watermarks is not None:
                self.watermarks.set_available(index, True)
            reply = (
                conn.reply(msg, "ack")
                if error is None
                else conn.reply_error(msg, f"channel update failed: {error}")
            )
            self._background.add(fut := asyncio.ensure_future(reply))
            fut.add_done_callback(self._background.discard)

        self.gate.channel_provider.update_partition_info(
            index, parse_address(body["address"]), body["attempt"], done
        )

    # ---------------------------------------------------------------- reports
    async def _report_state(self, state: str, *, error: str = "", tb: str = "") -> None:
        if self.rpc is None or self.rpc.closed:
            return
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "task": str(self.task_id),
            "attempt": self.attempt,
            "state": state,
        }
        if error:
            body["error"] = error
            body["traceback"] = tb
        try:
            await self.rpc.notify("task_state", body)
        except ConnectionError:
            log.warning("task %s: could not report %s to the coordinator", self, state)

    def metrics(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "records_processed": self.records_processed,
            "unavailable_events": self.unavailable_events,
            "pid": os.getpid(),
            "time": time.time(),
        }
        if self.partitions:
            out["partitions"] = {
                pid: {
                    "records_out": sum(sp.metrics.records_out for sp in p.subpartitions),
                    "dropped": [sp.metrics.records_dropped for sp in p.subpartitions],
                }
                for pid, p in self.partitions.items()
            }
        if self.gate is not None:
            out["channels"] = [
                {"records_in": ch.metrics.records_in, "cleared": ch.metrics.records_cleared}
                for ch in self.gate.channels
            ]
        if self.source is not None:
            out["source"] = {**asdict(self.source.metrics), "snapshot": self._source_positions()}
        if self.sink is not None:
            out["sink"] = asdict(self.sink.metrics)
        operators = {
            op.spec.uid: asdict(op.metrics)
            for op in self.operators
            if hasattr(op, "metrics") and hasattr(op.metrics, "__dataclass_fields__")
        }
        if operators:
            out["operators"] = operators
        if self.watermark is not None:
            out["watermark"] = self.watermark
        return out

    def _source_positions(self) -> dict[str, Any]:
        assert self.source is not None
        return {"topic": self.source.topic, "positions": self.source.positions()}

    async def _send_metrics(self) -> None:
        if self.rpc is None or self.rpc.closed:
            return
        body = {
            "job_id": self.job_id,
            "task": str(self.task_id),
            "attempt": self.attempt,
            "metrics": self.metrics(),
        }
        with contextlib.suppress(ConnectionError):
            await self.rpc.notify("task_metrics", body)

    async def _metrics_loop(self) -> None:
        interval = float(self.config.get("metrics_interval", 1.0))
        while True:
            await asyncio.sleep(interval)
            await self._send_metrics()
