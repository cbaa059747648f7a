"""``CheckpointCoordinator``: triggers, completes and restores aligned checkpoints for one job.

Every ``checkpoint_interval`` seconds (when every task runs and no failover is
in progress) it triggers checkpoint ``n`` at the sources. Tasks snapshot their
part into ``<root>/pending-<n>/<task>/`` (see ``runtime.checkpointing``) and ack;
when every task acked, the storage completes the checkpoint atomically and the
tasks are told ``checkpoint_complete`` (sinks commit their transactions then and
report ``checkpoint_committed``). A checkpoint that times out or loses a task is
aborted and counted.

Manifests are signed with a key derived from the cluster secret (see
``streamer.state.manifest``): a checkpoint or savepoint this cluster did not
write, or that was modified, is never restored from; nor is one signed for another
directory, nor (recovery) another job's checkpoint, which retention leaves alone too.
A task's part is always ``tasks/<task>`` of the checkpoint, whatever directory its
ack names.

Restore plans (``restore_plan``) come from the latest valid completed checkpoint
(or a savepoint): keyed state from every old subtask whose key groups overlap
the new subtask's (this is how a savepoint restores at another parallelism),
source positions merged per source vertex, and for an exactly-once sink not known
to have committed that checkpoint, its uncommitted records per epoch: the new
attempt writes again those after its commit marker (see ``runtime.outputs``), so a
commit whose report never arrived is not written twice.

Threading: the coordinator's loop; not thread-safe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from streamer.coordinator.restore_plan import restore_plan
from streamer.errors import ConfigError, StreamerError
from streamer.graph import ExecutionGraph, JobGraph, TaskId
from streamer.graph.exchanges import starts_checkpoints
from streamer.rpc import kinds as k
from streamer.state import (
    CheckpointStorage,
    CompletedCheckpoint,
    CorruptCheckpointError,
    StateError,
)
from streamer.state.manifest import TASKS_DIR, check_binding, read_manifest, task_dir_name
from streamer.state.roots import StateRoots

log = logging.getLogger(__name__)


class CheckpointView(Protocol):
    """What the checkpoint coordinator may see and do of its job (the ``JobMaster``)."""

    def can_checkpoint(self) -> bool:
        """Every unfinished task runs and no failover is in progress."""
        ...

    def running_tasks(self) -> set[TaskId]: ...

    def attempt_of(self, task: TaskId) -> int: ...

    def send(self, task: TaskId, kind: str, body: dict[str, Any]) -> None:
        """Notify ``task``'s current attempt, if it is connected (never blocks)."""
        ...


@dataclass
class _Pending:
    checkpoint_id: int
    started: float
    expected: set[TaskId]
    handle: Any
    acks: dict[TaskId, dict[str, Any]] = field(default_factory=dict)
    savepoint: Path | None = None
    done: asyncio.Future[Path] | None = None


