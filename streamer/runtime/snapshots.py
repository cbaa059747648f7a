"""``TaskSnapshotter``: a task's part of an aligned checkpoint.

Called on the task's loop between records, once the barrier of checkpoint ``n``
is aligned (or, in a source, once its positions are taken), so the state is
exactly that of the records before the barrier. It

1. collects what lives in memory: each operator's JSON state and, for a Kafka
   sink, the epochs not yet committed (the sink seals epoch ``n`` here, always);
2. writes ``keyed/`` (the RocksDB checkpoint), ``sink.json`` (exactly-once
   sinks) and ``task.json`` through ``streamer.state``'s `TaskSnapshotWriter`,
   which publishes them with one rename (the task never builds checkpoint paths);
3. forwards ``CheckpointBarrier(n)`` to every consumer;
4. acks (``checkpoint_ack``) or declines (``checkpoint_declined``).

Declining. A snapshot whose write fails (the checkpoint was aborted and its
pending directory removed, an ``OSError``, a RocksDB error), or whose checkpoint
the coordinator aborted before it was written, is declined, never fatal: one
WARNING line, this task's partial files removed, no ack, a
``checkpoint_declined`` {checkpoint_id, reason} to the coordinator, and the task
goes on processing.

The barrier is forwarded even when declining. The barrier's place in the stream
is still right (only persisting this task's state failed), and downstream tasks
align on it: a barrier that never came would keep their other channels blocked
until the coordinator's ``checkpoint_abort`` reached them, or for good when that
abort came before the barriers from the other producers (an aligner keeps no
memory of aborted checkpoints). Forwarding keeps one invariant, "every barrier
aligned is forwarded", so alignment downstream always completes on its own; the
coordinator ignores their acks for a checkpoint it aborted.

Threading: the task's loop only; the writes block the loop (as the RocksDB
checkpoint always did), which is what makes the snapshot consistent.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from netlayer.events import CheckpointBarrier
from netlayer.partition import RecordWriter
from streamer.runtime.coordinator_link import Send
from streamer.runtime.operators import ChainedOperator
from streamer.runtime.outputs import SinkOutput
from streamer.state import KeyedStateBackend, PendingCheckpoint
from streamer.state.storage import TaskSnapshot, TaskSnapshotError

log = logging.getLogger(__name__)


class TaskSnapshotter:
    def __init__(
        self,
        task: str,
        attempt: int,
        checkpoint_root: str | None,
        send: Send,
        *,
        writers: Sequence[RecordWriter] = (),
        operators: Sequence[ChainedOperator] = (),
        backend: KeyedStateBackend | None = None,
        sink: SinkOutput | None = None,
        event_time: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.task = task
        self.attempt = attempt
        self.root = checkpoint_root
        self.send = send
        self.writers = writers
        self.operators = operators
        self.backend = backend
        self.sink = sink
        self.event_time = event_time
        """The task's watermark state, saved with its snapshot (input tasks)."""
        self.taken = 0
        self.declined = 0
        self.aborted_up_to = 0
        """The highest checkpoint id the coordinator aborted (ids only grow)."""

    def abort(self, checkpoint_id: int) -> None:
        """The coordinator aborted ``checkpoint_id``: a later snapshot of it is declined."""
        self.aborted_up_to = max(self.aborted_up_to, checkpoint_id)

    def take(self, checkpoint_id: int, *, source: dict[str, Any] | None = None) -> bool:
        """Snapshot, forward the barrier, ack; returns False when declined (or no storage)."""
        if self.root is None:
            return False
        started = time.monotonic()
        meta: dict[str, Any] = {"task": self.task, "attempt": self.attempt}
        if source is not None:
            meta["source"] = source
        operators = {}
        for op in self.operators:
            saved = op.snapshot_state()
            if saved is not None:
                operators[op.spec.uid] = saved
        if operators:
            meta["operators"] = operators
        if self.writers:  # where round robin goes next: a replay must route the same way
            meta["writers"] = [writer.position for writer in self.writers]
        if self.event_time is not None:
            meta["event_time"] = self.event_time()
        sink_epochs = None
        if self.sink is not None:
            pending = self.sink.on_barrier(checkpoint_id)
            if self.sink.exactly_once:
                sink_epochs = pending
                meta["sink_records"] = sum(len(records) for _, records in pending)
        snapshot: TaskSnapshot | None = None
        aborted = checkpoint_id <= self.aborted_up_to
        if aborted:
            reason = f"checkpoint {checkpoint_id} was aborted before this task's snapshot"
        else:
            try:
                snapshot = self._write(checkpoint_id, meta, sink_epochs)
            except TaskSnapshotError as exc:
                reason = exc.reason
        self._forward_barrier(checkpoint_id)
        if snapshot is None:
            self._decline(checkpoint_id, reason, expected=aborted)
            return False
        self.taken += 1
        state = {
            "dir": str(snapshot.path),
            "keyed": snapshot.keyed,
            "source": source,
            "sink_records": meta.get("sink_records"),
            "snapshot_seconds": round(time.monotonic() - started, 4),
        }
        self.send("checkpoint_ack", {"checkpoint_id": checkpoint_id, "state": state})
        return True

    def _write(
        self, checkpoint_id: int, meta: dict[str, Any], sink_epochs: list[Any] | None
    ) -> TaskSnapshot:
        assert self.root is not None
        pending = PendingCheckpoint.attach(self.root, checkpoint_id)
        with pending.task_writer(self.task) as part:
            if self.backend is not None:
                meta["keyed"] = part.write_keyed(self.backend)
            if sink_epochs is not None:
                part.write_json("sink.json", sink_epochs)
            part.write_json("task.json", meta)
            return part.commit()

    def _forward_barrier(self, checkpoint_id: int) -> None:
        barrier = CheckpointBarrier(checkpoint_id, int(time.time() * 1000))
        for writer in self.writers:
            writer.broadcast_event(barrier)

    def _decline(self, checkpoint_id: int, reason: str, *, expected: bool = False) -> None:
        """``expected``: the coordinator aborted it already (INFO, not a WARNING)."""
        self.declined += 1
        log.log(
            logging.INFO if expected else logging.WARNING,
            "task %s declines checkpoint %d (barrier forwarded, processing goes on): %s",
            self.task, checkpoint_id, reason,
        )  # fmt: skip
        self.send("checkpoint_declined", {"checkpoint_id": checkpoint_id, "reason": reason})
