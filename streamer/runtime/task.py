"""``Task``: one subtask running in its own process; its lifecycle, nothing else.

Driven by the deployment the worker hands over:

1. load the job by reference and check it builds the submitted graph
   (``TaskContext``);
2. open the outputs: result partitions, their server and writers
   (``NetworkOutputs``);
3. say ``task_hello`` to the coordinator with the data address and get the
   ``task_plan``: the producers' addresses and attempts for every input channel,
   and what to restore (``CoordinatorLink``);
4. open the inputs: a Kafka source (``SourceRunner``), a Kafka sink
   (``SinkCommitter``), the input gate (``InputProcessor``);
5. build the operator chain with its keyed state, restored (``chain``), and the
   snapshot taker (``TaskSnapshotter``);
6. report ``RUNNING``, run the main loop (the source's or the input processor's)
   until end of input, cancel or error, then report ``FINISHED``, ``CANCELED``
   or ``FAILED`` (with the traceback), and close everything.

Control messages are the ``ControlHandler``'s; metrics are read by
``task_metrics.collect``; faults come only from ``runtime.faults`` (tests).
If the control connection to the coordinator is lost, the task stops
(CANCELED): the coordinator has declared it (or its worker) dead and may run a
new attempt. Wire records between tasks are ``[timestamp_ms | None, value]``.

Threading: one asyncio loop runs everything, except the blocking Kafka consumer
calls (on the source's thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from typing import Any

from streamer.graph import OperatorKind
from streamer.rpc import RpcConnection, TaskState
from streamer.runtime.chain import EarlyState, TaskChain, build_task_chain
from streamer.runtime.control import ControlHandler
from streamer.runtime.coordinator_link import AttemptSuperseded, CoordinatorLink
from streamer.runtime.faults import FaultHooks
from streamer.runtime.input_processor import InputProcessor
from streamer.runtime.kafka_exchange import (
    ExchangeOutput,
    open_exchange_output,
    open_exchange_reader,
    reads_exchange,
    watermark_output,
    writes_exchange,
)
from streamer.runtime.outputs import NetworkOutputs, SinkOutput, WriterOutput
from streamer.runtime.sink_commits import SinkCommitter
from streamer.runtime.snapshots import TaskSnapshotter
from streamer.runtime.source_runner import SourceRunner
from streamer.runtime.task_context import TaskContext
from streamer.runtime.task_metrics import Counters, MetricSources, PhaseClock, collect
from streamer.runtime.watermark_output import WatermarkOutput

log = logging.getLogger(__name__)

FAILED = TaskState.FAILED


class Task:
    """One subtask; ``await Task(deployment).run()`` returns its final state.

    ``hooks`` are the fault hooks (default: from ``STREAMER_FAULT_HOOKS``, see
    ``runtime.faults``; none when it is unset).
    """

    def __init__(self, deployment: dict[str, Any], *, hooks: FaultHooks | None = None) -> None:
        self.ctx = TaskContext.from_deployment(deployment)
        self.hooks = FaultHooks.from_env() if hooks is None else hooks
        self.counters = Counters()
        self.link = CoordinatorLink(self.ctx)
        self.outputs = NetworkOutputs(self.ctx)
        self.commits = SinkCommitter(self.ctx, self.link.send, self.hooks)
        self.control = ControlHandler(self.ctx.task, self.link, self.hooks, self.cancel)
        self.metric_sources = MetricSources(self.counters, self.outputs.partitions)
        self.source: SourceRunner | None = None
        self.inputs: InputProcessor | None = None
        self.chain: TaskChain | None = None
        self.watermarks: WatermarkOutput | None = None
        self.snapshots: TaskSnapshotter | None = None
        self.output: WriterOutput | SinkOutput | None = None
        self._main: asyncio.Future[None] | None = None
        self._cancel_requested = False
        self._side_error: BaseException | None = None

    def __str__(self) -> str:
        return str(self.ctx)

    # -------------------------------------------------------------------- run
    async def run(self) -> TaskState:
        state = FAILED
        error: BaseException | None = None
        try:
            await self._open()
            await self.link.report_state(TaskState.RUNNING)
            state = await self._run_main()
            await self._finish(state)
        except AttemptSuperseded as exc:
            log.info("task %s ends without running: %s", self, exc)
            await self._close()
            return TaskState.CANCELED
        except Exception as exc:
            error = exc
            log.exception("task %s failed", self)
        if error is not None:
            await self.link.report_state(
                FAILED,
                error=f"{type(error).__name__}: {error}".splitlines()[0][:500],
                tb="".join(traceback.format_exception(error))[-8000:],
            )
        else:
            await self.link.report_state(state)
        await self._close()
        return FAILED if error is not None else state

    async def _run_main(self) -> TaskState:
        side = [
            asyncio.ensure_future(self._metrics_loop()),
            asyncio.ensure_future(self.commits.run()),
        ]
        for fut in side:
            fut.add_done_callback(self._side_done)
        self._main = asyncio.ensure_future(self._main_loop())
        if self._cancel_requested:  # canceled while it was opening
            self._main.cancel()
        try:
            await self._main
            return TaskState.FINISHED
        except asyncio.CancelledError:
            if self._side_error is not None:
                raise self._side_error from None
            if not self._cancel_requested:
                raise
            return TaskState.CANCELED
        finally:
            for fut in side:
                fut.cancel()

    def _side_done(self, fut: asyncio.Future[None]) -> None:
        """A side loop (metrics, sink commits) ended: its error fails the task."""
        if fut.cancelled() or fut.exception() is None:
            return
        self._side_error = fut.exception()
        if self._main is not None:
            self._main.cancel()

    async def _main_loop(self) -> None:
        assert self.chain is not None and self.output is not None
        assert self.watermarks is not None and self.snapshots is not None
        parts = (self.chain.head, self.output, self.watermarks, self.snapshots, self.commits)
        if self.source is not None:
            await self.source.run(*parts)
        elif self.inputs is not None:
            await self.inputs.run(*parts)
        else:
            raise RuntimeError(f"task {self} has neither a source nor inputs")

    def cancel(self) -> None:
        """Stop the main loop; the task ends CANCELED."""
        self._cancel_requested = True
        if self._main is not None and not self._main.done():
            self._main.cancel()

    def _on_control_lost(self, conn: RpcConnection) -> None:
        """Without its coordinator a task cannot be coordinated: it stops (CANCELED)."""
        if self._main is not None and not self._main.done():
            log.warning("task %s: control connection lost (%s); stopping", self, conn.close_reason)
            self.cancel()

    # ------------------------------------------------------------------- open
    async def _open(self) -> None:
        ctx, control, metrics = self.ctx, self.control, self.metric_sources
        clock = PhaseClock()
        await self.outputs.open()
        control.partitions = self.outputs.partitions
        self.output = self.outputs.output
        clock.lap("outputs")
        early = EarlyState(ctx)  # the state restore overlaps the hello's answer
        try:
            plan = await self.link.hello(
                self.outputs.data_address(), control.handle, self._on_control_lost, early.open
            )
        except BaseException:
            early.close()
            raise
        clock.lap("hello_and_state")
        restore: dict[str, Any] = plan.get("restore") or ctx.deployment.get("restore") or {}
        backend = early.take(restore)
        self.outputs.restore(restore)
        head, tail = ctx.vertex.operators[0], ctx.vertex.operators[-1]
        exchange_in, exchange_out = reads_exchange(ctx), writes_exchange(ctx)
        if head.kind == OperatorKind.KAFKA_SOURCE:
            self.source = control.source = SourceRunner(ctx, self.counters)
            self.source.open(head.config, restore.get("source"))
            metrics.source = self.source.metrics
        elif exchange_in is not None:  # a kafka exchange's consumer: a source of its topic
            self.source = control.source = open_exchange_reader(
                ctx, exchange_in, self.counters, restore.get("source")
            )
            metrics.source = self.source.metrics
        if tail.kind == OperatorKind.KAFKA_SINK:
            self.output = self.commits.open(tail.config)
            control.commits = self.commits
            metrics.sink = self.commits.sink
        elif exchange_out is not None:  # a kafka exchange's producer: a transactional sink
            self.output = open_exchange_output(ctx, exchange_out, self.commits)
            control.commits = self.commits
            metrics.sink = self.commits.sink
        clock.lap("source_sink")
        if self.output is None:
            raise RuntimeError(f"vertex {ctx.vertex.vertex_id} has no output")
        # the input connections' round trips overlap building (and restoring) the chain
        inputs = asyncio.ensure_future(InputProcessor.open(ctx, plan, self.counters))
        await asyncio.sleep(0)
        try:
            self.chain = build_task_chain(ctx, self.output, restore, backend)
        except BaseException:
            inputs.cancel()
            raise
        clock.lap("chain")
        self.inputs = control.inputs = await inputs
        if self.inputs is not None:
            metrics.gate = self.inputs.gate
        clock.lap("inputs")
        if ctx.config.get("individual_recovery") == "lossless":
            self._enable_causal_log(restore.get("determinants"), restore.get("checkpoint_id"))
        self.commits.replay(restore)
        self.watermarks = watermark_output(self.chain.operators, self.outputs.writers, self.output)
        self.snapshots = control.snapshots = TaskSnapshotter(
            ctx.task,
            ctx.attempt,
            ctx.config.get("checkpoint_dir"),
            self.link.send,
            writers=self.outputs.writers,
            operators=self.chain.operators,
            backend=self.chain.backend,
            sink=self.commits.output,
            event_time=self._event_time_state,
        )
        if restore.get("aborted_through"):  # a lossless replay carries their barriers
            self.snapshots.abort(int(restore["aborted_through"]))
        if restore.get("event_time"):
            if self.inputs is not None:
                self.inputs.restore_event_time(restore["event_time"], self.watermarks)
            elif self.source is not None:
                self.source.restore_event_time(restore["event_time"])
        metrics.operators = self.chain.operators
        watermarks = self.watermarks
        metrics.watermark = lambda: watermarks.current
        if isinstance(self.output, WriterOutput):
            writer_output = self.output
            metrics.blocked = writer_output.blocked_seconds
            metrics.emitted = lambda: writer_output.records
        if self.chain.backend is not None:
            metrics.state = self.chain.backend.size_estimate
        clock.lap("rest")
        log.info("task %s opened in %s", self, clock)

    def _enable_causal_log(self, replay: list[Any] | None, restored_from: int | None) -> None:
        """Lossless recovery: determinants to the consumers; a restarted attempt replays."""
        broadcast = self.outputs.broadcast_lazily if self.outputs.writers else None
        if self.inputs is not None:
            self.inputs.enable_causal_log(broadcast, replay, restored_from)
            self.metric_sources.deduplicated = self.inputs.deduplicated
        elif self.source is not None:
            self.source.enable_causal_log(broadcast, replay)

    def _event_time_state(self) -> dict[str, Any]:
        if self.inputs is not None:
            return self.inputs.event_time_state()
        return {} if self.source is None else self.source.event_time_state()

    # ---------------------------------------------------------------- metrics
    def metrics(self) -> dict[str, Any]:
        return collect(self.metric_sources)

    async def _metrics_loop(self) -> None:
        interval = float(self.ctx.config.get("metrics_interval", 1.0))
        while True:
            await asyncio.sleep(interval)
            await self.link.send_metrics(self.metrics())

    # ----------------------------------------------------------------- finish
    async def _finish(self, state: TaskState) -> None:
        if state == TaskState.FINISHED:
            await self.outputs.finish()
            if isinstance(self.output, ExchangeOutput):
                self.output.finish()  # the end marker, committed with the rest
            self.commits.commit_final()

    async def _close(self) -> None:
        await self.link.send_metrics(self.metrics())
        if self.inputs is not None:
            await self.inputs.close()
        await self.outputs.close()
        self.commits.close()
        if self.source is not None:
            await self.source.close()
        if self.chain is not None and self.chain.backend is not None:
            with contextlib.suppress(Exception):
                self.chain.backend.close()
        await self.link.close()
