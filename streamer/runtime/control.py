"""``ControlHandler``: what a task does with each control message from its coordinator.

One table from message kind (its ``streamer.rpc.kinds`` class) to method, run by
the endpoint's ``Dispatcher``: a kind the table does not name raises an
``RpcError`` naming it (the RPC layer logs it, and answers a request with it).

- ``consumer_failed``: the subpartition becomes unavailable (records for it are
  dropped or retained, by the netlayer's mode), with the checkpoint the consumer
  restores when the message names one;
- ``producer_failed``: an ``UnavailableEvent`` is queued on the channel;
- ``update_partition_info``: the channel swaps to the producer's new attempt and
  the coordinator gets an ``ack`` once it did (or an error);
- ``trigger_checkpoint`` (sources): the checkpoint is taken after this batch;
- ``checkpoint_complete``: the sink commits, the source commits its offsets, and
  every result partition trims its barrier marks up to the checkpoint;
- ``checkpoint_abort``: alignment of that checkpoint is released, and a snapshot
  of it not yet written is declined;
- ``cancel_task``: the task stops (CANCELED).

The parts are filled in as the task opens them; a message for a part not there
yet (or at all) is ignored.

Threading: the task's loop (handlers run as RPC handler tasks on it).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping

from netlayer.partition import ResultPartition
from streamer.rpc import Message, RpcConnection
from streamer.rpc import kinds as k
from streamer.rpc.dispatch import Dispatcher
from streamer.runtime.coordinator_link import CoordinatorLink
from streamer.runtime.faults import FaultHooks
from streamer.runtime.input_processor import InputProcessor
from streamer.runtime.sink_commits import SinkCommitter
from streamer.runtime.snapshots import TaskSnapshotter
from streamer.runtime.source_runner import SourceRunner

log = logging.getLogger(__name__)


class ControlHandler:
    def __init__(
        self,
        task: str,
        link: CoordinatorLink,
        hooks: FaultHooks,
        on_cancel: Callable[[], None],
    ) -> None:
        self.task = task
        self.link = link
        self.hooks = hooks
        self.on_cancel = on_cancel
        self.partitions: Mapping[str, ResultPartition] = {}
        self.inputs: InputProcessor | None = None
        self.source: SourceRunner | None = None
        self.commits: SinkCommitter | None = None
        self.snapshots: TaskSnapshotter | None = None
        self.handle = Dispatcher(
            f"task {task}",
            {
                k.ConsumerFailed: self.consumer_failed,
                k.ProducerFailed: self.producer_failed,
                k.UpdatePartitionInfo: self.update_partition_info,
                k.GetDeterminants: self.get_determinants,
                k.TriggerCheckpoint: self.trigger_checkpoint,
                k.CheckpointComplete: self.checkpoint_complete,
                k.CheckpointAbort: self.checkpoint_abort,
                k.CancelTask: self.cancel_task,
            },
        )
        """The RPC handler: ``await handle(conn, msg)``."""

    # --------------------------------------------------------------- failover
    def consumer_failed(self, conn: RpcConnection, msg: Message, b: k.ConsumerFailed) -> None:
        partition = self.partitions.get(b.partition_id)
        if partition is None:
            return
        # the checkpoint its next attempt restores: the base of the loss accounting
        partition.mark_consumer_failed(b.subpartition, restore_checkpoint=b.restore_checkpoint)

    def producer_failed(self, conn: RpcConnection, msg: Message, b: k.ProducerFailed) -> None:
        if self.inputs is not None:
            self.inputs.producer_failed(b.gate, b.channel)

    def update_partition_info(
        self, conn: RpcConnection, msg: Message, b: k.UpdatePartitionInfo
    ) -> None:
        if self.inputs is None:
            raise RuntimeError(f"task {self.task} has no inputs to update")
        swallow = self.hooks.swallows_channel_update_ack(self.task)

        def done(error: Exception | None) -> None:
            if swallow:
                log.warning("task %s: fault hook swallows the channel update ack", self.task)
                return
            reply = (
                conn.reply(msg, "ack")
                if error is None
                else conn.reply_error(msg, f"channel update failed: {error}")
            )
            self.link.spawn(reply, f"the reply to {msg.kind}")

        self.inputs.update_partition_info(
            b.gate, b.channel, b.address, b.attempt, done, dedup_from=b.dedup_from
        )

    async def get_determinants(
        self, conn: RpcConnection, msg: Message, b: k.GetDeterminants
    ) -> None:
        """What this task took from a failed producer since ``checkpoint_id`` (lossless)."""
        inputs = self.inputs
        found = None if inputs is None else await inputs.since(b.gate, b.channel, b.checkpoint_id)
        if found is None:
            await conn.reply(msg, "determinants", {"found": False})
            return
        seen, dets = found
        await conn.reply(msg, "determinants", {"found": True, "seen": seen, "log": dets})

    # ------------------------------------------------------------ checkpoints
    def trigger_checkpoint(self, conn: RpcConnection, msg: Message, b: k.TriggerCheckpoint) -> None:
        if self.source is not None:
            self.source.trigger(b.checkpoint_id)

    def checkpoint_complete(
        self, conn: RpcConnection, msg: Message, b: k.CheckpointComplete
    ) -> None:
        if self.commits is not None:
            self.commits.on_checkpoint_complete(b.checkpoint_id)
        if self.source is not None:
            self.source.on_checkpoint_complete(b.checkpoint_id)
        for partition in self.partitions.values():
            # older checkpoints are no restore point any more: their barrier marks go
            # (the marks feed the netlayer's loss accounting of lossy failovers)
            partition.trim_barrier_marks(b.checkpoint_id)
        if self.inputs is not None:
            self.inputs.checkpoint_complete(b.checkpoint_id)

    def checkpoint_abort(self, conn: RpcConnection, msg: Message, b: k.CheckpointAbort) -> None:
        if self.inputs is not None:
            self.inputs.abort(b.checkpoint_id)
        if self.snapshots is not None:
            self.snapshots.abort(b.checkpoint_id)

    # -------------------------------------------------------------- lifecycle
    async def cancel_task(self, conn: RpcConnection, msg: Message, b: k.CancelTask) -> None:
        self.on_cancel()
        if msg.wants_reply and not conn.closed:
            with contextlib.suppress(ConnectionError):  # the coordinator went meanwhile
                await conn.reply(msg, "ok")
