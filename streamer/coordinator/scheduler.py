"""``Scheduler``: deploys task attempts on worker slots and answers their hellos.

Deployment: ``deploy(task)`` takes a slot from the ``SlotPool`` (waiting up to
``slot_request_timeout`` for one), sends ``deploy_task`` to that worker and
returns what happened as a ``DeployOutcome`` value; the ``JobMaster`` acts on it
(a failed deploy is a task failure, no slot fails the job).

Hellos: a deployed process says ``task_hello`` with its data address and gets
back its ``task_plan`` (the address and attempt of the producer behind every
input channel, and what to restore) once all its producers said hello. Restore
plans come from the checkpoint coordinator through ``set_restore``; a source
task without one resumes at the positions it last reported.

Threading: the coordinator's loop only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.slots import SlotPool
from streamer.graph import TaskId
from streamer.rpc import Message, RpcConnection, RpcError, TaskState
from streamer.rpc import kinds as k

log = logging.getLogger(__name__)


class Deployed(StrEnum):
    OK = "ok"
    STALE = "stale"  # the job stopped or a newer attempt replaced this one meanwhile
    NO_SLOT = "no_slot"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployOutcome:
    result: Deployed
    reason: str = ""
    log_file: str | None = None  # OK: where the attempt's log is, on its worker's host


class Scheduler:
    """See the module docstring."""

    def __init__(
        self,
        job_id: str,
        job_ref: str,
        graph_dict: dict[str, Any],
        store: ExecutionStore,
        slots: SlotPool,
        task_config: dict[str, Any],
        *,
        slot_request_timeout: float,
        job_running: Callable[[], bool],
        spawn: Callable[[Any], None],
    ) -> None:
        self.job_id = job_id
        self.job_ref = job_ref
        self.graph_dict = graph_dict  # immutable; sent with every deploy
        self.store = store
        self.slots = slots
        self.task_config = task_config
        self.slot_request_timeout = slot_request_timeout
        self.job_running = job_running
        self._pending_hellos: dict[TaskId, tuple[RpcConnection, Message]] = {}
        self._restore_plans: dict[TaskId, dict[str, Any]] = {}
        self._restore_held: set[TaskId] = set()  # their plans wait for `set_restore`
        self._restore_hints: dict[TaskId, dict[str, Any]] = {}  # held tasks' state, early
        self._spawn = spawn  # the job's: runs a reply in the background

    def slot_key(self, task: TaskId) -> tuple[str, TaskId]:
        return (self.job_id, task)

    # ------------------------------------------------------------- deployment
    async def deploy(self, task: TaskId, prefer: str | None = None) -> DeployOutcome:
        """Deploy ``task``'s current attempt (on ``prefer`` when it has a free slot)."""
        if not self.job_running():
            return DeployOutcome(Deployed.STALE)
        attempt = self.store[task].attempt
        worker = self.slots.pick(prefer)
        if worker is None:
            timeout = self.slot_request_timeout
            log.warning(
                "job %s: no free slot for %s; waiting up to %g s", self.job_id, task, timeout
            )
            worker = await self.slots.wait_for_slot(prefer, timeout, self.job_running)
        if not self.job_running() or self.store.current(task, attempt) is None:
            return DeployOutcome(Deployed.STALE)
        if worker is None:
            return DeployOutcome(
                Deployed.NO_SLOT,
                f"no free slot for {task} within slot_request_timeout="
                f"{self.slot_request_timeout:g} s ({len(self.slots.workers)} worker(s), "
                f"{self.slots.free} free slot(s)); start more workers or lower the parallelism",
            )
        self.store.deploying(task, worker.worker_id)
        self.slots.allocate(self.slot_key(task), worker)
        body: dict[str, Any] = {
            "job_id": self.job_id,
            "job_ref": self.job_ref,
            "job_graph": self.graph_dict,
            "task": str(task),
            "attempt": attempt,
            "config": self.task_config,
        }
        hint = self._restore_plans.get(task) or self._restore_hints.get(task)
        if hint:
            body["restore_hint"] = {key: hint[key] for key in k.STATE_PLAN_KEYS if key in hint}
        try:
            reply = await worker.conn.request("deploy_task", body, timeout=30.0)
        except (RpcError, ConnectionError) as exc:
            self.slots.release(self.slot_key(task))
            log.warning("deploying %s@%d on %s failed: %s", task, attempt, worker.worker_id, exc)
            return DeployOutcome(Deployed.FAILED, f"deploy failed: {exc}")
        if self.store.current(task, attempt) is None:
            return DeployOutcome(Deployed.STALE)
        self.store.set_pid(task, int(reply.body["pid"]))
        return DeployOutcome(Deployed.OK, log_file=reply.body.get("log_file"))

    async def cancel_for_restart(self, tasks: frozenset[TaskId]) -> None:
        """Cancel the current attempts of ``tasks`` and start their next attempts
        (CREATED, slot freed): the caller then deploys them."""
        cancels = []
        for task in tasks:
            te = self.store[task]
            worker = self.slots.get(te.worker_id)
            if worker is not None and te.state not in (TaskState.FINISHED, TaskState.CANCELED):
                body = {"job_id": self.job_id, "task": str(task), "attempt": te.attempt}
                cancels.append(worker.conn.request("cancel_task", body, timeout=30.0))
            self.slots.release(self.slot_key(task))
            self.forget(task)
            self.store.transition(task, TaskState.CANCELING)
            self.store.new_attempt(task)
        for result in await asyncio.gather(*cancels, return_exceptions=True):
            if isinstance(result, Exception):
                log.warning("job %s: cancel during restart failed: %s", self.job_id, result)

    async def kill_attempt(self, task: TaskId, attempt: int, worker_id: str | None) -> None:
        """Make sure a process of ``task``@``attempt`` that was declared failed is dead
        (a task that reported an exception, or went silent, may still run); the worker
        SIGKILLs it if it is still there."""
        worker = self.slots.get(worker_id)
        if worker is None:
            return  # its worker is gone, and a worker's tasks die with it
        body = {"job_id": self.job_id, "task": str(task), "attempt": attempt}
        try:
            await worker.conn.request("kill_task", body, timeout=30.0)
        except Exception as exc:  # noqa: BLE001 - the worker's loss is handled elsewhere
            log.warning("job %s: could not kill %s@%d: %s", self.job_id, task, attempt, exc)

    async def cancel_all(self) -> None:
        """The job ends: cancel every attempt that has not ended, and free its slot."""
        cancels = []
        for task, te in self.store.items():
            if te.state in (TaskState.FINISHED, TaskState.CANCELED):
                continue
            worker = self.slots.get(te.worker_id)
            if worker is not None:
                body = {"job_id": self.job_id, "task": str(task), "attempt": te.attempt}
                cancels.append(worker.conn.request("cancel_task", body, timeout=30.0))
            self.slots.release(self.slot_key(task))
            if not te.state.is_final:
                self.store.transition(task, TaskState.CANCELED)
        await asyncio.gather(*cancels, return_exceptions=True)

    # ----------------------------------------------------------------- hellos
    def on_hello(self, conn: RpcConnection, msg: Message, hello: k.TaskHello) -> None:
        task = TaskId.parse(hello.task)
        te = self.store.current(task, hello.attempt)
        if te is None or te.state.is_final or te.state == TaskState.CANCELING:
            self._spawn(conn.reply_error(msg, f"{k.STALE_ATTEMPT} {task}@{hello.attempt}"))
            return
        ready = self.store.said_hello(task, conn, hello.pid, hello.data_address or None)
        self._pending_hellos[task] = (conn, msg)
        self._answer_hello(task)
        for waiter in ready:
            self._answer_hello(waiter)

    def _answer_hello(self, task: TaskId) -> None:
        """Send ``task`` its plan if every producer's address is known; else it waits
        in the directory, and a producer's hello answers it."""
        entry = self._pending_hellos.get(task)
        if entry is None or task in self._restore_held:
            return
        inputs = self.store.directory.inputs(task)
        if inputs is None:
            return
        del self._pending_hellos[task]
        body: dict[str, Any] = {"inputs": inputs}
        restore = self._restore_for(task)
        if restore:
            body["restore"] = restore
        conn, msg = entry
        self._spawn(conn.reply(msg, "task_plan", body))

    def forget(self, task: TaskId) -> None:
        """``task``'s attempt failed or is being replaced: it waits for no plan."""
        self._pending_hellos.pop(task, None)
        self._restore_held.discard(task)
        self._restore_hints.pop(task, None)
        self.store.directory.forget(task)

    # ---------------------------------------------------------------- restore
    def hold_restore(self, task: TaskId, hint: dict[str, Any] | None = None) -> None:
        """``task``'s restore plan is still being made (lossless recovery collects its
        determinants while the new attempt starts): its hello waits for `set_restore`.
        ``hint``: the plan so far; its keyed state goes out with the deployment."""
        self._restore_held.add(task)
        if hint:
            self._restore_hints[task] = dict(hint)

    def set_restore(self, plans: dict[TaskId, dict[str, Any]]) -> None:
        """What the next attempts of these tasks restore (from a checkpoint or savepoint);
        a hello held for one of them is answered now."""
        self._restore_plans.update(plans)
        for task in plans:
            self._restore_hints.pop(task, None)
            if task in self._restore_held:
                self._restore_held.discard(task)
                self._answer_hello(task)

    def _restore_for(self, task: TaskId) -> dict[str, Any]:
        plan = self._restore_plans.pop(task, None)
        if plan:
            return plan
        snapshot = self.store[task].metrics.get("source", {}).get("snapshot")
        return {"source": snapshot} if snapshot and snapshot.get("positions") else {}
