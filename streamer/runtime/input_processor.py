"""``InputProcessor``: the main loop of a task with network inputs.

Opens one netlayer ``InputGate`` over the channels of all input edges
(``channel_input`` maps a flat channel index to the operator input; gate ``g``'s
channels start at ``gate_offsets[g]``), then takes batches from it until every
channel reached ``EndOfPartition``: records go to the chain's head, events are
handled in order:

- ``CheckpointBarrier``: alignment (``BarrierAligner``); once aligned the
  ``TaskSnapshotter`` takes the snapshot and forwards the barrier;
- ``Watermark``: combined over the available channels (``WatermarkCombiner``);
  when the min moves, event time advances (``WatermarkOutput``), and consumers
  hear when every input went idle;
- ``UnavailableEvent`` (a producer was lost): the channel leaves alignment and
  the watermark min until a channel update makes it available again;
- ``EndOfPartition``: the channel is done.

Single-task recovery: ``producer_failed`` queues an ``UnavailableEvent`` on a
channel; ``update_partition_info`` swaps a channel to a producer's new attempt
through the gate's ``CachedChannelProvider`` (after the old attempt's items).

Threading: the task's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark
from netlayer.gate import ChannelInfo, InputGate, UnavailableEvent
from netlayer.protocol.frames import CANNOT_REPLAY
from streamer.graph import ExchangeType
from streamer.runtime.causal import DET, UNAVAILABLE, CausalLedger, DeterminantLog, ReplayDiverged
from streamer.runtime.chain import Head
from streamer.runtime.checkpointing import BarrierAligner
from streamer.runtime.eventtime import WatermarkCombiner
from streamer.runtime.latency_trace import LatencyTrace
from streamer.runtime.outputs import SinkOutput, WriterOutput
from streamer.runtime.sink_commits import SinkCommitter
from streamer.runtime.snapshots import TaskSnapshotter
from streamer.runtime.task_context import TaskContext, parse_address
from streamer.runtime.task_metrics import Counters
from streamer.runtime.watermark_output import WatermarkOutput
from streamer.security.tls import client_ssl

log = logging.getLogger(__name__)

PIPELINED = ExchangeType.PIPELINED

OnUpdated = Callable[[Exception | None], None]


class InputProcessor:
    def __init__(
        self,
        ctx: TaskContext,
        gate: InputGate,
        gate_offsets: list[int],
        channel_input: list[int],
        counters: Counters,
    ) -> None:
        self.ctx = ctx
        self.gate = gate
        self.gate_offsets = gate_offsets
        self.channel_input = channel_input
        self.counters = counters
        self.aligner = BarrierAligner(gate, gate.channels)
        self.combiner = WatermarkCombiner(len(gate.channels))
        self._idle_sent = False
        self._snapshotter: TaskSnapshotter | None = None
        self._watermarks: WatermarkOutput | None = None
        self.ledger: CausalLedger | None = None
        """Lossless mode: positions, barrier marks, determinants, dedup per channel."""
        self.dets: DeterminantLog | None = None
        """Lossless mode with outputs: the determinant of every batch, and a replay."""
        self._stash: list[deque[Any]] = [deque() for _ in gate.channels]
        self.trace = LatencyTrace.for_task(ctx)
        """Sampled stage times for a latency breakdown (None: off, the default)."""

    def enable_causal_log(
        self,
        broadcast: Callable[[Any], None] | None,
        replay: list[Any] | None,
        restored_from: int | None = None,
    ) -> None:
        """Lossless single-task recovery (``runtime.causal``): keep the ledger and, when
        the task has outputs (``broadcast``), emit determinants, replaying ``replay``.
        ``restored_from``: the checkpoint this attempt restored (its input starts after
        that barrier on every channel)."""
        self.ledger = CausalLedger(len(self.gate.channels), restored_from)
        if broadcast is not None:
            self.dets = DeterminantLog(broadcast, replay)
        elif replay:
            raise ReplayDiverged("cannot replay from checkpoint: a task without outputs")

    @classmethod
    async def open(
        cls, ctx: TaskContext, plan: dict[str, Any], counters: Counters
    ) -> InputProcessor | None:
        """Connect the gate to the producers the plan names; None for a task without inputs."""
        # (a kafka exchange's consumer reads its topic instead: runtime.kafka_exchange)
        gates = [g for g in ctx.eg.input_gates(ctx.task_id) if g.exchange == PIPELINED]
        if not gates:
            return None
        # a lossless single-task restart: every producer replays from the restored checkpoint
        replay_from = (plan.get("restore") or {}).get("replay_from")
        channels: list[ChannelInfo] = []
        offsets: list[int] = []
        channel_input: list[int] = []
        for gate, planned in zip(gates, plan["inputs"], strict=True):
            offsets.append(len(channels))
            for producer, where in zip(gate.channels, planned, strict=True):
                partition_id = f"{gate.edge.edge_id}@{producer.subtask}"
                address = parse_address(where["address"])
                channels.append(
                    ChannelInfo(
                        partition_id, gate.subpartition, address, where["attempt"], replay_from
                    )
                )
                channel_input.append(gate.gate_index)
        input_gate = InputGate(
            channels,
            ctx.attempt,
            connect_timeout=float(ctx.config.get("connect_timeout", 10.0)),
            # end of input waits for a producer under recovery: its new attempt still
            # has records for us (alignment and watermarks do leave it out)
            wait_for_unavailable=True,
            credentials=ctx.data_credentials(),
            ssl=client_ssl(),
        )
        await input_gate.start()
        refused = _refused_replay(input_gate) if replay_from is not None else None
        if refused is not None:  # (fail now, before RUNNING: the failover decides what next)
            await input_gate.close()
            raise ReplayDiverged(refused)
        return cls(ctx, input_gate, offsets, channel_input, counters)

    # ---------------------------------------------------------------- control
    def channel_index(self, gate: int, channel: int) -> int:
        return self.gate_offsets[gate] + channel

    def producer_failed(self, gate: int, channel: int) -> None:
        index = self.channel_index(gate, channel)
        self.gate.producer_failed(index, reason="coordinator: producer failed")

    def update_partition_info(
        self,
        gate: int,
        channel: int,
        address: str,
        attempt: int,
        on_done: OnUpdated,
        dedup_from: int | None = None,
    ) -> None:
        """Swap the channel to the producer's new attempt; ``on_done(error)`` when done.
        ``dedup_from``: the new attempt re-emits everything after its barrier of that
        checkpoint, and what this task already took of it is discarded."""
        index = self.channel_index(gate, channel)
        if self.ledger is not None:
            self.ledger.producer_restarted(index, dedup_from)

        def done(_channel: int, error: Exception | None) -> None:
            if error is None:
                self.combiner.set_available(index, True)
            on_done(error)

        self.gate.channel_provider.update_partition_info(
            index, parse_address(address), attempt, done
        )

    def abort(self, checkpoint_id: int) -> None:
        self.aligner.abort(checkpoint_id)

    def deduplicated(self) -> list[int]:
        """Per channel: items dropped as re-emitted by a restarted producer (lossless)."""
        return [] if self.ledger is None else self.ledger.deduplicated()

    def event_time_state(self) -> dict[str, Any]:
        """What the task's event time is at a snapshot (see ``restore_event_time``)."""
        output = None if self._watermarks is None else self._watermarks.current
        return {**self.combiner.snapshot(), "output": output, "idle_sent": self._idle_sent}

    def restore_event_time(self, state: dict[str, Any], watermarks: WatermarkOutput) -> None:
        """Event time as the checkpoint had it: a restored task emits the same watermarks
        at the same points as the attempt it replaces (a replay relies on that)."""
        self.combiner.restore(state)
        watermarks.current = state.get("output")
        self._idle_sent = bool(state.get("idle_sent"))

    def checkpoint_complete(self, checkpoint_id: int) -> None:
        if self.ledger is not None:
            self.ledger.trim(checkpoint_id)

    async def since(
        self, gate: int, channel: int, checkpoint_id: int, timeout: float = 10.0
    ) -> tuple[int, list[Any]] | None:
        """What this task took from that channel after barrier ``checkpoint_id``, once it
        took every item of the failed producer attempt (its ``UnavailableEvent``)."""
        ledger = self.ledger
        if ledger is None:
            return None
        index = self.channel_index(gate, channel)
        deadline = time.monotonic() + timeout
        while not ledger.channels[index].down:
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.005)
        return ledger.since(index, checkpoint_id)

    # ------------------------------------------------------------------- loop
    async def run(
        self,
        head: Head,
        output: WriterOutput | SinkOutput,
        watermarks: WatermarkOutput,
        snapshotter: TaskSnapshotter,
        commits: SinkCommitter,
    ) -> None:
        """Until every channel reached ``EndOfPartition`` (or the task is cancelled)."""
        self._snapshotter = snapshotter
        self._watermarks = watermarks
        gate = self.gate
        gate.on_idle = output.idle
        channel_input = self.channel_input
        counters = self.counters
        ledger, dets = self.ledger, self.dets
        next_batch = gate.next_batch if ledger is None else self._next_batch
        trace = self.trace
        while True:
            batch = await next_batch()
            if batch is None:
                return  # every channel reached EndOfPartition
            channel, items = batch
            if ledger is not None:
                items = ledger.take(channel, items)
                if not items:
                    continue  # all of it was taken from the old attempt already
                if dets is not None:
                    unavailable = items[0].__class__ is UnavailableEvent
                    dets.record(channel, UNAVAILABLE if unavailable else len(items))
            inp = channel_input[channel]
            if trace is not None:
                trace.channel_batch("in", items)
            n = 0
            for item in items:
                if item.__class__ is list:
                    head(item[1], item[0], inp)
                    n += 1
                elif item.__class__ is dict:
                    ledger.on_determinant(channel, item[DET])  # type: ignore[union-attr]
                else:
                    self._on_event(channel, item)
            counters.records_processed += n
            if trace is not None:
                trace.channel_batch("out", items)
            if output.waits:
                await output.drain()
            commits.maybe_commit()

    async def _next_batch(self) -> tuple[int, list[Any]] | None:
        """Lossless mode: while a replay runs, the logged number of items of the logged
        channel (other items wait in a per-channel stash); then stashed items of
        unblocked channels (an event alone, records up to the next event); then the
        gate."""
        dets, stash = self.dets, self._stash
        while dets is not None and dets.replaying:
            channel, n = dets.expected()
            if n == UNAVAILABLE:
                dets.replay_unavailable()
                continue
            while len(stash[channel]) < n:
                batch = await self.gate.next_batch()
                if batch is None:
                    raise ReplayDiverged("cannot replay from checkpoint: the input ended")
                lost = [i for i in batch[1] if i.__class__ is UnavailableEvent]
                if lost:
                    raise ReplayDiverged(
                        "cannot replay from checkpoint: a producer failed during the replay "
                        f"({lost[0].reason})"
                    )
                stash[batch[0]].extend(batch[1])
            return channel, [stash[channel].popleft() for _ in range(n)]
        for channel, items in enumerate(stash):
            if items and not self.gate.channels[channel].is_blocked:
                return channel, _next_run(items)
        return await self.gate.next_batch()

    def _on_event(self, channel: int, event: Any) -> None:
        aligner = self.aligner
        if isinstance(event, CheckpointBarrier):
            if self.ledger is not None:
                self.ledger.on_barrier(channel, event.checkpoint_id)
            self._aligned(aligner.on_barrier(channel, event.checkpoint_id, time.monotonic()))
        elif isinstance(event, Watermark):
            self._on_combined(self.combiner.on_watermark(channel, event.timestamp))
        elif isinstance(event, UnavailableEvent):
            if CANNOT_REPLAY in event.reason:  # a producer stopped replaying to us
                raise ReplayDiverged(event.reason)
            if self.ledger is not None:
                self.ledger.unavailable(channel)
            self.counters.unavailable_events += 1
            log.info("task %s: channel %d unavailable (%s)", self.ctx, channel, event.reason)
            self._on_combined(self.combiner.set_available(channel, False))
            self._aligned(aligner.on_channel_changed())
        elif isinstance(event, EndOfPartition):
            self._on_combined(self.combiner.on_end_of_partition(channel))
            self._aligned(aligner.on_channel_changed())
        else:
            log.warning("task %s: unknown event %r on channel %d", self.ctx, event, channel)

    def _aligned(self, checkpoint_id: int | None) -> None:
        if checkpoint_id is not None and self._snapshotter is not None:
            self._snapshotter.take(checkpoint_id)

    def _on_combined(self, wm: int | None) -> None:
        """After the combiner saw an event: advance, or tell consumers we went idle."""
        watermarks = self._watermarks
        assert watermarks is not None
        if wm is not None:
            watermarks.advance(wm)
        idle = self.combiner.idle
        if idle and not self._idle_sent:
            watermarks.send_idle()
        self._idle_sent = idle

    async def close(self) -> None:
        if self.trace is not None:
            self.trace.flush()
        await self.gate.close()


def _refused_replay(gate: InputGate) -> str | None:
    """Why a producer refused this attempt's replay (at connection), or None."""
    for ch in gate.channels:
        for item in ch.queue:
            if item.__class__ is UnavailableEvent and CANNOT_REPLAY in item.reason:
                return str(item.reason)
    return None


def _next_run(items: deque[Any]) -> list[Any]:
    """The next batch a stash hands out: one event alone, or the records up to the next
    event (as the gate would: a barrier must block its channel before what follows)."""
    if items[0].__class__ is not list:
        return [items.popleft()]
    run = []
    while items and items[0].__class__ is list:
        run.append(items.popleft())
    return run
