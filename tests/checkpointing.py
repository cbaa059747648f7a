"""A `CheckpointCoordinator` against a view of a job, on real checkpoint storage (no
sockets): what the checkpoint coordinator's unit tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamer.api import Job, StreamEnvironment
from streamer.coordinator.checkpoints import CheckpointCoordinator, open_checkpoints
from streamer.graph import TaskId
from streamer.rpc import kinds as k
from streamer.state.snapshot_writer import PendingCheckpoint
from tests.graphs import ident


class View:
    """Every task running at attempt 0; records what would be sent."""

    def __init__(self, tasks: list[TaskId]) -> None:
        self.tasks = tasks
        self.sent: list[tuple[str, str, dict[str, Any]]] = []

    def can_checkpoint(self) -> bool:
        return True

    def running_tasks(self) -> set[TaskId]:
        return set(self.tasks)

    def attempt_of(self, task: TaskId) -> int:
        return 0

    def send(self, task: TaskId, kind: str, body: dict[str, Any]) -> None:
        self.sent.append((str(task), kind, body))


def _job() -> tuple[Job, View]:
    """src(2) -hash-> p(2) -> kafka sink, and a view of it with every task running."""
    env = StreamEnvironment("cc", default_parallelism=2)
    env.from_kafka("in", name="src").key_by(ident).process(ident, name="p").to_kafka("out")
    job = env.build()
    return job, View(list(job.execution_graph().tasks))


def coordinator(
    root: Path, key: bytes | None = None, **options: Any
) -> tuple[CheckpointCoordinator, View]:
    """A coordinator of `_job` checkpointing into ``root`` (manifests signed with ``key``;
    default: the cluster secret's; ``options``: the other keyword arguments), and its view."""
    job, view = _job()
    eg = job.execution_graph()
    cc = CheckpointCoordinator(view, eg, job.job_graph, root, interval=None, key=key, **options)
    return cc, view


def opened(job_id: str, config: dict[str, Any]) -> tuple[CheckpointCoordinator, View]:
    """The coordinator the job master of job ``job_id`` opens (`open_checkpoints`: paths
    under the state roots of the environment, manifests signed with the cluster secret's
    key), and its view."""
    job, view = _job()
    _roots, cc = open_checkpoints(view, job.execution_graph(), job.job_graph, job_id, config)
    return cc, view


def ack(cc: CheckpointCoordinator, task: TaskId, checkpoint_id: int) -> None:
    """What a task does: write its part (``task.json`` with ``writers``: the checkpoint's
    id) through the state module, then ack."""
    with PendingCheckpoint.attach(cc.root, checkpoint_id).task_writer(str(task)) as part:
        part.write_json("task.json", {"task": str(task), "writers": [checkpoint_id]})
        snap = part.commit()
    state = {"dir": str(snap.path), "keyed": None, "source": None}
    cc.on_ack(k.CheckpointAck("j", str(task), 0, checkpoint_id, state))


async def complete(cc: CheckpointCoordinator, view: View, checkpoint_id: int) -> None:
    """Trigger checkpoint ``checkpoint_id`` and have every task ack it."""
    await cc.trigger()
    for task in view.tasks:
        ack(cc, task, checkpoint_id)
    assert cc.last_completed == checkpoint_id
