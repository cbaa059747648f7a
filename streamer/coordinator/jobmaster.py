"""``JobMaster``: one job's deployment, task states and failover (DESIGN.md section 5).

Deployment: every task is deployed on a worker slot; a task process says
``task_hello`` with its data address and gets back its ``task_plan`` (the address
and attempt of the producer behind each input channel) once all its producers
have said hello. Task states go ``CREATED -> DEPLOYING -> RUNNING -> FINISHED``,
or ``FAILED`` / ``CANCELING -> CANCELED``.

Failover: a failure (the worker saw the process exit, the task reported an
exception, or its worker was lost) is decided by the ``FailoverStrategy`` and
the ``RestartBackoff``, then carried out here:

- ``full`` / ``region``: SIGKILL every task of the set, then redeploy them all as
  attempt+1 (sources resume from their last reported positions).
- ``individual`` (ByteDance): tell the producers ``consumer_failed`` and the
  consumers ``producer_failed``, redeploy only the failed task as attempt+1
  (same worker when alive), and once it runs send each consumer
  ``update_partition_info``; all acks within ``channel_update_timeout`` end the
  failover, otherwise it falls back to a region restart.

Every failover is a ``FailoverRecord`` with its timings. Threading: everything
runs on the coordinator's loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamer.api import load_job
from streamer.coordinator.backoff import RestartBackoff
from streamer.coordinator.checkpoints import CheckpointCoordinator
from streamer.coordinator.directory import ChannelDirectory
from streamer.coordinator.failover import RestartIndividual, make_strategy
from streamer.errors import StreamerError
from streamer.graph import ExchangeType, TaskId
from streamer.localkafka.jars import streamer_home
from streamer.rpc import Message, RpcConnection, RpcError

if TYPE_CHECKING:
    from streamer.coordinator.coordinator import Coordinator, WorkerInfo

log = logging.getLogger(__name__)

CREATED, DEPLOYING, RUNNING, FINISHED = "CREATED", "DEPLOYING", "RUNNING", "FINISHED"
FAILED, CANCELING, CANCELED = "FAILED", "CANCELING", "CANCELED"
FINAL = (FINISHED, CANCELED, FAILED)

# the job settings every task gets in its deployment
TASK_SETTINGS = (
    "bootstrap_servers", "buffer_timeout", "metrics_interval", "test_hooks", "log_level",
    "source_batch", "sink_commit_interval", "connect_timeout", "params", "idle_timeout_ms",
    "checkpoint_interval",
)  # fmt: skip

Counters = dict[TaskId, tuple[int, int]]  # per peer task: (metrics attempt, counter value)


@dataclass
class TaskExecution:
    """The coordinator's view of one task's current attempt."""

    task: TaskId
    attempt: int = 0
    state: str = CREATED
    worker_id: str | None = None
    pid: int | None = None
    data_address: str | None = None
    conn: RpcConnection | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    metrics_attempt: int = -1  # the attempt that sent ``metrics``; its counters start at 0
    error: str | None = None
    traceback: str | None = None
    state_since: float = field(default_factory=time.time)

    def set_state(self, state: str) -> None:
        self.state = state
        self.state_since = time.time()


@dataclass
class FailoverRecord:
    """One failover with its timings (epoch seconds) and effects."""

    id: int
    task: str
    failed_attempt: int
    strategy: str
    cause: str
    detected_at: float
    kill_requested_at: float | None = None
    deployed_at: float | None = None
    state_restored_at: float | None = None
    running_at: float | None = None
    channels_updated_at: float | None = None
    completed_at: float | None = None
    tasks_restarted: list[str] = field(default_factory=list)
    records_dropped: int | None = None
    records_cleared: int | None = None
    fell_back: bool = False
    fallback_reason: str | None = None
    fallback_at: float | None = None  # when the individual protocol gave up
    status: str = "in_progress"  # in_progress | done | job_failed | superseded

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.completed_at is not None:
            start = self.kill_requested_at or self.detected_at
            out["recovery_seconds"] = round(self.completed_at - start, 4)
        return out


class JobMaster:
    """Runs one job on the coordinator's workers."""

    def __init__(self, coordinator: Coordinator, job_id: str, job_ref: str, config: dict[str, Any]):
        self.coordinator = coordinator
        self.job_id = job_id
        self.job_ref = job_ref
        self.config = config
        self.job = load_job(job_ref, config.get("params"))
        for edge in self.job.job_graph.edges:
            if edge.exchange == ExchangeType.KAFKA:
                raise StreamerError(
                    f"edge {edge.edge_id} uses a kafka exchange, which the runtime does not "
                    "run yet; use a pipelined exchange (remove .exchange('kafka'))"
                )
        self.eg = self.job.execution_graph()
        self.strategy = make_strategy(config.get("strategy", "individual"), self.eg)
        self.backoff = RestartBackoff(
            max_failures_per_task=int(config.get("max_failures_per_task", 5)),
            max_total_failures=int(config.get("max_total_failures", 20)),
            delay_s=float(config.get("restart_delay", 0.0)),
            multiplier=float(config.get("restart_backoff_multiplier", 1.0)),
            failure_window_s=config.get("failure_window"),
        )
        self.channel_update_timeout = float(config.get("channel_update_timeout", 10.0))
        self.tasks = {t: TaskExecution(t) for t in self.eg.tasks}
        self.directory = ChannelDirectory(self.eg, self.tasks)
        self._graph_dict = self.job.job_graph.to_dict()  # immutable; sent with every deploy
        self.state = CREATED
        self.failure_reason: str | None = None
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.failovers: list[FailoverRecord] = []
        self._pending_hellos: dict[TaskId, tuple[RpcConnection, Message]] = {}
        # per region/full failover (record id): (its tasks, those not RUNNING yet)
        self._restarting: dict[int, tuple[frozenset[TaskId], set[TaskId]]] = {}
        self._kill_requests: dict[TaskId, float] = {}
        self._active: dict[TaskId, FailoverRecord] = {}
        # per individual failover (record id): dropped and cleared counters at its start
        self._loss_baselines: dict[int, tuple[Counters, Counters]] = {}
        self._background: set[asyncio.Future[Any]] = set()
        self.done = asyncio.Event()
        interval = config.get("checkpoint_interval")
        root = Path(config.get("checkpoint_dir") or streamer_home() / "checkpoints" / job_id)
        self.config["checkpoint_dir"] = str(root)
        self.checkpoints = CheckpointCoordinator(
            self,
            root,
            interval=None if interval is None else float(interval),
            timeout=float(config.get("checkpoint_timeout", 60.0)),
            retained=int(config.get("checkpoints_retained", 3)),
        )
        self._restore_plans: dict[TaskId, dict[str, Any]] = {}

    # ------------------------------------------------------------- deployment
    async def start(self) -> None:
        savepoint = self.config.get("from_savepoint")
        if savepoint:
            try:
                loaded = self.checkpoints.storage.load(Path(savepoint))
            except Exception as exc:  # noqa: BLE001 - any unreadable savepoint fails the job clearly
                await self._fail_job(f"cannot restore from savepoint {savepoint}: {exc}")
                return
            self._restore_plans = self.checkpoints.restore_plans(set(self.eg.tasks), loaded)
        self.state = RUNNING
        await self.coordinator.prepare_job(self.job_id, self.job_ref)
        self._spawn(self.checkpoints.run())
        await asyncio.gather(*(self._deploy(t) for t in self.eg.tasks))

    def can_checkpoint(self) -> bool:
        """Every unfinished task runs and no failover is in progress."""
        return (
            self.state == RUNNING
            and not self._active
            and all(te.state == RUNNING for te in self.tasks.values())
        )

    def spawn_notify(self, te: TaskExecution, kind: str, body: dict[str, Any]) -> None:
        self._spawn(self._notify(te, kind, body))

    async def savepoint(self, directory: str, stop: bool) -> tuple[str, int]:
        """Take a savepoint into ``directory``; with ``stop``, cancel the job after it."""
        deadline = time.monotonic() + self.checkpoints.timeout
        while not self.can_checkpoint() or self.checkpoints.pending is not None:
            if time.monotonic() > deadline or self.state in FINAL:
                raise StreamerError(f"job {self.job_id} cannot take a savepoint now ({self.state})")
            await asyncio.sleep(0.05)
        checkpoint_id = self.checkpoints.next_id
        done = await self.checkpoints.trigger(savepoint=Path(directory))
        path = await asyncio.wait_for(done, self.checkpoints.timeout)
        if stop:
            await self._wait_for_commits(checkpoint_id)
            await self.cancel()
        return str(path), checkpoint_id

    def _spawn(self, coro: Any) -> None:
        fut = asyncio.ensure_future(coro)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    async def _deploy(self, task: TaskId, prefer: str | None = None) -> None:
        if self.state != RUNNING:
            return
        te = self.tasks[task]
        attempt = te.attempt
        worker = await self._wait_for_slot(task, prefer)
        if worker is None or self.state != RUNNING or te.attempt != attempt:
            return
        te.worker_id = worker.worker_id
        te.set_state(DEPLOYING)
        te.pid = None
        self.directory.set_address(te, None)
        te.conn = None
        worker.used += 1
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "job_ref": self.job_ref,
            "job_graph": self._graph_dict,
            "task": str(task),
            "attempt": attempt,
            "config": self._task_config(),
        }
        try:
            reply = await worker.conn.request("deploy_task", body, timeout=30.0)
        except (RpcError, ConnectionError) as exc:
            worker.used -= 1
            log.warning("deploying %s@%d on %s failed: %s", task, attempt, worker.worker_id, exc)
            await self.on_task_failure(task, attempt, f"deploy failed: {exc}")
            return
        if te.attempt == attempt:
            te.pid = int(reply.body["pid"])
        rec = self._active.get(task)
        if rec is not None and rec.deployed_at is None:
            rec.deployed_at = time.time()

    async def _wait_for_slot(self, task: TaskId, prefer: str | None) -> WorkerInfo | None:
        """A worker with a free slot, waiting up to ``slot_request_timeout`` for one
        (a lost worker may be replaced, a finishing task may free one); None when the
        job stopped meanwhile, or after failing the job when none came."""
        worker = self.coordinator.pick_worker(prefer)
        if worker is not None:
            return worker
        timeout = float(self.config.get("slot_request_timeout", 60.0))
        deadline = time.monotonic() + timeout
        log.warning("job %s: no free slot for %s; waiting up to %g s", self.job_id, task, timeout)
        while self.state == RUNNING and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            worker = self.coordinator.pick_worker(prefer)
            if worker is not None:
                return worker
        if self.state == RUNNING:
            free = sum(w.free for w in self.coordinator.workers.values())
            await self._fail_job(
                f"no free slot for {task} within slot_request_timeout={timeout:g} s "
                f"({len(self.coordinator.workers)} worker(s), {free} free slot(s)); "
                "start more workers or lower the parallelism"
            )
        return None

    def _task_config(self) -> dict[str, Any]:
        config = {k: self.config[k] for k in TASK_SETTINGS if k in self.config}
        config["checkpoint_dir"] = self.config["checkpoint_dir"]
        return config

    def on_hello(self, conn: RpcConnection, msg: Message) -> None:
        task = TaskId.parse(msg.body["task"])
        te = self.tasks.get(task)
        if te is None or msg.body["attempt"] != te.attempt or te.state in FINAL:
            self._spawn(
                conn.reply_error(msg, f"stale or unknown task {task}@{msg.body['attempt']}")
            )
            return
        te.conn = conn
        te.pid = msg.body["pid"]
        ready = self.directory.set_address(te, msg.body["data_address"] or None)
        self._pending_hellos[task] = (conn, msg)
        self._answer_hello(task)
        for waiter in ready:
            self._answer_hello(waiter)

    def _answer_hello(self, task: TaskId) -> None:
        """Send ``task`` its plan if every producer's address is known; else it waits
        in the directory, and a producer's hello answers it."""
        entry = self._pending_hellos.get(task)
        if entry is None:
            return
        inputs = self.directory.inputs(task)
        if inputs is None:
            return
        del self._pending_hellos[task]
        body: dict[str, Any] = {"inputs": inputs}
        restore = self._restore_for(task)
        if restore:
            body["restore"] = restore
        conn, msg = entry
        self._spawn(conn.reply(msg, "task_plan", body))

    def _forget_hello(self, task: TaskId) -> None:
        self._pending_hellos.pop(task, None)
        self.directory.forget(task)

    def _exactly_once_sinks(self) -> list[TaskId]:
        return [
            t
            for t in self.eg.tasks
            if self.eg.vertex_of(t).operators[-1].kind == "kafka_sink"
            and self.eg.vertex_of(t).operators[-1].config.get("delivery") == "exactly_once"
        ]

    async def _wait_for_commits(self, checkpoint_id: int, timeout: float = 30.0) -> None:
        """Until every exactly-once sink committed ``checkpoint_id`` (stop-with-savepoint)."""
        sinks = self._exactly_once_sinks()
        deadline = time.monotonic() + timeout
        while any(self.checkpoints.committed.get(t, 0) < checkpoint_id for t in sinks):
            if time.monotonic() > deadline:
                log.warning("job %s: sinks did not commit savepoint %d", self.job_id, checkpoint_id)
                return
            await asyncio.sleep(0.02)

    def _restore_for(self, task: TaskId) -> dict[str, Any]:
        """The checkpoint restore plan; without one, a source resumes at its last report."""
        plan = self._restore_plans.pop(task, None)
        if plan:
            return plan
        snapshot = self.tasks[task].metrics.get("source", {}).get("snapshot")
        return {"source": snapshot} if snapshot and snapshot.get("positions") else {}

    # ----------------------------------------------------------------- states
    async def on_task_state(self, body: dict[str, Any]) -> None:
        task = TaskId.parse(body["task"])
        te = self.tasks.get(task)
        if te is None or body["attempt"] != te.attempt or self.state != RUNNING:
            return  # a stale attempt, or a late report while the job ends
        state = body["state"]
        if state == RUNNING:
            te.set_state(RUNNING)
            rec = self._active.get(task)
            if rec is not None:
                now = time.time()
                rec.state_restored_at = rec.state_restored_at or now
                rec.running_at = now
                if rec.strategy == "individual" and not rec.fell_back:
                    self._spawn(self._update_consumers(task, rec))
                else:
                    self._check_restart_done(rec, task)
        elif state == FINISHED:
            te.set_state(FINISHED)
            self._release_slot(te)
            if all(t.state == FINISHED for t in self.tasks.values()):
                self._end(FINISHED)
        elif state == CANCELED:
            te.set_state(CANCELED)
        elif state == FAILED:
            te.error = body.get("error")
            te.traceback = body.get("traceback")
            await self.on_task_failure(task, te.attempt, f"exception: {te.error}")

    def on_metrics(self, body: dict[str, Any]) -> None:
        te = self.tasks.get(TaskId.parse(body["task"]))
        if te is not None and body["attempt"] == te.attempt:
            te.metrics = body["metrics"]
            te.metrics_attempt = te.attempt

    def on_task_exited(self, body: dict[str, Any]) -> None:
        task = TaskId.parse(body["task"])
        te = self.tasks.get(task)
        if te is None or body["attempt"] != te.attempt:
            return
        if te.state in (FINISHED, CANCELED):
            return
        sig = body.get("signal")
        cause = (
            f"process killed by signal {sig}" if sig else f"process exited with {body['exit_code']}"
        )
        self._spawn(self.on_task_failure(task, te.attempt, cause))

    def request_kill(self, task: TaskId) -> None:
        self._kill_requests[task] = time.time()

    def _release_slot(self, te: TaskExecution) -> None:
        worker = self.coordinator.workers.get(te.worker_id or "")
        if worker is not None and worker.used > 0:
            worker.used -= 1

    # --------------------------------------------------------------- failover
    async def on_task_failure(self, task: TaskId, attempt: int, cause: str) -> None:
        te = self.tasks[task]
        if (
            attempt != te.attempt
            or te.state in (FAILED, CANCELING, *FINAL)
            or self.state != RUNNING
        ):
            return
        now = time.time()
        te.set_state(FAILED)
        te.conn = None
        self.directory.set_address(te, None)
        self.checkpoints.abort(f"task {task} failed")
        self._forget_hello(task)
        self._release_slot(te)
        log.warning("job %s: task %s@%d failed: %s", self.job_id, task, attempt, cause)
        rec = FailoverRecord(
            id=len(self.failovers) + 1,
            task=str(task),
            failed_attempt=attempt,
            strategy=self.strategy.name,
            cause=cause,
            detected_at=now,
            kill_requested_at=self._kill_requests.pop(task, None),
        )
        self.failovers.append(rec)
        decision = self.backoff.decide(task, time.monotonic())
        if not decision.restart:
            rec.status = "job_failed"
            await self._fail_job(f"{decision.reason}; last failure: {cause}")
            return
        if decision.delay_s:
            await asyncio.sleep(decision.delay_s)
        if self.state != RUNNING:
            return
        if te.attempt != attempt:  # during the delay, another failover's restart took it
            rec.status = "superseded"
            return
        to_restart = self.strategy.tasks_to_restart(task, cause)
        rec.tasks_restarted = sorted(str(t) for t in to_restart)
        if isinstance(self.strategy, RestartIndividual):
            await self._restart_individual(task, rec)
        else:
            await self._restart_set(to_restart, rec)

    async def _restart_individual(self, task: TaskId, rec: FailoverRecord) -> None:
        self._loss_baselines[rec.id] = (self._dropped_for(task), self._cleared_for(task))
        for producer in self.eg.producers_of(task, ExchangeType.PIPELINED):
            pe = self.tasks[producer]
            for rp in self.eg.result_partitions(producer):
                subpartition = rp.find_subpartition(task)
                if subpartition is not None and pe.conn is not None:
                    body = {"partition_id": rp.partition_id, "subpartition": subpartition}
                    self._spawn(self._notify(pe, "consumer_failed", body))
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            for gate_index, channel in self.eg.channels_between(task, consumer):
                ce = self.tasks[consumer]
                if ce.conn is not None:
                    body = {"gate": gate_index, "channel": channel}
                    self._spawn(self._notify(ce, "producer_failed", body))
        te = self.tasks[task]
        previous = te.worker_id
        te.attempt += 1
        self._active[task] = rec
        self._restore_plans.update(self.checkpoints.restore_plans({task}))
        await self._deploy(task, prefer=previous)

    async def _notify(self, te: TaskExecution, kind: str, body: dict[str, Any]) -> None:
        if te.conn is not None:
            with contextlib.suppress(ConnectionError, RpcError):
                await te.conn.notify(kind, body)

    async def _update_consumers(self, task: TaskId, rec: FailoverRecord) -> None:
        te = self.tasks[task]
        requests = []
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            ce = self.tasks[consumer]
            if ce.conn is None or ce.state != RUNNING:
                continue  # it is restarting too and gets the address in its plan
            for gate_index, channel in self.eg.channels_between(task, consumer):
                body = {
                    "gate": gate_index,
                    "channel": channel,
                    "address": te.data_address or "",
                    "attempt": te.attempt,
                }
                requests.append(ce.conn.request("update_partition_info", body, timeout=3600))
        try:
            await asyncio.wait_for(asyncio.gather(*requests), self.channel_update_timeout)
        except (TimeoutError, RpcError, ConnectionError) as exc:
            if self.state != RUNNING:
                return  # the job is ending; its tasks are being stopped
            reason = (
                f"channel updates not acknowledged within {self.channel_update_timeout:g} s"
                if isinstance(exc, TimeoutError)
                else f"channel update failed: {exc}"
            )
            log.warning(
                "job %s: %s for %s; falling back to a region restart", self.job_id, reason, task
            )
            rec.fell_back = True
            rec.fallback_reason = reason
            rec.fallback_at = time.time()
            assert isinstance(self.strategy, RestartIndividual)
            region = self.strategy.fallback(task)
            rec.tasks_restarted = sorted(str(t) for t in region)
            await self._restart_set(region, rec)
            return
        rec.channels_updated_at = time.time()
        self._complete(rec, task)

    async def _restart_set(self, tasks: frozenset[TaskId], rec: FailoverRecord) -> None:
        """Kill every task of the set (old attempts), then redeploy them all as attempt+1."""
        if self.state != RUNNING:
            return
        kills = []
        placements: dict[TaskId, str | None] = {}
        for task in tasks:
            te = self.tasks[task]
            placements[task] = te.worker_id
            worker = self.coordinator.workers.get(te.worker_id or "")
            if te.state not in (FAILED, FINISHED, CANCELED):
                self._release_slot(te)  # a failed task already gave its slot back
            if worker is not None and te.state not in (FINISHED, CANCELED):
                body = {"job_id": self.job_id, "task": str(task), "attempt": te.attempt}
                kills.append(worker.conn.request("cancel_task", body, timeout=30.0))
            te.set_state(CANCELING)
            te.attempt += 1
            te.conn = None
            self.directory.set_address(te, None)
            self._forget_hello(task)
            self._active[task] = rec
        results = await asyncio.gather(*kills, return_exceptions=True)
        for result in results:
            if isinstance(result, Exception):
                log.warning("job %s: cancel during restart failed: %s", self.job_id, result)
        rec.records_dropped = None
        rec.records_cleared = None
        self._loss_baselines.pop(rec.id, None)
        self._restarting[rec.id] = (tasks, set(tasks))
        self._restore_plans.update(self.checkpoints.restore_plans(set(tasks)))
        ordered = [t for t in self.eg.tasks if t in tasks]  # producers first: fewer waits
        await asyncio.gather(*(self._deploy(t, prefer=placements[t]) for t in ordered))

    def _check_restart_done(self, rec: FailoverRecord, task: TaskId) -> None:
        """``task`` of ``rec``'s restart set runs; the failover is done with the last one."""
        entry = self._restarting.get(rec.id)
        if entry is None:
            return
        tasks, outstanding = entry
        outstanding.discard(task)
        if outstanding:
            return
        del self._restarting[rec.id]
        rec.channels_updated_at = time.time()
        for t in tasks:
            if self._active.get(t) is rec:
                del self._active[t]
        rec.completed_at = rec.channels_updated_at
        rec.status = "done"

    def _complete(self, rec: FailoverRecord, task: TaskId) -> None:
        rec.completed_at = time.time()
        rec.status = "done"
        self._active.pop(task, None)
        self._spawn(self._count_losses(task, rec))

    async def _count_losses(self, task: TaskId, rec: FailoverRecord) -> None:
        """Dropped and cleared records, from the next metrics reports after the failover.

        Counters are per task attempt: a peer that restarted meanwhile counts from zero,
        so each peer contributes its growth within one attempt, never a negative."""
        await asyncio.sleep(2.5 * float(self.config.get("metrics_interval", 1.0)))
        dropped_before, cleared_before = self._loss_baselines.pop(rec.id, ({}, {}))
        rec.records_dropped = _growth(dropped_before, self._dropped_for(task))
        rec.records_cleared = _growth(cleared_before, self._cleared_for(task))

    def _dropped_for(self, task: TaskId) -> Counters:
        """Per producer of ``task``: (metrics attempt, records it dropped for ``task``)."""
        out: Counters = {}
        for producer in self.eg.producers_of(task, ExchangeType.PIPELINED):
            pe = self.tasks[producer]
            parts = pe.metrics.get("partitions", {})
            total = 0
            for rp in self.eg.result_partitions(producer):
                subpartition = rp.find_subpartition(task)
                if subpartition is not None and rp.partition_id in parts:
                    total += parts[rp.partition_id]["dropped"][subpartition]
            out[producer] = (pe.metrics_attempt, total)
        return out

    def _cleared_for(self, task: TaskId) -> Counters:
        """Per consumer of ``task``: (metrics attempt, partial records of ``task`` cleared)."""
        out: Counters = {}
        for consumer in self.eg.consumers_of(task, ExchangeType.PIPELINED):
            ce = self.tasks[consumer]
            channels = ce.metrics.get("channels", [])
            offsets = self._gate_offsets(consumer)
            total = 0
            for gate_index, channel in self.eg.channels_between(task, consumer):
                flat = offsets[gate_index] + channel
                if flat < len(channels):
                    total += channels[flat]["cleared"]
            out[consumer] = (ce.metrics_attempt, total)
        return out

    def _gate_offsets(self, task: TaskId) -> list[int]:
        offsets, n = [], 0
        for gate in self.eg.input_gates(task):
            offsets.append(n)
            n += len(gate.channels)
        return offsets

    # ------------------------------------------------------------ job end
    async def _fail_job(self, reason: str) -> None:
        if self.state in FINAL:
            return
        log.error("job %s FAILED: %s", self.job_id, reason)
        self.failure_reason = reason
        self.state = CANCELING  # no restart, deploy or fallback from now on
        await self._stop_all()
        self._end(FAILED)

    async def cancel(self) -> None:
        if self.state in FINAL:
            return
        self.state = CANCELING
        await self._stop_all()
        self._end(CANCELED)

    async def _stop_all(self) -> None:
        kills = []
        for task, te in self.tasks.items():
            if te.state in FINAL and te.state != FAILED:
                continue
            worker = self.coordinator.workers.get(te.worker_id or "")
            if worker is not None:
                body = {"job_id": self.job_id, "task": str(task), "attempt": te.attempt}
                kills.append(worker.conn.request("cancel_task", body, timeout=30.0))
            if te.state not in FINAL:
                self._release_slot(te)
                te.set_state(CANCELED)
        await asyncio.gather(*kills, return_exceptions=True)

    def _end(self, state: str) -> None:
        if self.state in FINAL:
            return
        self.state = state
        self.ended_at = time.time()
        self.done.set()
        log.info("job %s ended %s", self.job_id, state)

    def on_worker_lost(self, worker: WorkerInfo) -> None:
        """Fail the worker's tasks; closing their control connections stops any survivor."""
        for task, te in self.tasks.items():
            if te.worker_id == worker.worker_id and te.state not in FINAL:
                if te.conn is not None:
                    self._spawn(te.conn.close(reason=f"worker {worker.worker_id} lost"))
                self._spawn(
                    self.on_task_failure(task, te.attempt, f"worker {worker.worker_id} lost")
                )

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        tasks = []
        for task, te in sorted(self.tasks.items()):
            worker = self.coordinator.workers.get(te.worker_id or "")
            tasks.append(
                {
                    "task": str(task),
                    "vertex": task.vertex_id,
                    "subtask": task.subtask,
                    "attempt": te.attempt,
                    "state": te.state,
                    "worker": te.worker_id,
                    "host": worker.host if worker else None,
                    "pid": te.pid,
                    "data_address": te.data_address,
                    "error": te.error,
                    "traceback": te.traceback,
                    "metrics": te.metrics,
                }
            )
        return {
            "job_id": self.job_id,
            "name": self.job.name,
            "job_ref": self.job_ref,
            "state": self.state,
            "strategy": self.strategy.name,
            "failure_reason": self.failure_reason,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "graph": self._graph_dict,
            "tasks": tasks,
            "failovers": [r.to_dict() for r in self.failovers],
            "checkpoints": self.checkpoints.status(),
            "records_processed": sum(
                t.metrics.get("records_processed", 0) for t in self.tasks.values()
            ),
            "records_in": sum(
                t.metrics.get("source", {}).get("records_in", 0) for t in self.tasks.values()
            ),
            "records_out": sum(
                t.metrics.get("sink", {}).get("records_out", 0) for t in self.tasks.values()
            ),
        }

    def summary(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "name": self.job.name,
            "state": self.state,
            "strategy": self.strategy.name,
            "tasks": len(self.tasks),
            "running": sum(1 for t in self.tasks.values() if t.state == RUNNING),
            "failovers": len(self.failovers),
            "failure_reason": self.failure_reason,
        }


def _growth(before: Counters, after: Counters) -> int:
    """How much the counters grew from ``before`` to ``after``; a peer whose attempt
    changed in between counts all of its new attempt's value."""
    total = 0
    for peer, (attempt, value) in after.items():
        old_attempt, old_value = before.get(peer, (attempt, 0))
        total += value - old_value if old_attempt == attempt else value
    return total
