"""Every control-plane message kind as a dataclass: the one place a kind, its body
and its replies are declared.

``@kind("deploy_task", replies=("deployed",))`` registers the class in the
process-wide ``REGISTRY`` with a schema derived from its fields (a field with a
default is optional; ``Any`` is any JSON value), so the codec checks every body
on the wire against the class. ``parse(msg)`` turns a decoded ``Message`` into
its instance. A ``Dispatcher`` (``streamer.rpc.dispatch``) routes instances to
handlers by class.

Threading: import-time registration only; instances are immutable.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, TypeVar

from streamer.rpc.messages import REGISTRY, Message, Registry

T = TypeVar("T")

# the start of the error reply to a ``task_hello`` of an attempt that is no longer
# current (a newer attempt replaced it, or the job ended): the task then just ends
STALE_ATTEMPT = "stale or unknown task"

KINDS: dict[str, type[Any]] = {}  # kind -> class
KIND_OF: dict[type[Any], str] = {}  # class -> kind
_REPLIES: dict[str, tuple[str, ...]] = {}


def kind(name: str, replies: Iterable[str] = ()) -> Callable[[type[T]], type[T]]:
    """Declare the decorated dataclass as message kind ``name``."""

    def wrap(cls: type[T]) -> type[T]:
        KINDS[name] = cls
        KIND_OF[cls] = name
        _REPLIES[name] = tuple(replies)
        return cls

    return wrap


def _field_type(hint: Any) -> tuple[type, bool]:
    """(wire type, optional) of a field annotation."""
    optional = False
    if isinstance(hint, UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not NoneType]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else Any
    origin = typing.get_origin(hint) or hint
    return (object if origin is Any else origin), optional


def register_kinds(registry: Registry) -> None:
    """Register every declared kind (with its schema and replies) in ``registry``."""
    for name, cls in KINDS.items():
        hints = typing.get_type_hints(cls)
        required: dict[str, type] = {}
        optional: dict[str, type] = {}
        for f in dataclasses.fields(cls):
            wire, nullable = _field_type(hints[f.name])
            has_default = f.default is not dataclasses.MISSING or (
                f.default_factory is not dataclasses.MISSING
            )
            (optional if has_default or nullable else required)[f.name] = wire
        registry.register(name, required, optional, replies=_REPLIES[name])


def parse(msg: Message) -> Any:
    """``msg``'s body as an instance of its kind's class (the codec checked the body)."""
    return KINDS[msg.kind](**msg.body)


# ------------------------------------------------------------------ replies
@kind("ok")
@dataclass(frozen=True, slots=True)
class Ok:
    pass


@kind("ack")
@dataclass(frozen=True, slots=True)
class Ack:
    pass


# ------------------------------------------------------ worker <-> coordinator
@kind("register_worker", replies=("registered",))
@dataclass(frozen=True, slots=True)
class RegisterWorker:
    worker_id: str
    host: str
    pid: int
    slots: int


@kind("registered")
@dataclass(frozen=True, slots=True)
class Registered:
    heartbeat_interval: float
    heartbeat_timeout: float


@kind("heartbeat")
@dataclass(frozen=True, slots=True)
class Heartbeat:
    worker_id: str
    tasks: list[Any]


@kind("prepare_job")
@dataclass(frozen=True, slots=True)
class PrepareJob:
    job_id: str
    job_ref: str


@kind("deploy_task", replies=("deployed",))
@dataclass(frozen=True, slots=True)
class DeployTask:
    job_id: str
    job_ref: str
    job_graph: dict[str, Any]
    task: str
    attempt: int
    config: dict[str, Any]
    restore: dict[str, Any] | None = None
    # the keyed state the attempt will most likely restore (its plan decides): it
    # opens that state while its hello is answered (keys: STATE_PLAN_KEYS)
    restore_hint: dict[str, Any] | None = None


STATE_PLAN_KEYS = ("checkpoint_id", "from", "keyed")
"""The keys of a restore plan that decide a task's keyed state."""


@kind("deployed")
@dataclass(frozen=True, slots=True)
class Deployed:
    pid: int
    log_file: str | None = None  # where the task process's output goes, on the worker's host


@kind("cancel_task", replies=("ok",))
@dataclass(frozen=True, slots=True)
class CancelTask:
    job_id: str
    task: str
    attempt: int


@kind("kill_task", replies=("ok",))
@dataclass(frozen=True, slots=True)
class KillTask:
    job_id: str
    task: str
    attempt: int | None = None


