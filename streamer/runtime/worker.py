"""The worker (Flink's TaskExecutor): registers with the coordinator, heartbeats, runs tasks.

Each task runs in its own OS process taken from the ``WarmPool`` (already
imported the runtime and the job module). The worker is that process's parent:
it awaits its exit and reports ``task_exited`` to the coordinator at once,
with the exit code or the signal that killed it. ``kill_task`` (fault
injection) and ``cancel_task`` (hard cancel during a region or full restart)
SIGKILL the process and answer once it is gone.

If the connection to the coordinator is lost the worker kills its tasks and
exits: a worker without its coordinator has nothing to report to.

Security (DESIGN.md §10): the worker holds the cluster secret and proves it to the
coordinator; its task processes never see it. Each deployment carries keys derived
for that attempt only (its control key and its job's data key), and the secret's
environment variables are removed from the task processes' environment.

Threading: one asyncio loop. Run with ``python -m streamer.runtime.worker`` or
``streamer worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamer.rpc import Message, RpcConnection, connect
from streamer.rpc import kinds as k
from streamer.rpc.dispatch import Dispatcher
from streamer.runtime.warm_pool import WarmPool, task_log_path
from streamer.security import SECRET_ENV, SECRET_FILE_ENV, cluster_secret
from streamer.security.roles import task_keys, worker_credentials
from streamer.security.tls import client_ssl

log = logging.getLogger(__name__)


@dataclass
class RunningTask:
    job_id: str
    task: str
    attempt: int
    proc: asyncio.subprocess.Process
    started_at: float
    exited: asyncio.Event


class Worker:
    """One worker process; ``await Worker(...).run()`` until the coordinator goes away."""

    def __init__(
        self,
        coordinator: str,
        *,
        slots: int = 8,
        bind_host: str = "127.0.0.1",
        advertise_host: str | None = None,
        worker_id: str | None = None,
        work_dir: str | Path | None = None,
        warm_processes: int = 2,
        secret: bytes | None = None,
    ) -> None:
        self.secret = cluster_secret() if secret is None else secret
        self.coordinator = coordinator
        self.slots = slots
        self.bind_host = bind_host
        self.advertise_host = advertise_host or bind_host
        self.worker_id = worker_id or f"worker-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
        self.work_dir = Path(work_dir or Path.cwd() / "streamer-work") / self.worker_id
        task_env = {k: v for k, v in os.environ.items() if k not in (SECRET_ENV, SECRET_FILE_ENV)}
        self.pool = WarmPool(warm_processes, env=task_env)
        self.tasks: dict[tuple[str, str, int], RunningTask] = {}
        self.conn: RpcConnection | None = None
        self._stopped = asyncio.Event()
        self._background: set[asyncio.Future[Any]] = set()

    async def run(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        await self.pool.start()
        host, _, port = self.coordinator.rpartition(":")
        self.conn = await connect(
            host,
            int(port),
            self._dispatcher(),
            name="coordinator",
            timeout=5.0,
            retries=50,
            credentials=worker_credentials(self.secret, self.worker_id),
            ssl=client_ssl(),
        )
        self.conn.on_close(lambda _conn: self._stopped.set())
        reply = await self.conn.request(
            "register_worker",
            {"worker_id": self.worker_id, "host": self.advertise_host, "pid": os.getpid(),
             "slots": self.slots},
        )  # fmt: skip
        interval = float(reply.body["heartbeat_interval"])
        log.info(
            "worker %s registered with %s (%d slots)", self.worker_id, self.coordinator, self.slots
        )
        beat = asyncio.ensure_future(self._heartbeats(interval))
        try:
            await self._stopped.wait()
        finally:
            beat.cancel()
            await self.shutdown()

    async def shutdown(self) -> None:
        for running in list(self.tasks.values()):
            self._kill(running)
        for running in list(self.tasks.values()):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(running.exited.wait(), 5)
        await self.pool.close()
        if self.conn is not None:
            await self.conn.close(reason="worker shutting down")

    def stop(self) -> None:
        self._stopped.set()

    async def _heartbeats(self, interval: float) -> None:
        while self.conn is not None and not self.conn.closed:
            tasks = [[r.job_id, r.task, r.attempt, r.proc.pid] for r in self.tasks.values()]
            with contextlib.suppress(ConnectionError):
                await self.conn.notify("heartbeat", {"worker_id": self.worker_id, "tasks": tasks})
            await asyncio.sleep(interval)

    # --------------------------------------------------------------- messages
    def _dispatcher(self) -> Dispatcher:
        return Dispatcher(
            "worker",
            {
                k.PrepareJob: self._on_prepare_job,
                k.DeployTask: self._on_deploy_task,
                k.KillTask: self._on_kill,
                k.CancelTask: self._on_kill,
            },
        )

    async def _on_prepare_job(self, conn: RpcConnection, msg: Message, b: k.PrepareJob) -> None:
        await self.pool.preload(b.job_ref.partition(":")[0])

    async def _on_deploy_task(self, conn: RpcConnection, msg: Message, b: k.DeployTask) -> None:
        pid, log_file = await self._deploy(msg.body)
        await conn.reply(msg, "deployed", {"pid": pid, "log_file": log_file})

    async def _on_kill(
        self, conn: RpcConnection, msg: Message, b: k.KillTask | k.CancelTask
    ) -> None:
        killed = await self._kill_matching(b.job_id, b.task, b.attempt)
        if msg.wants_reply:
            await conn.reply(msg, "ok")
        log.info("%s %s/%s: killed %d process(es)", msg.kind, b.job_id, b.task, killed)

    async def _deploy(self, body: dict[str, Any]) -> tuple[int, str]:
        """Start the task process; returns its pid and its log file."""
        deployment = dict(body)
        config = dict(body["config"])
        config.update(
            coordinator=self.coordinator,
            bind_host=self.bind_host,
            advertise_host=self.advertise_host,
            log_file=str(
                task_log_path(self.work_dir, body["job_id"], body["task"], body["attempt"])
            ),
            state_dir=str(self.work_dir / "state"),
        )
        deployment["config"] = config
        deployment["keys"] = task_keys(self.secret, body["job_id"], body["task"], body["attempt"])
        proc = await self.pool.deploy(deployment)
        running = RunningTask(
            body["job_id"], body["task"], body["attempt"], proc, time.time(), asyncio.Event()
        )
        self.tasks[(running.job_id, running.task, running.attempt)] = running
        watcher = asyncio.ensure_future(self._watch(running))
        self._background.add(watcher)
        watcher.add_done_callback(self._background.discard)
        return proc.pid, str(config["log_file"])

    async def _watch(self, running: RunningTask) -> None:
        code = await running.proc.wait()
        running.exited.set()
        self.tasks.pop((running.job_id, running.task, running.attempt), None)
        body: dict[str, Any] = {
            "job_id": running.job_id,
            "task": running.task,
            "attempt": running.attempt,
            "exit_code": code,
        }
        if code < 0:
            body["signal"] = -code
        log.info(
            "task %s/%s@%d exited with %d", running.job_id, running.task, running.attempt, code
        )
        if self.conn is not None and not self.conn.closed:
            with contextlib.suppress(ConnectionError):
                await self.conn.notify("task_exited", body)

    async def _kill_matching(self, job_id: str, task: str, attempt: int | None) -> int:
        victims = [
            r
            for r in list(self.tasks.values())
            if r.job_id == job_id and r.task == task and (attempt is None or r.attempt == attempt)
        ]
        for running in victims:
            self._kill(running)
        for running in victims:
            await running.exited.wait()
        return len(victims)

    @staticmethod
    def _kill(running: RunningTask) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(running.proc.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="streamer worker")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run_worker(args)


def add_arguments(parser: Any) -> None:
    parser.add_argument("--coordinator", required=True, help="HOST:PORT of the coordinator")
    parser.add_argument("--slots", type=int, default=8, help="task slots (default 8)")
    parser.add_argument("--bind", default="127.0.0.1", help="data-plane bind address")
    parser.add_argument("--advertise", help="address peers use to reach this worker's tasks")
    parser.add_argument("--id", dest="worker_id", help="worker id (default: generated)")
    parser.add_argument("--work-dir", help="where task logs and state go")
    parser.add_argument("--warm", type=int, default=2, help="idle task processes kept ready")


def run_worker(args: Any) -> int:
    from streamer.api.loader import drop_working_directory_from_path

    drop_working_directory_from_path()  # its task processes start with `python -P`
    worker = Worker(
        args.coordinator,
        slots=args.slots,
        bind_host=args.bind,
        advertise_host=args.advertise,
        worker_id=args.worker_id,
        work_dir=args.work_dir,
        warm_processes=args.warm,
    )

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()

    asyncio.run(go())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
