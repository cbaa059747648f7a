"""``SinkCommitter``: when a sink task's Kafka output becomes durable (committed).

- With periodic checkpoints, the sink commits when a checkpoint completes
  (``on_checkpoint_complete``) and reports ``checkpoint_committed``.
- Without them, it seals and commits about once per ``sink_commit_interval``
  (``maybe_commit``, called between batches; ``run`` wakes a quiet task up).
- At the end of input, ``commit_final`` commits everything written.
- After a restore, ``replay`` writes again the records of every epoch the
  checkpoint holds beyond the sink's commit marker (see ``runtime.outputs``).

The ``die_after_commit`` fault hook kills the task right after a commit, before
anyone hears of it (tests only, see ``runtime.faults``).

Threading: the task's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Any

import orjson

from streamer.connectors import KafkaSink
from streamer.runtime.coordinator_link import Send
from streamer.runtime.faults import FaultHooks
from streamer.runtime.outputs import SinkOutput
from streamer.runtime.task_context import TaskContext

log = logging.getLogger(__name__)

NO_CHECKPOINT_EPOCH_BASE = 1_000_000_000_000
"""Epochs sealed without a checkpoint lie above every checkpoint id (and a savepoint's)."""


class SinkCommitter:
    def __init__(self, ctx: TaskContext, send: Send, hooks: FaultHooks) -> None:
        self.ctx = ctx
        self.send = send
        self.hooks = hooks
        self.sink: KafkaSink | None = None
        self.output: SinkOutput | None = None
        config = ctx.config
        self.interval = float(config.get("sink_commit_interval", 1.0))
        self.periodic = config.get("checkpoint_interval") is None
        self._last_commit = 0.0
        self._epoch = 0

    def open(self, op_config: dict[str, Any]) -> SinkOutput:
        """Open the Kafka sink of the chain's tail operator; returns the chain's output."""
        ctx = self.ctx
        self.sink = KafkaSink(
            ctx.config["bootstrap_servers"],
            op_config["topic"],
            job=ctx.job.name,
            vertex=ctx.vertex.vertex_id,
            subtask=ctx.task_id.subtask,
            delivery=op_config.get("delivery", "at_least_once"),
            key_serde=op_config.get("key_serde", "str"),
            value_serde=op_config.get("value_serde", "json"),
            run_id=ctx.job_id,
            kafka_config=ctx.config.get("kafka_config"),
        )
        self.sink.open()
        key_uid = op_config.get("key_fn")
        key_fn = None if key_uid is None else ctx.job.function(key_uid)
        self.output = SinkOutput(self.sink, key_fn)
        return self.output

    def replay(self, restore: dict[str, Any]) -> None:
        """Write again what the restored checkpoint holds beyond the sink's commit marker."""
        where = restore.get("sink_replay_file")
        if not where or self.output is None:
            return
        epochs = [(int(e), records) for e, records in orjson.loads(Path(where).read_bytes())]
        committed = self.output.sink.committed_epoch()
        written = self.output.replay(epochs, committed)
        log.info(
            "task %s: commit marker at epoch %d; re-wrote %d records of later epochs",
            self.ctx, committed, written,
        )  # fmt: skip

    def on_checkpoint_complete(self, checkpoint_id: int) -> None:
        if self.output is None:
            return
        self.output.on_complete(checkpoint_id)
        if self.hooks.dies_after_commit(self.ctx.task, self.ctx.attempt, checkpoint_id):
            log.warning("task %s: fault hook kills the task after its commit", self.ctx)
            os.kill(os.getpid(), signal.SIGKILL)  # committed, and nobody was told
        self.send("checkpoint_committed", {"checkpoint_id": checkpoint_id})

    def maybe_commit(self) -> None:
        """Without periodic checkpoints, commit if the last commit is ``interval`` old."""
        if self.output is None or not self.periodic:
            return
        now = time.monotonic()
        if now - self._last_commit < self.interval:
            return
        self._last_commit = now
        self.commit_now()

    async def run(self) -> None:
        """Commit a quiet sink's output too (between batches, on the task's loop)."""
        if self.output is None or not self.periodic:
            return
        while True:
            await asyncio.sleep(self.interval)
            self.maybe_commit()

    def commit_now(self) -> None:
        """Seal and commit everything written so far (not tied to a checkpoint)."""
        if self.output is None:
            return
        self._epoch += 1
        epoch = NO_CHECKPOINT_EPOCH_BASE + self._epoch
        self.output.on_barrier(epoch)
        self.output.on_complete(epoch)

    def commit_final(self) -> None:
        """End of input: everything written becomes durable."""
        self.commit_now()

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