@kind("task_exited")
@dataclass(frozen=True, slots=True)
class TaskExited:
    job_id: str
    task: str
    attempt: int
    exit_code: int
    signal: int | None = None
    error: str | None = None


# -------------------------------------------------------- task <-> coordinator
@kind("task_hello", replies=("task_plan",))
@dataclass(frozen=True, slots=True)
class TaskHello:
    job_id: str
    task: str
    attempt: int
    data_address: str
    pid: int


@kind("task_plan")
@dataclass(frozen=True, slots=True)
class TaskPlan:
    inputs: list[Any]
    restore: dict[str, Any] | None = None


@kind("task_state")
@dataclass(frozen=True, slots=True)
class TaskStateReport:
    job_id: str
    task: str
    attempt: int
    state: str
    error: str | None = None
    traceback: str | None = None
    at: float | None = None  # the task's wall clock when it entered ``state``


@kind("consumer_failed")
@dataclass(frozen=True, slots=True)
class ConsumerFailed:
    partition_id: str
    subpartition: int
    restore_checkpoint: int | None = None  # what the consumer's next attempt restores


@kind("producer_failed")
@dataclass(frozen=True, slots=True)
class ProducerFailed:
    gate: int
    channel: int


@kind("update_partition_info", replies=("ack",))
@dataclass(frozen=True, slots=True)
class UpdatePartitionInfo:
    gate: int
    channel: int
    address: str
    attempt: int
    dedup_from: int | None = None  # the producer re-emits all after its barrier of this id


@kind("get_determinants", replies=("determinants",))
@dataclass(frozen=True, slots=True)
class GetDeterminants:
    """To a consumer of a failed producer: what it took from it since a checkpoint."""

    gate: int
    channel: int
    checkpoint_id: int


@kind("determinants")
@dataclass(frozen=True, slots=True)
class Determinants:
    found: bool  # False: the channel does not know that checkpoint's barrier
    seen: int = 0  # items taken after the barrier
    log: list[Any] | None = None  # the producer's determinants among them


@kind("task_metrics")
@dataclass(frozen=True, slots=True)
class TaskMetrics:
    job_id: str
    task: str
    attempt: int
    metrics: dict[str, Any]


# ----------------------------------------------------------------- checkpoints
@kind("trigger_checkpoint")
@dataclass(frozen=True, slots=True)
class TriggerCheckpoint:
    checkpoint_id: int


@kind("checkpoint_ack")
@dataclass(frozen=True, slots=True)
class CheckpointAck:
    job_id: str
    task: str
    attempt: int
    checkpoint_id: int
    state: dict[str, Any]


@kind("checkpoint_declined")
@dataclass(frozen=True, slots=True)
class CheckpointDeclined:
    job_id: str
    task: str
    attempt: int
    checkpoint_id: int
    reason: str


@kind("checkpoint_complete")
@dataclass(frozen=True, slots=True)
class CheckpointComplete:
    checkpoint_id: int


@kind("checkpoint_abort")
@dataclass(frozen=True, slots=True)
class CheckpointAbort:
    checkpoint_id: int


@kind("checkpoint_committed")
@dataclass(frozen=True, slots=True)
class CheckpointCommitted:
    job_id: str
    task: str
    attempt: int
    checkpoint_id: int


@kind("trigger_savepoint", replies=("savepoint",))
@dataclass(frozen=True, slots=True)
class TriggerSavepoint:
    job_id: str
    directory: str
    stop: bool | None = None


@kind("savepoint")
@dataclass(frozen=True, slots=True)
class Savepoint:
    path: str
    checkpoint_id: int


# ------------------------------------------------------ client <-> coordinator
@kind("submit_job", replies=("submitted",))
@dataclass(frozen=True, slots=True)
class SubmitJob:
    job_ref: str
    config: dict[str, Any]


@kind("submitted")
@dataclass(frozen=True, slots=True)
class Submitted:
    job_id: str


@kind("list_jobs", replies=("jobs",))
@dataclass(frozen=True, slots=True)
class ListJobs:
    pass


@kind("jobs")
@dataclass(frozen=True, slots=True)
class Jobs:
    jobs: list[Any]


@kind("cancel_job", replies=("ok",))
@dataclass(frozen=True, slots=True)
class CancelJob:
    job_id: str


@kind("job_status", replies=("status",))
@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: str


@kind("status")
@dataclass(frozen=True, slots=True)
class Status:
    status: dict[str, Any]


register_kinds(REGISTRY)


def builtin_registry() -> Registry:
    """A fresh registry holding only the built-in kinds (for tests and tools)."""
    registry = Registry()
    register_kinds(registry)
    return registry
