"""The coordinator process (Flink's JobMaster + ResourceManager, small).

It serves the control plane (RPC) for workers, task processes and clients,
tracks workers by heartbeat, runs one ``JobMaster`` per submitted job, and
serves JSON status over HTTP. A worker is declared lost when its control
connection closes or after ``heartbeat_timeout`` seconds without a heartbeat;
all its tasks are then failed.

Every control connection authenticates with a key derived from the cluster secret
and then may only send what its role may (`streamer.security.roles`); a worker
speaks only for itself and the tasks it hosts, a task only for its own attempt.

Run with ``python -m streamer.coordinator`` or ``streamer coordinator``.
Threading: one asyncio loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from streamer.coordinator.jobmaster import JobMaster
from streamer.coordinator.settings import validate_settings
from streamer.coordinator.slots import SlotPool, WorkerInfo
from streamer.coordinator.status_http import StatusServer
from streamer.errors import StreamerError
from streamer.graph import TaskId
from streamer.rpc import Message, RpcConnection, RpcServer
from streamer.rpc import kinds as k
from streamer.rpc.dispatch import Dispatcher
from streamer.security import cluster_secret
from streamer.security.roles import CLIENT, authorize, coordinator_keys
from streamer.security.tls import server_ssl

log = logging.getLogger(__name__)


class Coordinator:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        status_port: int | None = 0,
        *,
        heartbeat_interval: float = 1.0,
        heartbeat_timeout: float = 6.0,
        status_host: str = "127.0.0.1",
        secret: bytes | None = None,
        client_idle_timeout: float = 300.0,
    ) -> None:
        self.secret = cluster_secret() if secret is None else secret
        self.client_idle_timeout = client_idle_timeout
        self.host = host
        self.port = port
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.slots = SlotPool()
        self.jobs: dict[str, JobMaster] = {}
        self.server: RpcServer | None = None
        self.status = (
            StatusServer(self._route, status_host, status_port) if status_port is not None else None
        )
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()
        self._monitor: asyncio.Future[None] | None = None
        self.on_message = self._dispatcher()  # every control-plane message enters here

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await RpcServer.start(
            self.on_message,
            self.host,
            self.port,
            name="coordinator",
            key_for=coordinator_keys(self.secret),
            idle_timeout=self._idle_timeout,
            ssl=server_ssl(),
        )
        self.port = self.server.address[1]
        if self.status is not None:
            await self.status.start()
        self._monitor = asyncio.ensure_future(self._watch_heartbeats())
        log.info(
            "coordinator at %s (status port %s)", self.address, self.status and self.status.port
        )

    async def serve_forever(self) -> None:
        await self._stopped.wait()
        await self.close()

    def stop(self) -> None:
        self._stopped.set()

    async def close(self) -> None:
        for job in self.jobs.values():
            with contextlib.suppress(Exception):
                await job.cancel()
        if self._monitor is not None:
            self._monitor.cancel()
        if self.status is not None:
            await self.status.close()
        if self.server is not None:
            await self.server.close()

    def _spawn(self, coro: Any) -> None:
        fut = asyncio.ensure_future(coro)
        self._background.add(fut)
        fut.add_done_callback(self._background.discard)

    # --------------------------------------------------------------- workers
    async def prepare_job(self, job_id: str, job_ref: str) -> None:
        for worker in list(self.workers.values()):
            with contextlib.suppress(ConnectionError):
                await worker.conn.notify("prepare_job", {"job_id": job_id, "job_ref": job_ref})

    @property
    def workers(self) -> dict[str, WorkerInfo]:
        return self.slots.workers

    def _worker_lost(self, worker: WorkerInfo, why: str) -> None:
        if not self.slots.remove(worker):
            return
        log.warning("worker %s lost: %s", worker.worker_id, why)
        for job in self.jobs.values():
            job.on_worker_lost(worker)
        self._spawn(worker.conn.close(reason=why))

    async def _watch_heartbeats(self) -> None:
        """Declare a worker lost after ``heartbeat_timeout`` of silence.

        A stall of the coordinator's own loop (a long GC or disk pause) is not held
        against the workers: their heartbeats were waiting, unread, in the sockets.
        """
        tick = self.heartbeat_interval / 2
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            stall = now - last - tick
            last = now
            if stall > tick:
                log.warning("coordinator loop stalled for %.1f s; heartbeat clocks paused", stall)
                for worker in self.workers.values():
                    worker.last_heartbeat += stall
                continue
            for worker in list(self.workers.values()):
                silent = now - worker.last_heartbeat
                if silent > self.heartbeat_timeout:
                    self._worker_lost(worker, f"no heartbeat for {silent:.1f} s")

    def _idle_timeout(self, identity: Any) -> float | None:
        """Clients that stay silent are dropped; workers and tasks are watched by
        heartbeats and their processes instead."""
        return self.client_idle_timeout if identity.get("role") == CLIENT else None

    # -------------------------------------------------------------- messages
    def _dispatcher(self) -> Dispatcher:
        return Dispatcher(
            "coordinator",
            {
                k.RegisterWorker: self._on_register_worker,
                k.Heartbeat: self._on_heartbeat,
                k.TaskExited: self._on_task_exited,
                k.TaskHello: self._on_task_hello,
                k.TaskStateReport: self._on_task_state,
                k.TaskMetrics: self._on_task_metrics,
                k.CheckpointAck: self._on_checkpoint_ack,
                k.CheckpointDeclined: self._on_checkpoint_declined,
                k.CheckpointCommitted: self._on_checkpoint_committed,
                k.TriggerSavepoint: self._on_trigger_savepoint,
                k.SubmitJob: self._on_submit_job,
                k.ListJobs: self._on_list_jobs,
                k.JobStatus: self._on_job_status,
                k.CancelJob: self._on_cancel_job,
                k.KillTask: self._on_kill_task,
            },
            authorize,
        )

    def _job(self, job_id: str) -> JobMaster:
        try:
            return self.jobs[job_id]
        except KeyError:
            raise StreamerError(f"no job {job_id!r}; `streamer jobs` lists them") from None

    async def _on_register_worker(
        self, conn: RpcConnection, msg: Message, b: k.RegisterWorker
    ) -> None:
        live = self.workers.get(b.worker_id)
        if live is not None and not live.conn.closed:
            raise StreamerError(
                f"worker {b.worker_id} is registered and alive; give each worker its own --id"
            )
        worker = WorkerInfo(b.worker_id, b.host, b.pid, b.slots, conn)
        self.slots.add(worker)
        conn.on_close(lambda _c: self._worker_lost(worker, "control connection closed"))
        await conn.reply(
            msg,
            "registered",
            {
                "heartbeat_interval": self.heartbeat_interval,
                "heartbeat_timeout": self.heartbeat_timeout,
            },
        )
        for job in self.jobs.values():
            if not job.state.is_final:
                await conn.notify("prepare_job", {"job_id": job.job_id, "job_ref": job.job_ref})
        log.info("worker %s registered from %s with %d slots", b.worker_id, b.host, b.slots)

    def _on_heartbeat(self, conn: RpcConnection, msg: Message, b: k.Heartbeat) -> None:
        worker = self.workers.get(b.worker_id)
        if worker is not None and worker.conn is conn:
            worker.last_heartbeat = time.monotonic()

    def _on_task_exited(self, conn: RpcConnection, msg: Message, b: k.TaskExited) -> None:
        job = self.jobs.get(b.job_id)
        if job is None:
            return
        te = job.tasks.current(TaskId.parse(b.task), b.attempt)
        worker = self.workers.get(str(conn.identity.get("id")))
        if te is not None and (
            worker is None or worker.conn is not conn or te.worker_id != worker.worker_id
        ):
            raise StreamerError(f"{b.task}@{b.attempt} does not run on this worker")
        job.on_task_exited(b)

    async def _on_task_hello(self, conn: RpcConnection, msg: Message, b: k.TaskHello) -> None:
        job = self.jobs.get(b.job_id)
        if job is None:
            await conn.reply_error(msg, f"unknown job {b.job_id}")
            return
        job.scheduler.on_hello(conn, msg, b)

    async def _on_task_state(self, conn: RpcConnection, msg: Message, b: k.TaskStateReport) -> None:
        job = self.jobs.get(b.job_id)
        if job is not None:
            await job.on_task_state(b)

    def _on_task_metrics(self, conn: RpcConnection, msg: Message, b: k.TaskMetrics) -> None:
        job = self.jobs.get(b.job_id)
        if job is not None:
            job.on_metrics(b)

    def _on_checkpoint_ack(self, conn: RpcConnection, msg: Message, b: k.CheckpointAck) -> None:
        job = self.jobs.get(b.job_id)
        if job is not None:
            job.checkpoints.on_ack(b)

    def _on_checkpoint_declined(
        self, conn: RpcConnection, msg: Message, b: k.CheckpointDeclined
    ) -> None:
        job = self.jobs.get(b.job_id)
        if job is not None:
            job.checkpoints.on_declined(b)

    def _on_checkpoint_committed(
        self, conn: RpcConnection, msg: Message, b: k.CheckpointCommitted
    ) -> None:
        job = self.jobs.get(b.job_id)
        if job is not None:
            job.checkpoints.on_committed(b)

    async def _on_trigger_savepoint(
        self, conn: RpcConnection, msg: Message, b: k.TriggerSavepoint
    ) -> None:
        path, checkpoint_id = await self._job(b.job_id).savepoint(b.directory, bool(b.stop))
        await conn.reply(msg, "savepoint", {"path": path, "checkpoint_id": checkpoint_id})

    async def _on_submit_job(self, conn: RpcConnection, msg: Message, b: k.SubmitJob) -> None:
        if not self.workers:
            raise StreamerError("no worker is registered: start one with `streamer worker`")
        job_id = f"job-{uuid.uuid4().hex[:8]}"
        job = JobMaster(self, job_id, b.job_ref, validate_settings(b.config))
        free = self.slots.free
        if free < len(job.tasks):
            raise StreamerError(
                f"job needs {len(job.tasks)} slots but the workers have {free} free: "
                "start more workers or give them more --slots"
            )
        self.jobs[job_id] = job
        self._spawn(job.start())
        await conn.reply(msg, "submitted", {"job_id": job_id})

    async def _on_list_jobs(self, conn: RpcConnection, msg: Message, b: k.ListJobs) -> None:
        await conn.reply(msg, "jobs", {"jobs": [j.summary() for j in self.jobs.values()]})

    async def _on_job_status(self, conn: RpcConnection, msg: Message, b: k.JobStatus) -> None:
        await conn.reply(msg, "status", {"status": self._job(b.job_id).status()})

    async def _on_cancel_job(self, conn: RpcConnection, msg: Message, b: k.CancelJob) -> None:
        await self._job(b.job_id).cancel()
        await conn.reply(msg, "ok")

    async def _on_kill_task(self, conn: RpcConnection, msg: Message, b: k.KillTask) -> None:
        """Fault injection from a client: SIGKILL the task's current process."""
        job = self._job(b.job_id)
        task = TaskId.parse(b.task)
        te = job.tasks.get(task)
        if te is None:
            raise StreamerError(f"job {job.job_id} has no task {task}")
        worker = self.workers.get(te.worker_id or "")
        if worker is None:
            raise StreamerError(f"task {task} is not placed on a live worker")
        job.request_kill(task)
        body = {"job_id": job.job_id, "task": str(task), "attempt": te.attempt}
        await worker.conn.request("kill_task", body, timeout=30.0)
        if msg.wants_reply:
            await conn.reply(msg, "ok")

    # ---------------------------------------------------------------- status
    def _route(self, parts: list[str]) -> Any:
        if parts == ["jobs"]:
            return [j.summary() for j in self.jobs.values()]
        if len(parts) == 2 and parts[0] == "jobs":
            job = self.jobs.get(parts[1])
            return None if job is None else job.status()
        if parts == ["workers"]:
            return [
                {
                    "worker_id": w.worker_id,
                    "host": w.host,
                    "pid": w.pid,
                    "slots": w.slots,
                    "used": w.used,
                    "heartbeat_age": round(time.monotonic() - w.last_heartbeat, 3),
                }
                for w in self.workers.values()
            ]
        return None


def write_ready_file(path: str | Path, coordinator: Coordinator) -> None:
    """Tell whoever started us where we listen (written atomically)."""
    target = Path(path)
    tmp = target.with_suffix(".tmp")
    status_port = coordinator.status.port if coordinator.status is not None else None
    tmp.write_bytes(orjson.dumps({"address": coordinator.address, "status_port": status_port}))
    tmp.rename(target)
