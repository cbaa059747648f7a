"""``Restarts``: carries out a ``FailoverPlan`` for the ``JobMaster``.

- ``INDIVIDUAL``: the failed task alone, as attempt+1 back where it ran. Lossy:
  restored from the last checkpoint. Lossless (DESIGN.md section 9): deployed
  while its determinants are collected (its hello waits for the plan); when
  its consumers cannot give them, or later do not switch channels in time, it
  falls back to a region restart;
- ``RESTART``: cancel the set, restore it from the last checkpoint, redeploy it
  spread over the workers, producers first.

A failover that a newer one superseded while it waited does nothing more: the
newer one restarts its tasks (``FailoverRecord.in_progress``).

Threading: the coordinator's loop only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from streamer.coordinator.checkpoints import CheckpointCoordinator
from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.failover.handler import FailoverHandler, FailoverPlan, Recovery
from streamer.coordinator.failover.individual import IndividualProtocol
from streamer.coordinator.failover.losses import LossAccounting
from streamer.coordinator.failover.records import FailoverLog, FailoverRecord
from streamer.coordinator.scheduler import Scheduler
from streamer.graph import ExecutionGraph, TaskId

log = logging.getLogger(__name__)


class Restarts:
    """Applies failover plans; ``deploy(task, prefer)`` deploys an attempt (the job
    master's, which also records the phase), ``running()`` says the job still runs."""

    def __init__(
        self,
        job_id: str,
        eg: ExecutionGraph,
        tasks: ExecutionStore,
        *,
        failovers: FailoverLog,
        handler: FailoverHandler,
        individual: IndividualProtocol,
        losses: LossAccounting,
        scheduler: Scheduler,
        checkpoints: CheckpointCoordinator,
        deploy: Callable[[TaskId, str | None], Awaitable[None]],
        running: Callable[[], bool],
        spawn: Callable[[Any], None],
    ) -> None:
        self.job_id = job_id
        self.eg = eg
        self.tasks = tasks
        self.failovers = failovers
        self.handler = handler
        self.individual = individual
        self.losses = losses
        self.scheduler = scheduler
        self.checkpoints = checkpoints
        self.deploy = deploy
        self.running = running
        self.spawn = spawn

    async def carry_out(self, plan: FailoverPlan, rec: FailoverRecord, task: TaskId) -> None:
        if not rec.in_progress:
            return  # superseded meanwhile: the newer failover restarts the task
        self.failovers.claim(rec, plan.tasks)
        for why in (plan.fallback_reason, plan.lossy_reason):
            if why is not None:
                log.warning("job %s: %s: %s", self.job_id, task, why)
        if plan.fallback_reason is not None:
            rec.fall_back(plan.fallback_reason)
        rec.lossy_reason = plan.lossy_reason or rec.lossy_reason
        if plan.recovery == Recovery.INDIVIDUAL:
            await self._restart_individual(task, rec, plan.lossless)
        else:
            await self.restart_set(plan.tasks, rec)

    async def _restart_individual(self, task: TaskId, rec: FailoverRecord, lossless: bool) -> None:
        self.losses.start(rec, task)
        last = self.checkpoints.last_completed
        self.individual.isolate(task, last or None)
        previous = self.tasks[task].worker_id
        self.tasks.new_attempt(task)
        restore = self.checkpoints.restore_plans({task})
        if not lossless:
            self.scheduler.set_restore(restore)
            await self.deploy(task, previous)  # back where it ran: warm and local
            return
        # the new attempt starts while its determinants are collected; its plan waits
        self.scheduler.hold_restore(task, hint=restore[task])
        deploy = asyncio.ensure_future(self.deploy(task, previous))
        why = await self.individual.prepare_replay(task, restore[task], last)
        if why is not None:
            await deploy  # (then the region restart cancels it)
            await self.fall_back(task, rec, why)
            return
        rec.replay_from = restore[task]["replay_from"]
        # the replay carries the barriers of checkpoints its failure aborted: not snapshotted
        restore[task]["aborted_through"] = self.checkpoints.next_id - 1
        rec.plan_ready_at = time.time()
        self.scheduler.set_restore(restore)
        await deploy

    async def switch_consumers(self, task: TaskId, rec: FailoverRecord) -> None:
        """The new attempt runs: its consumers switch to it (step 3 of the protocol)."""
        reason = await self.individual.update_consumers(task, rec.replay_from)
        if not rec.in_progress or not self.running():
            return  # superseded meanwhile, or the job is ending
        if reason is None:
            rec.channels_updated_at = time.time()
            self.failovers.done(rec)
            self.spawn(self.losses.count(rec, task))
            return
        await self.fall_back(task, rec, reason)

    async def fall_back(self, task: TaskId, rec: FailoverRecord, reason: str) -> None:
        """The individual protocol gives up on ``task``: restart its region (unless a
        newer failover superseded ``rec`` while it waited: that one restarts it)."""
        if not rec.in_progress:
            return
        log.warning(
            "job %s: %s for %s; falling back to a region restart", self.job_id, reason, task
        )
        rec.fall_back(reason)
        plan = self.handler.fallback(task)
        self.failovers.claim(rec, plan.tasks)
        await self.restart_set(plan.tasks, rec)

    async def restart_set(self, tasks: frozenset[TaskId], rec: FailoverRecord) -> None:
        """Cancel every task of the set (old attempts), then redeploy them all as
        attempt+1, restored from the last checkpoint and spread over the workers."""
        if not self.running():
            return
        self.losses.forget(rec)
        await self.scheduler.cancel_for_restart(tasks)
        self.scheduler.set_restore(self.checkpoints.restore_plans(set(tasks)))
        ordered = [t for t in self.eg.tasks if t in tasks]  # producers first: fewer waits
        await asyncio.gather(*(self.deploy(t, None) for t in ordered))
