"""The individual (single-task) recovery protocol, ByteDance's, on the coordinator side.

1. ``isolate``: the failed task's producers are told ``consumer_failed`` (with the
   checkpoint its next attempt restores, for loss accounting) and its consumers
   ``producer_failed`` (an ``UnavailableEvent`` on that channel), unless they
   noticed already; every other task keeps running.
2. The ``JobMaster`` redeploys the task alone (same worker when it is alive).
3. ``update_consumers``, once the new attempt runs: every running consumer gets
   ``update_partition_info`` and acks when its ``CachedChannelProvider`` swapped
   the channel. All acks within ``channel_update_timeout``: done; otherwise the
   reason to fall back to a region restart is returned.

Lossless (DESIGN.md §9): before step 2, ``collect_determinants`` asks the
consumers what they took from the failed task since the restored checkpoint
and returns the longest determinant log (every consumer holds a prefix of the
same log; all of them must answer); in step 3 the consumers are told to drop
what the new attempt re-emits of it (``dedup_from``).

Threading: the coordinator's loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from streamer.coordinator.execution import ExecutionStore
from streamer.graph import ExchangeType, ExecutionGraph, TaskId
from streamer.rpc import RpcError, TaskState

log = logging.getLogger(__name__)

_FAILURE_REPORT_GRACE_S = 1.0

Send = Callable[[TaskId, str, dict[str, Any]], None]  # notify a task if it is connected


class IndividualProtocol:
    def __init__(
        self, eg: ExecutionGraph, store: ExecutionStore, send: Send, timeout: float
    ) -> None:
        self.eg = eg
        self.store = store
        self.send = send
        self.timeout = timeout

    def isolate(self, task: TaskId, restore_checkpoint: int | None) -> None:
        """Step 1: producers drop (and count) what is routed to ``task``; consumers
        leave its channel out of alignment and watermarks."""
        for producer in self.eg.producers_of(task, ExchangeType.PIPELINED):
            for rp in self.eg.result_partitions(producer):
                subpartition = rp.find_subpartition(task)
                if subpartition is not None:
                    body: dict[str, Any] = {
                        "partition_id": rp.partition_id,
                        "subpartition": subpartition,
                    }
                    if restore_checkpoint is not None:
                        body["restore_checkpoint"] = restore_checkpoint
                    self.send(producer, "consumer_failed", body)
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            for gate_index, channel in self.eg.channels_between(task, consumer):
                self.send(consumer, "producer_failed", {"gate": gate_index, "channel": channel})

    async def prepare_replay(
        self, task: TaskId, restore: dict[str, Any], last_checkpoint: int
    ) -> str | None:
        """Lossless: ``restore`` (the new attempt's plan) gains ``replay_from`` (its
        producers replay what they retained since that checkpoint) and, for a task
        with consumers, its ``determinants``; returns why it cannot, or None."""
        replay_from = int(restore.get("checkpoint_id", last_checkpoint))
        restore["replay_from"] = replay_from
        if not self.eg.consumers_of(task, ExchangeType.PIPELINED):
            return None  # a sink: nobody downstream saw its output
        log, why = await self.collect_determinants(task, replay_from)
        if log is None:
            return why
        restore["determinants"] = log
        return None

    async def collect_determinants(
        self, task: TaskId, checkpoint_id: int
    ) -> tuple[list[Any] | None, str]:
        """The longest determinant log of ``task`` since ``checkpoint_id`` among its
        consumers, or (None, why not).

        Every consumer must be running and answer. A determinant travels with the
        next output to each consumer (`RecordWriter.broadcast_lazily`), so a consumer
        that failed too may have taken output, and the determinants it depends on,
        that no other consumer saw; its own replay counts on the new attempt
        re-emitting exactly that, which only the region restart guarantees."""
        requests = []
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            ce = self.store[consumer]
            if ce.conn is None or ce.state != TaskState.RUNNING:
                return None, (
                    f"{consumer}, a consumer of {task}, is not running (failed too?): what "
                    "it took is not known, so lossless recovery restarts the region"
                )
            for gate_index, channel in self.eg.channels_between(task, consumer):
                body = {"gate": gate_index, "channel": channel, "checkpoint_id": checkpoint_id}
                requests.append(ce.conn.request("get_determinants", body, timeout=self.timeout))
        replies = await asyncio.gather(*requests, return_exceptions=True)
        logs = []
        for r in replies:
            if isinstance(r, BaseException):
                return None, (
                    f"a consumer of {task} did not answer for its determinants ({r}): "
                    "lossless recovery restarts the region"
                )
            if r.body.get("found"):
                logs.append(r.body.get("log") or [])
        if not logs:
            return None, (
                f"no running consumer of {task} holds its determinants since checkpoint "
                f"{checkpoint_id}: lossless recovery restarts the region"
            )
        return max(logs, key=len), ""

    async def update_consumers(self, task: TaskId, dedup_from: int | None = None) -> str | None:
        """Step 3; returns None when every consumer acked, else why to fall back.

        A consumer that failed meanwhile is not waited for: its own failover
        restarts it, and its new attempt gets the address in its plan."""
        te = self.store[task]
        asked: list[tuple[TaskId, int]] = []
        requests = []
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            ce = self.store[consumer]
            if ce.conn is None or ce.state != TaskState.RUNNING:
                continue  # it is restarting too and gets the address in its plan
            for gate_index, channel in self.eg.channels_between(task, consumer):
                body = {
                    "gate": gate_index,
                    "channel": channel,
                    "address": te.data_address or "",
                    "attempt": te.attempt,
                }
                if dedup_from is not None:
                    body["dedup_from"] = dedup_from
                asked.append((consumer, ce.attempt))
                requests.append(ce.conn.request("update_partition_info", body, timeout=3600))
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*requests, return_exceptions=True), self.timeout
            )
        except TimeoutError:
            return f"channel updates not acknowledged within {self.timeout:g} s"
        failed = [
            (consumer, attempt, result)
            for (consumer, attempt), result in zip(asked, results, strict=True)
            if isinstance(result, BaseException)
        ]
        if failed:
            # a consumer whose connection just dropped is usually reported failed
            # by its worker a moment later: give that report a chance to arrive
            await asyncio.sleep(_FAILURE_REPORT_GRACE_S)
        for consumer, attempt, result in failed:
            if self.store.current(consumer, attempt) is None or (
                self.store[consumer].state != TaskState.RUNNING
            ):
                continue  # that consumer failed itself; its restart brings the address
            if isinstance(result, RpcError | ConnectionError):
                return f"channel update failed: {result}"
            raise result
        return None
