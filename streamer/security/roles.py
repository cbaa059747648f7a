"""Who may say what on the control plane: identities, their keys, and a pure
authorization check per message (DESIGN.md §10).

Three roles connect to the coordinator:

- ``client`` (the CLI, tests, benchmarks): submits, cancels, queries, takes
  savepoints, injects faults. Holds the cluster secret.
- ``worker``: registers, heartbeats, reports task exits. Holds the cluster secret.
- ``task`` (one attempt of one task): says hello, reports its state, metrics and
  checkpoints. Holds only keys derived for that attempt and its job, never the
  cluster secret, so the user code it runs cannot act as anything else.

Each proves its key in the connection's handshake (`netlayer.protocol.handshake`),
and `authorize` then checks every message against the connection's identity: the
kind must belong to the role, and a body that names a worker or a task attempt must
name the connection's own. What needs the coordinator's state (that a worker hosts
the task whose exit it reports, that a worker id is not live already) is checked
by the coordinator itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from netlayer.protocol.handshake import Credentials, KeyLookup
from streamer.security.secret import derive

CLIENT, WORKER, TASK = "client", "worker", "task"

ROLE_KINDS: dict[str, frozenset[str]] = {
    CLIENT: frozenset(
        {"submit_job", "list_jobs", "job_status", "cancel_job", "trigger_savepoint", "kill_task"}
    ),
    WORKER: frozenset({"register_worker", "heartbeat", "task_exited"}),
    TASK: frozenset(
        {
            "task_hello",
            "task_state",
            "task_metrics",
            "checkpoint_ack",
            "checkpoint_declined",
            "checkpoint_committed",
        }
    ),
}
"""The message kinds each role may send to the coordinator (replies are not listed:
the transport matches them to the requests this side sent)."""


def client_credentials(secret: bytes) -> Credentials:
    return Credentials(derive(secret, "rpc", CLIENT), {"role": CLIENT})


def worker_credentials(secret: bytes, worker_id: str) -> Credentials:
    return Credentials(derive(secret, "rpc", WORKER, worker_id), {"role": WORKER, "id": worker_id})


def task_keys(secret: bytes, job_id: str, task: str, attempt: int) -> dict[str, str]:
    """What a worker hands a task process (hex): its control key and its job's data key."""
    return {
        "rpc": derive(secret, "rpc", TASK, job_id, task, attempt).hex(),
        "data": derive(secret, "data", job_id).hex(),
    }


def task_credentials(keys: Mapping[str, str], job_id: str, task: str, attempt: int) -> Credentials:
    identity = {"role": TASK, "job_id": job_id, "task": task, "attempt": attempt}
    return Credentials(bytes.fromhex(keys["rpc"]), identity)


def coordinator_keys(secret: bytes) -> KeyLookup:
    """The coordinator's key for a claimed identity (None: refuse it)."""

    def key_for(identity: Mapping[str, Any]) -> bytes | None:
        role = identity.get("role")
        if role == CLIENT and set(identity) == {"role"}:
            return derive(secret, "rpc", CLIENT)
        if role == WORKER and isinstance(identity.get("id"), str) and len(identity) == 2:
            return derive(secret, "rpc", WORKER, identity["id"])
        if role == TASK and _is_task_identity(identity):
            job, task, attempt = identity["job_id"], identity["task"], identity["attempt"]
            return derive(secret, "rpc", TASK, job, task, attempt)
        return None

    return key_for


def _is_task_identity(identity: Mapping[str, Any]) -> bool:
    return (
        set(identity) == {"role", "job_id", "task", "attempt"}
        and isinstance(identity["job_id"], str)
        and isinstance(identity["task"], str)
        and isinstance(identity["attempt"], int)
        and not isinstance(identity["attempt"], bool)
    )


def authorize(identity: Mapping[str, Any], kind: str, body: Mapping[str, Any]) -> str | None:
    """Why a connection with ``identity`` may not send ``kind`` with ``body``, or None."""
    role = str(identity.get("role"))
    if kind not in ROLE_KINDS.get(role, frozenset()):
        return f"a {role} may not send {kind}"
    if role == WORKER and "worker_id" in body and body["worker_id"] != identity["id"]:
        return f"worker {identity['id']} may not speak for worker {body['worker_id']!r}"
    if role == TASK:
        for field in ("job_id", "task", "attempt"):
            if body.get(field) != identity[field]:
                who = f"{identity['task']}@{identity['attempt']}"
                return f"task {who} may not speak for another task ({field} differs)"
    return None
