"""``TaskContext``: what a task is (job, vertex, subtask, attempt, config), shared read-only
by the task's collaborators.

Built from the deployment the worker hands over: the job is loaded by
reference and must build the submitted graph. The deployment's ``keys`` (the
attempt's control key and the job's data key, DESIGN.md §10) are taken out of it
before the job is loaded, so nothing the job can see or log carries them.

Threading: immutable after construction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from netlayer.protocol.handshake import Credentials
from streamer.api import Job, load_job
from streamer.errors import StreamerError
from streamer.graph import ExecutionGraph, JobGraph, JobVertex, TaskId
from streamer.runtime.operators import TaskInfo
from streamer.security.roles import task_credentials


def parse_address(text: str) -> tuple[str, int]:
    """``"host:port"`` -> ``(host, port)``."""
    host, _, port = text.rpartition(":")
    return host, int(port)


@dataclass(frozen=True)
class TaskContext:
    deployment: dict[str, Any]
    config: dict[str, Any]
    job_id: str
    task_id: TaskId
    attempt: int
    job: Job
    eg: ExecutionGraph
    vertex: JobVertex
    info: TaskInfo
    keys: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_deployment(cls, deployment: dict[str, Any]) -> TaskContext:
        keys = deployment.pop("keys", None)
        if not isinstance(keys, dict) or not {"rpc", "data"} <= set(keys):
            raise StreamerError(
                "the deployment carries no task keys: the worker is of another version"
            )
        config: dict[str, Any] = deployment["config"]
        task_id = TaskId.parse(deployment["task"])
        attempt: int = deployment["attempt"]
        job = load_job(deployment["job_ref"], config.get("params"))
        job.check_graph(JobGraph.from_dict(deployment["job_graph"]))
        eg = job.execution_graph()
        vertex = eg.vertex_of(task_id)
        info = TaskInfo(
            deployment["job_id"],
            job.name,
            vertex.vertex_id,
            task_id.subtask,
            vertex.parallelism,
            attempt,
        )
        return cls(
            deployment, config, deployment["job_id"], task_id, attempt, job, eg, vertex, info, keys
        )

    @property
    def task(self) -> str:
        """The task id as text (``"count#1"``)."""
        return str(self.task_id)

    def identity(self) -> dict[str, Any]:
        """``job_id``, ``task``, ``attempt``: the fields every message to the coordinator has."""
        return {"job_id": self.job_id, "task": self.task, "attempt": self.attempt}

    def rpc_credentials(self) -> Credentials:
        """What this attempt proves to the coordinator."""
        return task_credentials(self.keys, self.job_id, self.task, self.attempt)

    @property
    def data_key(self) -> bytes:
        """The job's data-plane key: producers check it, consumers prove it."""
        return bytes.fromhex(self.keys["data"])

    def data_credentials(self) -> Credentials:
        return Credentials(self.data_key, {"role": "task", **self.identity()})

    def __str__(self) -> str:
        return f"{self.job_id}/{self.task_id}@{self.attempt}"
