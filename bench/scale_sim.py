"""The simulated side of the coordinator scale model (``bench/scale_model.py``).

``SimCluster`` stands in for every worker and task on the far end of the real
coordinator's RPC connections: ``SimulatedWorker`` answers ``deploy_task`` and
``cancel_task`` after the simulated latencies, each deployed ``SimTask`` says
``task_hello`` on its ``TaskConnection`` and reports RUNNING, and ``SimJobMaster``
is the real `JobMaster` with a hook when a failover record turns ``done``. See
the scale model's docstring for what is simulated and what is real.

Threading: one asyncio loop (the coordinator's).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from streamer.coordinator.coordinator import Coordinator
from streamer.coordinator.failover import FailoverRecord
from streamer.coordinator.jobmaster import JobMaster
from streamer.rpc import (
    DEFAULT_REQUEST_TIMEOUT,
    ERROR_KIND,
    Message,
    RpcConnection,
    RpcConnectionLost,
    RpcDecoder,
    RpcRemoteError,
    RpcTimeout,
    encode,
)


@dataclass(frozen=True)
class Latencies:
    """Simulated latencies of the process side, in seconds."""

    deploy: float = 0.002  # deploy_task -> deployed (warm pool)
    cancel: float = 0.005  # cancel_task / kill_task -> ok (SIGKILL + reap)
    update: float = 0.001  # update_partition_info -> ack (connect + PartitionRequest)
    startup: float = 0.0  # deployed -> task_hello (the process connects)
    running: float = 0.0  # task_plan -> task_state RUNNING (opens inputs, restores)
    deploy_jitter: float = 0.0  # plus uniform [0, deploy_jitter) per deploy (seeded)
    worker_concurrency: int = 0  # deploys/cancels a worker serves at once (0: unlimited)


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


@dataclass
class SimCluster:
    """The simulated side of every connection, and what the coordinator sent through them."""

    coordinator: Coordinator
    latencies: Latencies
    codec: bool = True
    sent: list[tuple[str, str]] = field(default_factory=list)  # (kind, peer) per message
    bytes_sent: int = 0
    sim_seconds: float = 0.0  # time in the simulation's own code (not the coordinator's)
    errors: list[str] = field(default_factory=list)
    max_plan_wait: float = 0.0  # longest task_hello -> task_plan wait (the task's hello_timeout)
    tasks: dict[str, SimTask] = field(default_factory=dict)  # task -> its live attempt
    workers: dict[str, SimulatedWorker] = field(default_factory=dict)
    on_running: Callable[[str, int], None] | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(6))
    _background: set[asyncio.Future[Any]] = field(default_factory=set)
    _next_pid: int = 10_000

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    def record_sent(self, peer: str, message: Message) -> None:
        """A message the coordinator sends: counted and, with the codec, encoded (its cost)."""
        self.sent.append((message.kind, peer))
        if self.codec:
            self.bytes_sent += len(encode(message))

    def new_pid(self) -> int:
        self._next_pid += 1
        return self._next_pid

    def deliver(
        self, conn: FakeConnection, kind: str, body: dict[str, Any], *, request: bool = False
    ) -> asyncio.Future[Message] | asyncio.Task[None]:
        """Send ``kind`` from the simulated peer of ``conn`` to the coordinator.

        For a request: a future of the coordinator's reply; else the handler task.
        """
        started = time.perf_counter()
        conn.peer_last_id += 1
        message = Message(kind, conn.peer_last_id, body, wants_reply=request)
        frame = encode(message) if self.codec else b""
        self.sim_seconds += time.perf_counter() - started
        if self.codec:  # the coordinator's side of the wire: decode (its cost)
            (message,) = conn.decoder.feed(frame)
        reply: asyncio.Future[Message] | None = None
        if request:
            reply = asyncio.get_running_loop().create_future()
            conn.awaiting[message.msg_id] = reply
        handler = self.spawn(self._handle(conn, message))
        return reply if reply is not None else handler

    async def _handle(self, conn: FakeConnection, message: Message) -> None:
        """As the transport's handler task: dispatch, and answer a request that failed."""
        try:
            await self.coordinator.on_message(cast(RpcConnection, conn), message)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on, as an error reply
            text = f"{type(exc).__name__}: {exc}"
            self.errors.append(f"handling {message.kind}: {text}")
            if message.msg_id in conn.awaiting:
                await conn.reply_error(message, text)

    def kill(self, task: str) -> SimTask:
        """SIGKILL the live attempt of ``task``: its process and control connection are gone."""
        sim = self.tasks[task]
        sim.die()
        return sim