class CheckpointCoordinator:
    def __init__(
        self,
        job: CheckpointView,
        eg: ExecutionGraph,
        job_graph: JobGraph,
        root: Path,
        *,
        interval: float | None,
        timeout: float = 60.0,
        retained: int = 3,
        key: bytes | None = None,
        job_id: str = "",
        roots: StateRoots | None = None,
    ) -> None:
        """``key`` signs and checks manifests (default: derived from the cluster secret);
        they are bound to ``job_id`` and to their directory under the state ``roots``
        (default: ``root``'s parent); see `CheckpointStorage`."""
        self.job = job
        self.eg = eg
        self.job_graph = job_graph
        self.root = root
        self.interval = interval
        self.timeout = timeout
        self.retained = retained
        self.storage = CheckpointStorage(root, key=key, job_id=job_id, roots=roots)
        # ids go on after any checkpoint already in the directory (another job's, when
        # checkpoint_dir names its directory): never one that exists
        self.next_id = max(self.storage.list(), default=0) + 1
        self.pending: _Pending | None = None
        self.completed = 0
        self.aborted = 0
        self.abort_reasons: list[str] = []
        self.history: list[dict[str, Any]] = []
        self.committed: dict[TaskId, int] = {}
        self.last_completed: int = 0
        self._last_trigger = time.monotonic()  # the first one comes one interval in
        self.restored_from: dict[str, Any] | None = None
        # aborted checkpoints whose directories a task may still be writing into: they
        # are deleted once a later checkpoint completes (every task then got past them)
        self._aborted: list[Any] = []

    # --------------------------------------------------------------- trigger
    async def run(self) -> None:
        if self.interval is None:
            return
        while True:
            await asyncio.sleep(min(self.interval, 0.1))
            if self.pending is not None:
                if time.monotonic() - self.pending.started > self.timeout:
                    self.abort(f"timed out after {self.timeout:g} s")
                continue
            due = time.monotonic() - self._last_trigger >= self.interval
            if due and self.job.can_checkpoint():
                await self.trigger()

    async def trigger(self, savepoint: Path | None = None) -> asyncio.Future[Path]:
        """Start checkpoint n; the returned future resolves to its completed path."""
        checkpoint_id = self.next_id
        self.next_id += 1
        self._last_trigger = time.monotonic()
        handle = self.storage.begin(checkpoint_id)
        done: asyncio.Future[Path] = asyncio.get_running_loop().create_future()
        expected = self.job.running_tasks()
        self.pending = _Pending(
            checkpoint_id, time.monotonic(), expected, handle, savepoint=savepoint, done=done
        )
        for task in expected:
            if starts_checkpoints(self.eg, task):  # sources, and kafka exchanges' consumers
                self.job.send(task, "trigger_checkpoint", {"checkpoint_id": checkpoint_id})
        return done

    # ------------------------------------------------------------------ acks
    def on_ack(self, ack: k.CheckpointAck) -> None:
        pending = self.pending
        task = TaskId.parse(ack.task)
        if pending is None or ack.checkpoint_id != pending.checkpoint_id:
            return
        if ack.attempt != self.job.attempt_of(task):
            return
        pending.acks[task] = ack.state
        if pending.expected <= set(pending.acks):
            self._complete(pending)

    def _complete(self, pending: _Pending) -> None:
        self.pending = None
        duration = time.monotonic() - pending.started
        tasks = {}
        for task, state in pending.acks.items():
            rel = f"{TASKS_DIR}/{task_dir_name(str(task))}"
            if Path(str(state.get("dir"))) != pending.handle.path / rel:
                self._abort(pending, f"{task} acked a snapshot outside {rel}: {state.get('dir')}")
                return
            tasks[str(task)] = {
                "dir": rel,
                "keyed": state.get("keyed"),
                "source": state.get("source"),
                "sink_records": state.get("sink_records"),
                "snapshot_seconds": state.get("snapshot_seconds"),
            }
        vertices = {
            v.vertex_id: {"parallelism": v.parallelism, "max_parallelism": v.max_parallelism}
            for v in self.job_graph.vertices
        }
        metadata = {
            "job_name": self.job_graph.job_name,
            "checkpoint_id": pending.checkpoint_id,
            "tasks": tasks,
            "vertices": vertices,
            "duration_seconds": round(duration, 4),
        }
        try:
            completed = self.storage.complete(pending.handle, metadata)
        except OSError as exc:
            self._abort(pending, f"could not store it: {exc}")
            return
        self.storage.retain(self.retained)
        self._delete_aborted(before=pending.checkpoint_id)
        self.completed += 1
        self.last_completed = max(self.last_completed, pending.checkpoint_id)
        size = _dir_size(completed.path)
        self._record(pending.checkpoint_id, "completed", duration, size=size)
        log.info(
            "checkpoint %d completed in %.3f s (%d bytes)", pending.checkpoint_id, duration, size
        )
        path = completed.path
        failed: StreamerError | None = None
        if pending.savepoint is not None:
            try:
                path = self.storage.savepoint(completed, pending.savepoint).path
            except (StateError, OSError) as exc:
                failed = StreamerError(f"could not write the savepoint: {exc}")
        for task in self.job.running_tasks():
            self.job.send(task, "checkpoint_complete", {"checkpoint_id": pending.checkpoint_id})
        if pending.done is not None and not pending.done.done():
            if failed is not None:
                pending.done.set_exception(failed)
                pending.done.exception()  # retrieved: its waiter may have timed out
            else:
                pending.done.set_result(path)

    def on_committed(self, committed: k.CheckpointCommitted) -> None:
        task = TaskId.parse(committed.task)
        self.committed[task] = max(self.committed.get(task, 0), committed.checkpoint_id)

    async def savepoint(
        self, directory: Path, then: Callable[[], Awaitable[None]] | None = None
    ) -> tuple[str, int]:
        """Take a savepoint into ``directory`` as soon as the job can checkpoint; with
        ``then`` (stop-with-savepoint), wait for the exactly-once sinks to commit it and
        call ``then``. Returns its path and checkpoint id. ``directory`` must not exist."""
        if directory.exists():
            raise ConfigError(f"savepoint directory {directory} already exists: choose a new one")
        deadline = time.monotonic() + self.timeout
        while not self.job.can_checkpoint() or self.pending is not None:
            if time.monotonic() > deadline:
                raise StreamerError("the job cannot take a savepoint now (not every task runs)")
            await asyncio.sleep(0.05)
        checkpoint_id = self.next_id
        done = await self.trigger(savepoint=directory)
        path = await asyncio.wait_for(done, self.timeout)
        if then is not None:
            await self.wait_for_commits(checkpoint_id, self._exactly_once_sinks())
            await then()
        return str(path), checkpoint_id

    def _exactly_once_sinks(self) -> list[TaskId]:
        out = []
        for t in self.eg.tasks:
            tail = self.eg.vertex_of(t).operators[-1]
            if tail.kind == "kafka_sink" and tail.config.get("delivery") == "exactly_once":
                out.append(t)
        return out

    async def wait_for_commits(
        self, checkpoint_id: int, sinks: list[TaskId], timeout: float = 30.0
    ) -> None:
        """Until every sink of ``sinks`` committed ``checkpoint_id`` (stop-with-savepoint)."""
        deadline = time.monotonic() + timeout
        while any(self.committed.get(t, 0) < checkpoint_id for t in sinks):
            if time.monotonic() > deadline:
                log.warning("sinks did not commit savepoint %d within %g s", checkpoint_id, timeout)
                return
            await asyncio.sleep(0.02)

    def on_declined(self, declined: k.CheckpointDeclined) -> None:
        """A task could not write its part (Flink's ``declineCheckpoint``): abort it."""
        pending = self.pending
        if pending is None or declined.checkpoint_id != pending.checkpoint_id:
            return
        task = TaskId.parse(declined.task)
        if declined.attempt == self.job.attempt_of(task):
            self._abort(pending, f"declined by {task}: {declined.reason}")

    def abort(self, reason: str) -> None:
        if self.pending is not None:
            self._abort(self.pending, reason)

    def _delete_aborted(self, before: int) -> None:
        """Delete aborted checkpoints older than the completed ``before``: every task has
        processed barrier ``before``, so none still writes into them."""
        keep = []
        for handle in self._aborted:
            if handle.checkpoint_id < before:
                self.storage.abort(handle)
            else:
                keep.append(handle)
        self._aborted = keep

    def _abort(self, pending: _Pending, reason: str) -> None:
        self.pending = None
        self.aborted += 1
        self.abort_reasons = [*self.abort_reasons[-9:], f"{pending.checkpoint_id}: {reason}"]
        # not deleted now: other tasks may still be writing their parts into it
        self._aborted.append(pending.handle)
        self._record(
            pending.checkpoint_id, "aborted", time.monotonic() - pending.started, reason=reason
        )
        log.warning("checkpoint %d aborted: %s", pending.checkpoint_id, reason)
        for task in self.job.running_tasks():
            self.job.send(task, "checkpoint_abort", {"checkpoint_id": pending.checkpoint_id})
        if pending.done is not None and not pending.done.done():
            pending.done.set_exception(RuntimeError(f"checkpoint aborted: {reason}"))
            pending.done.exception()  # retrieved: a periodic checkpoint has no waiter

    def _record(self, checkpoint_id: int, outcome: str, duration: float, **extra: Any) -> None:
        entry = {
            "id": checkpoint_id,
            "outcome": outcome,
            "seconds": round(duration, 4),
            "at": round(time.time(), 3),  # when it ended
            **extra,
        }
        self.history = [*self.history[-19:], entry]

    # --------------------------------------------------------------- restore
    def check_savepoint(self, path: Path) -> None:
        """`ConfigError` unless ``path`` holds a manifest this cluster signed for ``path``
        (reads the manifest only: cheap enough for a submission; `load_savepoint` checks
        the files)."""
        try:
            manifest = read_manifest(path, self.storage.key)
        except CorruptCheckpointError as exc:
            raise ConfigError(
                f"cannot restore from savepoint {path}: {exc.reason}; "
                "use a savepoint this cluster wrote"
            ) from None
        try:
            check_binding(path, manifest, self.storage.where(path))
        except CorruptCheckpointError as exc:
            raise ConfigError(f"cannot restore from savepoint {path}: {exc.reason}") from None

    def load_savepoint(self, path: Path) -> CompletedCheckpoint:
        """The validated savepoint (or checkpoint) at ``path``, signed for ``path`` by any
        job (`StateError` if unusable)."""
        return self.storage.load(path, key=self.storage.key, roots=self.storage.roots)

    def latest(self) -> tuple[Any, list[str]]:
        """The latest valid completed checkpoint, and why newer ones were skipped."""
        choice = self.storage.latest()
        reasons = [f"checkpoint {s.checkpoint_id}: {s.reason}" for s in choice.skipped]
        if choice.skipped:
            log.warning("%s", choice.describe())
        return choice.checkpoint, reasons

    def restore_plans(self, tasks: set[TaskId], source: Any = None) -> dict[TaskId, dict[str, Any]]:
        """Restore instructions for ``tasks`` from ``source`` (a completed checkpoint or
        savepoint), or from the latest valid checkpoint; empty dicts when there is none."""
        skipped: list[str] = []
        if source is None:
            source, skipped = self.latest()
        if source is None:
            return {t: {} for t in tasks}
        meta = source.metadata
        self.restored_from = {
            "checkpoint_id": meta["checkpoint_id"],
            "path": str(source.path),
            "skipped": skipped,
            "at": time.time(),
        }
        if source.kind != "savepoint":
            self.next_id = max(self.next_id, int(meta["checkpoint_id"]) + 1)
        return {t: restore_plan(t, source, self.eg, self.committed) for t in tasks}

    def status(self) -> dict[str, Any]:
        return {
            "interval": self.interval,
            "completed": self.completed,
            "aborted": self.aborted,
            "in_progress": None if self.pending is None else self.pending.checkpoint_id,
            "abort_reasons": self.abort_reasons,
            "restored_from": self.restored_from,
            "history": self.history,
            "root": str(self.root),
        }


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def open_checkpoints(
    job: CheckpointView,
    eg: ExecutionGraph,
    job_graph: JobGraph,
    job_id: str,
    config: dict[str, Any],
) -> tuple[StateRoots, CheckpointCoordinator]:
    """The job's state roots and its `CheckpointCoordinator`, from its settings.

    ``config``'s ``checkpoint_dir`` (default: the job id) and ``from_savepoint``
    are resolved under the coordinator's state roots (`StateRoots.from_env`) and
    rewritten as absolute paths; a savepoint must be signed by this cluster for its
    path, and checkpoints are bound to ``job_id``. Raises
    `ConfigError` for a path outside the roots or a savepoint it cannot trust.
    """
    roots = StateRoots.from_env()
    root = roots.resolve(config.get("checkpoint_dir") or job_id, "checkpoint_dir")
    config["checkpoint_dir"] = str(root)
    interval = config.get("checkpoint_interval")
    checkpoints = CheckpointCoordinator(
        job,
        eg,
        job_graph,
        root,
        interval=None if interval is None else float(interval),
        timeout=float(config.get("checkpoint_timeout", 60.0)),
        retained=int(config.get("checkpoints_retained", 3)),
        job_id=job_id,
        roots=roots,
    )
    if config.get("from_savepoint"):
        savepoint = roots.resolve(config["from_savepoint"], "from_savepoint")
        checkpoints.check_savepoint(savepoint)  # signed by this cluster
        config["from_savepoint"] = str(savepoint)
    return roots, checkpoints
