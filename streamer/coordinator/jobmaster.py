"""``JobMaster``: one job's wiring (DESIGN.md section 5). It owns no protocol itself:

- ``ExecutionStore``: every task's attempt, placement, address and state;
- ``Scheduler``: deploys attempts on ``SlotPool`` slots and answers hellos;
- ``FailoverHandler``: turns a failure into a ``FailoverPlan`` value, which
  ``Restarts`` (``failover.restarts``) carries out: ``RESTART`` (cancel the set,
  restore it from the last checkpoint, redeploy it spread over the workers) or
  ``INDIVIDUAL`` (the single-task protocol in ``failover.individual``, falling
  back to a region restart when its consumers do not switch channels in time);
- ``FailoverLog``: the records, and which failover owns each restarting task;
- ``LossAccounting``: what a lossy individual failover lost;
- ``CheckpointCoordinator``: checkpoints, through the narrow ``CheckpointView``
  this class implements.

Threading: everything runs on the coordinator's loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any, Protocol

from streamer.api import load_job
from streamer.connectors.exchange_topics import prepare_exchange_topics
from streamer.coordinator.checkpoints import open_checkpoints
from streamer.coordinator.diagnostics import DEFAULT_KAFKA_TIMEOUT, JobDiagnostics
from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.failover import FailoverHandler, FailoverLog, Recovery
from streamer.coordinator.failover.handler import REPLAY_FAILED
from streamer.coordinator.failover.individual import IndividualProtocol
from streamer.coordinator.failover.losses import LossAccounting
from streamer.coordinator.failover.records import SUPERSEDED
from streamer.coordinator.failover.restarts import Restarts
from streamer.coordinator.scheduler import Deployed, Scheduler
from streamer.coordinator.slots import SlotPool, WorkerInfo
from streamer.coordinator.status import job_status, job_summary
from streamer.errors import StreamerError
from streamer.graph import TaskId
from streamer.graph.exchanges import check_kafka_exchanges, has_kafka_exchange
from streamer.rpc import RpcConnection, RpcError, TaskState
from streamer.rpc import kinds as k

log = logging.getLogger(__name__)
S = TaskState

# the job settings every task gets in its deployment
TASK_SETTINGS = (
    "bootstrap_servers", "buffer_timeout", "metrics_interval", "log_level",
    "source_batch", "sink_commit_interval", "connect_timeout", "params", "idle_timeout_ms",
    "checkpoint_interval", "individual_recovery", "retention_bytes", "kafka_config",
    "retention_spill_bytes", "watermark_interval", "join_mirror_keys",
)  # fmt: skip


NO_SAVEPOINTS = (
    "savepoints of a job with a kafka exchange are not supported yet (its topic's "
    "uncommitted epochs are not in them): restart it from its checkpoints instead"
)


def task_settings(config: dict[str, Any], root: Path, handler: FailoverHandler) -> dict[str, Any]:
    """The settings every task of the job gets in its deployment."""
    settings = {k: config[k] for k in TASK_SETTINGS if k in config}
    settings["checkpoint_dir"] = str(root)
    # tasks retain and log determinants only for lossless single-task recovery
    lossless = handler.lossless and handler.strategy_name == "individual"
    settings["individual_recovery"] = "lossless" if lossless else "off"
    return settings


class JobHost(Protocol):
    """What a job needs of the process that runs it (the ``Coordinator``)."""

    slots: SlotPool

    async def prepare_job(self, job_id: str, job_ref: str) -> None: ...


class JobMaster:
    """Runs one job on the host's workers; see the module docstring."""

    def __init__(self, host: JobHost, job_id: str, job_ref: str, config: dict[str, Any]):
        self.host = host
        self.job_id = job_id
        self.job_ref = job_ref
        self.config = config
        self.job = load_job(job_ref, config.get("params"))
        check_kafka_exchanges(self.job.job_graph)  # the kafka exchanges the runtime runs
        if config.get("from_savepoint") and has_kafka_exchange(self.job.job_graph):
            raise StreamerError(NO_SAVEPOINTS)
        self.eg = self.job.execution_graph()
        self.handler = FailoverHandler(self.eg, config)
        self.tasks = ExecutionStore(self.eg)
        self.diagnostics = JobDiagnostics(
            self.tasks, config.get("kafka_timeout", DEFAULT_KAFKA_TIMEOUT)
        )  # errors, logs and Kafka reachability of the tasks
        self.failovers = FailoverLog()
        self.losses = LossAccounting(self.eg, self.tasks, float(config.get("metrics_interval", 1)))
        self.individual = IndividualProtocol(
            self.eg, self.tasks, self.send, float(config.get("channel_update_timeout", 10.0))
        )
        self.state = S.CREATED
        self.failure_reason: str | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self._background: set[asyncio.Future[Any]] = set()
        self.done = asyncio.Event()
        # checkpoints and savepoints stay under the coordinator's state roots
        self.roots, self.checkpoints = open_checkpoints(
            self, self.eg, self.job.job_graph, job_id, config
        )
        task_config = task_settings(config, self.checkpoints.root, self.handler)
        self.scheduler = Scheduler(
            job_id,
            job_ref,
            self.job.job_graph.to_dict(),
            self.tasks,
            host.slots if host is not None else SlotPool(),
            task_config,
            slot_request_timeout=float(config.get("slot_request_timeout", 60.0)),
            job_running=lambda: self.state == S.RUNNING,
            spawn=self._spawn,
        )
        self.restarts = Restarts(
            job_id,
            self.eg,
            self.tasks,
            failovers=self.failovers,
            handler=self.handler,
            individual=self.individual,
            losses=self.losses,
            scheduler=self.scheduler,
            checkpoints=self.checkpoints,
            deploy=self._deploy,
            running=lambda: self.state == S.RUNNING,
            spawn=self._spawn,
        )

    @property
    def slots(self) -> SlotPool:
        return self.scheduler.slots

    @property
    def name(self) -> str:
        return self.job.name

    # ------------------------------------------------------------- deployment
    async def start(self) -> None:
        savepoint = self.config.get("from_savepoint")
        if savepoint:
            try:
                loaded = self.checkpoints.load_savepoint(Path(savepoint))
            except Exception as exc:  # noqa: BLE001 - any unreadable savepoint fails the job clearly
                await self._fail_job(f"cannot restore from savepoint {savepoint}: {exc}")
                return
            self.scheduler.set_restore(self.checkpoints.restore_plans(set(self.eg.tasks), loaded))
        self.state = S.RUNNING
        await self.host.prepare_job(self.job_id, self.job_ref)
        try:
            await prepare_exchange_topics(self.job.job_graph, self.config)
        except StreamerError as exc:
            await self._fail_job(str(exc))
            return
        self._spawn(self.checkpoints.run())
        await asyncio.gather(*(self._deploy(t) for t in self.eg.tasks))

    async def _deploy(self, task: TaskId, prefer: str | None = None) -> None:
        attempt = self.tasks[task].attempt
        outcome = await self.scheduler.deploy(task, prefer)
        if outcome.result == Deployed.OK:
            if outcome.log_file:
                self.diagnostics.on_deployed(task, outcome.log_file)
            rec = self.failovers.owner(task)
            if rec is not None and rec.deployed_at is None:
                rec.deployed_at = time.time()
        elif outcome.result == Deployed.NO_SLOT:
            await self._fail_job(outcome.reason)
        elif outcome.result == Deployed.FAILED:
            await self.on_task_failure(task, attempt, outcome.reason)

    # ----------------------------------------------- CheckpointView (narrow)
    def can_checkpoint(self) -> bool:
        """Every unfinished task runs and no failover is in progress."""
        return (
            self.state == S.RUNNING and not self.failovers.active and self.tasks.all_in(S.RUNNING)
        )

    def running_tasks(self) -> set[TaskId]:
        return {t for t, te in self.tasks.items() if te.state == S.RUNNING and te.conn}

    def attempt_of(self, task: TaskId) -> int:
        return self.tasks[task].attempt

    def send(self, task: TaskId, kind: str, body: dict[str, Any]) -> None:
        conn = self.tasks[task].conn
        if conn is not None:
            self._spawn(_notify(conn, kind, body))

    async def savepoint(self, directory: str, stop: bool) -> tuple[str, int]:
        """Take a savepoint into ``directory`` (under a state root; relative: under the
        first); with ``stop``, cancel the job after it."""
        if has_kafka_exchange(self.job.job_graph):
            raise StreamerError(NO_SAVEPOINTS)
        target = self.roots.resolve(directory, "savepoint directory")
        if self.state != S.RUNNING:
            raise StreamerError(f"job {self.job_id} cannot take a savepoint now ({self.state})")
        return await self.checkpoints.savepoint(target, self.cancel if stop else None)

    # ----------------------------------------------------------------- reports
    async def on_task_state(self, report: k.TaskStateReport) -> None:
        task = TaskId.parse(report.task)
        te = self.tasks.current(task, report.attempt)
        if te is None or self.state != S.RUNNING:
            return  # a stale attempt, or a late report while the job ends
        state = S(report.state)
        if state == S.FAILED:
            cause = f"exception: {report.error}"
            await self.on_task_failure(task, te.attempt, cause, report.traceback or "")
            return
        if te.state in (S.FAILED, S.CANCELING) or te.state == state:
            return  # already handled as a failure or a cancel
        self.tasks.transition(task, state)
        if state == S.RUNNING:
            rec = self.failovers.running(task, report.at)
            if rec is not None and rec.strategy == "individual" and not rec.fell_back:
                self._spawn(self.restarts.switch_consumers(task, rec))
            elif rec is not None:
                self.failovers.set_done_if_all_running(rec)
        elif state == S.FINISHED:
            self.slots.release(self.scheduler.slot_key(task))
            if self.tasks.all_in(S.FINISHED):
                self._end(S.FINISHED)

    def on_metrics(self, report: k.TaskMetrics) -> None:
        task = TaskId.parse(report.task)
        if self.tasks.current(task, report.attempt) is not None:
            self.tasks.set_metrics(task, report.metrics)
            outage = self.diagnostics.on_metrics(task, report.metrics)
            if outage is not None and self.state == S.RUNNING and self.failure_reason is None:
                self.failure_reason = outage  # Kafka unreachable for kafka_timeout
                self._spawn(self._fail_job(outage))

    def on_task_exited(self, exited: k.TaskExited) -> None:
        task = TaskId.parse(exited.task)
        te = self.tasks.current(task, exited.attempt)
        if te is None or te.state in (S.FINISHED, S.CANCELED):
            return
        cause = (
            f"process killed by signal {exited.signal}"
            if exited.signal
            else f"process exited with {exited.exit_code}"
        )
        self._spawn(self.on_task_failure(task, te.attempt, cause))

    def request_kill(self, task: TaskId) -> None:
        self.failovers.request_kill(task)

    # --------------------------------------------------------------- failover
    async def on_task_failure(
        self, task: TaskId, attempt: int, cause: str, tb: str | None = None
    ) -> None:
        te = self.tasks.current(task, attempt)
        if te is None or te.state.is_final or te.state == S.CANCELING or self.state != S.RUNNING:
            return
        cause = self.diagnostics.on_failure(task, attempt, cause, tb)
        error = cause.removeprefix("exception: ") if tb is not None else None
        if not cause.startswith("process "):  # it did not exit by itself: make sure
            self._spawn(self.scheduler.kill_attempt(task, attempt, te.worker_id))
        self.tasks.failed(task, error, tb)
        self.checkpoints.abort(f"task {task} failed")
        self.scheduler.forget(task)
        self.slots.release(self.scheduler.slot_key(task))
        log.warning("job %s: task %s@%d failed: %s", self.job_id, task, attempt, cause)
        rec = self.failovers.owner(task)
        if rec is not None and rec.replay_from is not None and REPLAY_FAILED in cause:
            # the new attempt of a lossless failover was refused its replay: that failover
            # goes on, by region restart or lossy (retention_overflow)
            rec.replay_from, plan = None, self.handler.replay_refused(task, cause)
        else:
            rec = self.failovers.open(task, attempt, self.handler.strategy_name, cause)
            plan = self.handler.plan(task, cause, time.monotonic(), self.checkpoints.last_completed)
        if plan.recovery == Recovery.UNRECOVERABLE:
            self.failovers.ended(rec, "job_failed")
            await self._fail_job(plan.reason or cause)
            return
        if plan.delay_s:
            await asyncio.sleep(plan.delay_s)
        if self.state != S.RUNNING:
            return
        if self.tasks[task].attempt != attempt:  # during the delay, another restart took it
            self.failovers.ended(rec, SUPERSEDED)
            return
        await self.restarts.carry_out(plan, rec, task)

    # ----------------------------------------------------------------- job end
    async def _fail_job(self, reason: str) -> None:
        if self.state.is_final:
            return
        log.error("job %s FAILED: %s", self.job_id, reason)
        self.failure_reason = reason
        self.state = S.CANCELING  # no restart, deploy or fallback from now on
        await self.scheduler.cancel_all()
        self._end(S.FAILED)

    async def cancel(self) -> None:
        if self.state.is_final:
            return
        self.state = S.CANCELING
        await self.scheduler.cancel_all()
        self._end(S.CANCELED)

    def _end(self, state: TaskState) -> None:
        if self.state.is_final:
            return
        self.state = state
        self.ended_at = time.time()
        self.failovers.end_all()
        self.done.set()
        log.info("job %s ended %s", self.job_id, state)

    def on_worker_lost(self, worker: WorkerInfo) -> None:
        """Fail the worker's tasks; closing their control connections stops any survivor."""
        for task, te in self.tasks.items():
            if te.worker_id == worker.worker_id and not te.state.is_final:
                if te.conn is not None:
                    self._spawn(te.conn.close(reason=f"worker {worker.worker_id} lost"))
                self._spawn(
                    self.on_task_failure(task, te.attempt, f"worker {worker.worker_id} lost")
                )

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        return job_status(self)

    def summary(self) -> dict[str, Any]:
        return job_summary(self)

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background; a failure is logged, never lost."""
        fut = asyncio.ensure_future(coro)
        self._background.add(fut)
        fut.add_done_callback(self._background_done)

    def _background_done(self, fut: asyncio.Future[Any]) -> None:
        self._background.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.warning("job %s: background call failed: %s", self.job_id, fut.exception())


async def _notify(conn: RpcConnection, kind: str, body: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError, RpcError):
        await conn.notify(kind, body)