class FakeConnection:
    """The coordinator's end of one control connection (duck-types `RpcConnection`)."""

    def __init__(self, cluster: SimCluster, name: str) -> None:
        self.cluster = cluster
        self.name = self.peer = name
        self.identity: dict[str, Any] = {"role": "client"}  # what its handshake proved
        self.close_reason: str | None = None
        self.decoder = RpcDecoder()
        self.awaiting: dict[int, asyncio.Future[Message]] = {}  # peer's requests, by id
        self.peer_last_id = 0
        self._last_id = 0
        self._closed = False
        self._pending: set[asyncio.Future[Message]] = set()
        self._close_callbacks: list[Callable[[Any], None]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending_requests(self) -> int:
        return len(self._pending)

    def on_close(self, callback: Callable[[Any], None]) -> None:
        if self._closed:
            asyncio.get_running_loop().call_soon(callback, self)
        else:
            self._close_callbacks.append(callback)

    async def close(self, reason: str = "closed locally") -> None:
        self.shutdown(reason)

    def shutdown(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason
        for future in self._pending:
            if not future.done():
                future.set_exception(RpcConnectionLost(f"{self.name} closed: {reason}"))
        for reply in self.awaiting.values():
            reply.cancel()
        self.awaiting.clear()
        for callback in self._close_callbacks:
            callback(self)

    def _lost(self, kind: str) -> RpcConnectionLost:
        return RpcConnectionLost(f"rpc connection to {self.name} is closed: cannot send {kind}")

    async def request(
        self,
        kind: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = DEFAULT_REQUEST_TIMEOUT,
    ) -> Message:
        if self._closed:
            raise self._lost(kind)
        self._last_id += 1
        message = Message(kind, self._last_id, dict(body or {}), wants_reply=True)
        self.cluster.record_sent(self.name, message)
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pending.add(future)
        self.cluster.spawn(self._answer(message, future))
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise RpcTimeout(f"no reply from {self.name} to {kind} within {timeout} s") from None
        finally:
            self._pending.discard(future)
        if reply.kind == ERROR_KIND:
            raise RpcRemoteError(str(reply.body["message"]), peer=self.name, kind=kind)
        return reply

    async def _answer(self, message: Message, future: asyncio.Future[Message]) -> None:
        kind, body = await self.serve(message.kind, message.body)
        started = time.perf_counter()
        if not future.done():
            self.peer_last_id += 1
            future.set_result(Message(kind, self.peer_last_id, body, reply_to=message.msg_id))
        self.cluster.sim_seconds += time.perf_counter() - started

    async def serve(self, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The simulated peer's answer to a request of the coordinator."""
        return ERROR_KIND, {"message": f"{self.name} does not handle {kind}"}

    async def notify(self, kind: str, body: Mapping[str, Any] | None = None) -> None:
        if self._closed:
            raise self._lost(kind)
        self._last_id += 1
        self.cluster.record_sent(self.name, Message(kind, self._last_id, dict(body or {})))

    async def reply(self, to: Message, kind: str, body: Mapping[str, Any] | None = None) -> None:
        if self._closed:
            raise self._lost(kind)
        waiter = self.awaiting.pop(to.msg_id, None)
        if waiter is None:
            raise ValueError(f"{to.kind} #{to.msg_id} from {self.name} is not awaiting a reply")
        self._last_id += 1
        message = Message(kind, self._last_id, dict(body or {}), reply_to=to.msg_id)
        self.cluster.record_sent(self.name, message)
        if not waiter.done():
            waiter.set_result(message)

    async def reply_error(self, to: Message, message: str) -> None:
        await self.reply(to, ERROR_KIND, {"message": message})


class SimulatedWorker(FakeConnection):
    """A worker (TaskExecutor): deploys and cancels simulated task processes."""

    def __init__(self, cluster: SimCluster, worker_id: str, slots: int) -> None:
        super().__init__(cluster, worker_id)
        self.identity = {"role": "worker", "id": worker_id}
        self.worker_id = worker_id
        self.slots = slots
        limit = cluster.latencies.worker_concurrency
        self._gate = asyncio.Semaphore(limit) if limit > 0 else None

    async def register(self) -> None:
        body = {"worker_id": self.worker_id, "host": "sim", "pid": 1, "slots": self.slots}
        await self.cluster.deliver(self, "register_worker", body, request=True)

    async def serve(self, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        async with self._gate if self._gate is not None else contextlib.nullcontext():
            if kind == "deploy_task":
                lat = self.cluster.latencies
                await _sleep(lat.deploy + lat.deploy_jitter * self.cluster.rng.random())
                return "deployed", {"pid": self._start(body)}
            if kind in ("cancel_task", "kill_task"):
                await _sleep(self.cluster.latencies.cancel)
                self._kill(body["task"], body.get("attempt"))
                return "ok", {}
        return await super().serve(kind, body)

    def _start(self, body: dict[str, Any]) -> int:
        started = time.perf_counter()
        pid = self.cluster.new_pid()
        sim = SimTask(self.cluster, self, body["job_id"], body["task"], body["attempt"], pid)
        self.cluster.tasks[sim.task] = sim
        sim.runner = self.cluster.spawn(sim.run())
        self.cluster.sim_seconds += time.perf_counter() - started
        return pid

    def _kill(self, task: str, attempt: int | None) -> None:
        sim = self.cluster.tasks.get(task)
        if sim is not None and sim.alive and (attempt is None or sim.attempt == attempt):
            sim.die()
            self.report_exit(sim)

    def report_exit(self, sim: SimTask) -> asyncio.Future[Message] | asyncio.Task[None]:
        """What the worker's process watcher sends when a task process ends (SIGKILL)."""
        body = {
            "job_id": sim.job_id,
            "task": sim.task,
            "attempt": sim.attempt,
            "exit_code": -9,
            "signal": 9,
        }
        return self.cluster.deliver(self, "task_exited", body)


class TaskConnection(FakeConnection):
    """The coordinator's end of one task process's control connection."""

    def __init__(self, cluster: SimCluster, sim: SimTask) -> None:
        super().__init__(cluster, f"{sim.task}@{sim.attempt}")
        self.identity = {"role": "task", "job_id": sim.job_id, "task": sim.task}
        self.identity["attempt"] = sim.attempt
        self.sim = sim

    async def serve(self, kind: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        if kind == "update_partition_info":
            await _sleep(self.cluster.latencies.update)
            return "ack", {}
        if kind == "cancel_task":
            return "ok", {}
        return await super().serve(kind, body)


class SimTask:
    """One simulated task process: hello, plan, RUNNING; dies when killed."""

    def __init__(
        self,
        cluster: SimCluster,
        worker: SimulatedWorker,
        job_id: str,
        task: str,
        attempt: int,
        pid: int,
    ) -> None:
        self.cluster = cluster
        self.worker = worker
        self.job_id = job_id
        self.task = task
        self.attempt = attempt
        self.pid = pid
        self.alive = True
        self.conn = TaskConnection(cluster, self)
        self.runner: asyncio.Task[Any] | None = None
        self.plan: dict[str, Any] | None = None

    async def run(self) -> None:
        await _sleep(self.cluster.latencies.startup)
        hello = {
            "job_id": self.job_id,
            "task": self.task,
            "attempt": self.attempt,
            "data_address": f"sim-{self.pid}:7000",
            "pid": self.pid,
        }
        reply = self.cluster.deliver(self.conn, "task_hello", hello, request=True)
        asked = time.perf_counter()
        plan = await cast("asyncio.Future[Message]", reply)
        waited = time.perf_counter() - asked
        self.cluster.max_plan_wait = max(self.cluster.max_plan_wait, waited)
        if plan.kind != "task_plan":
            self.cluster.errors.append(f"{self.task}@{self.attempt} got {plan.kind}: {plan.body}")
            return
        self.plan = plan.body
        await _sleep(self.cluster.latencies.running)
        state = {"job_id": self.job_id, "task": self.task, "attempt": self.attempt}
        await self.cluster.deliver(self.conn, "task_state", {**state, "state": "RUNNING"})
        if self.cluster.on_running is not None:
            self.cluster.on_running(self.task, self.attempt)

    def die(self) -> None:
        self.alive = False
        if self.runner is not None and not self.runner.done():
            self.runner.cancel()
        self.conn.shutdown("task process killed")


class SimJobMaster(JobMaster):
    """The real `JobMaster`, with a hook when a failover record turns ``done``.

    Production has no such event (callers poll ``status()``); the hook only
    observes the failover log's end of a record.
    """

    failover_done: Callable[[FailoverRecord], None] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failovers.on_end.append(self._observe)

    def _observe(self, rec: FailoverRecord) -> None:
        if rec.status == "done" and self.failover_done is not None:
            self.failover_done(rec)
