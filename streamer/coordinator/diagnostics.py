"""``JobDiagnostics``: what the coordinator remembers of a job's tasks besides their
state: their recent errors over every attempt, where each attempt's log is, and
whether they reach Kafka.

Fed by the tasks' metrics (``streamer.runtime.diagnostics``: ``log_file``,
``host``, ``recent_errors``, ``kafka``) and by task failures (the cause and the
traceback, as an entry of its own). Read by the job's status:

- per task ``recent_errors`` (the ``KEEP`` most recent entries over all attempts,
  oldest first, each with its ``attempt``) and ``logs`` (``attempt``, ``worker``,
  ``host``, ``path`` per attempt; an attempt that died before it reported is placed
  next to an attempt of the same worker, whose file name differs only in the
  attempt number);
- the job's ``kafka``: whether every running task reaches Kafka, and if not which
  tasks, since when and the last error;
- ``coordinator_log``: where this process writes its log.

Kafka outages (DESIGN: a job that cannot reach Kafka fails with the reason): a
running task that cannot reach Kafka for ``kafka_timeout`` seconds makes
``on_metrics`` return the reason to fail the job; ``on_failure`` adds "cannot
reach Kafka ..." to the cause of a task that failed while it could not reach
Kafka, which the ``FailoverHandler`` does not restart. A task's outage is its own
report extrapolated by the time since it arrived (a task blocked in a Kafka call
does not report).

Threading: the coordinator's loop only.
"""

from __future__ import annotations

import re
import socket
import time
from collections import defaultdict
from typing import Any

from streamer.connectors.health import UNREACHABLE
from streamer.coordinator.execution import ExecutionStore
from streamer.graph import TaskId
from streamer.rpc import TaskState
from streamer.runtime.diagnostics import log_location

KEEP = 10
DEFAULT_KAFKA_TIMEOUT = 60.0


class JobDiagnostics:
    """See the module docstring. ``kafka_timeout`` None: never fail the job for an outage."""

    def __init__(
        self, tasks: ExecutionStore, kafka_timeout: float | None = DEFAULT_KAFKA_TIMEOUT
    ) -> None:
        self.tasks = tasks
        self.kafka_timeout = kafka_timeout
        self._errors: dict[TaskId, dict[tuple[int, str], dict[str, Any]]] = defaultdict(dict)
        self._logs: dict[TaskId, dict[int, dict[str, Any]]] = defaultdict(dict)
        self._workers: dict[TaskId, dict[int, str | None]] = defaultdict(dict)
        # task -> (attempt, its clients' health, monotonic time the report arrived)
        self._kafka: dict[TaskId, tuple[int, list[dict[str, Any]], float]] = {}

    # ----------------------------------------------------------------- inputs
    def on_deployed(self, task: TaskId, log_file: str) -> None:
        """``task``'s current attempt was started, with its log at ``log_file`` (on its
        worker's host): known before the attempt reports anything, even if it never does."""
        te = self.tasks[task]
        self._workers[task][te.attempt] = te.worker_id
        self._logs[task][te.attempt] = {
            "attempt": te.attempt,
            "worker": te.worker_id,
            "host": None,
            "path": log_file,
        }

    def on_metrics(self, task: TaskId, metrics: dict[str, Any]) -> str | None:
        """Take a metrics report of ``task``'s current attempt; returns why the job must
        fail (Kafka unreachable for ``kafka_timeout``), or None."""
        te = self.tasks[task]
        attempt = te.attempt
        self._workers[task][attempt] = te.worker_id
        if metrics.get("log_file"):
            self._logs[task][attempt] = {
                "attempt": attempt,
                "worker": te.worker_id,
                "host": metrics.get("host"),
                "path": metrics["log_file"],
            }
        errors = self._errors[task]
        for entry in metrics.get("recent_errors") or ():
            errors[(attempt, f"{entry.get('logger')}|{entry.get('text')}")] = {
                **entry,
                "attempt": attempt,
            }
        self._trim(task)
        if "kafka" in metrics:
            self._kafka[task] = (attempt, list(metrics["kafka"]), time.monotonic())
        return self.kafka_outage()

    def on_failure(self, task: TaskId, attempt: int, cause: str, tb: str | None) -> str:
        """Record ``task``'s failure; returns the cause, with "cannot reach Kafka ..."
        added when the attempt could not reach Kafka as it failed."""
        self._workers[task][attempt] = self.tasks[task].worker_id
        down = self._unreachable(task, attempt)
        if down and UNREACHABLE not in cause:
            secs, client = down[0]
            cause += (
                f"; it {UNREACHABLE} at {client['bootstrap']} for {secs:.0f} s "
                f"({client['role']}: {client.get('last_error') or 'all brokers are down'})"
            )
        now = time.time()
        self._errors[task][(attempt, f"coordinator|failed: {cause}")] = {
            "time": now,
            "last_time": now,
            "count": 1,
            "level": "ERROR",
            "logger": "coordinator",
            "text": f"attempt {attempt} failed: {cause}",
            **({"traceback": tb} if tb else {}),
            "attempt": attempt,
        }
        self._trim(task)
        return cause

    def _trim(self, task: TaskId) -> None:
        errors = self._errors[task]
        if len(errors) > KEEP:
            newest = sorted(errors.items(), key=lambda kv: kv[1].get("last_time", 0))[-KEEP:]
            self._errors[task] = dict(newest)

    # ------------------------------------------------------------------ kafka
    def _unreachable(self, task: TaskId, attempt: int) -> list[tuple[float, dict[str, Any]]]:
        """(seconds, client) of each of the attempt's Kafka clients that cannot reach
        Kafka now, longest first."""
        report = self._kafka.get(task)
        if report is None or report[0] != attempt:
            return []
        _, clients, received = report
        age = time.monotonic() - received
        down = [
            (float(c["unreachable_s"]) + age, c)
            for c in clients
            if not c.get("reachable", True) and c.get("unreachable_s") is not None
        ]
        return sorted(down, key=lambda d: -d[0])

    def _outages(self) -> dict[TaskId, list[tuple[float, dict[str, Any]]]]:
        out = {}
        for task, te in self.tasks.items():
            if te.state == TaskState.RUNNING:
                down = self._unreachable(task, te.attempt)
                if down:
                    out[task] = down
        return out

    def kafka_summary(self) -> dict[str, Any]:
        """``{"reachable": True}``, or ``{"reachable": False, "unreachable_s", "since",
        "tasks", "bootstrap", "last_error"}`` over the running tasks."""
        outages = self._outages()
        if not outages:
            return {"reachable": True}
        secs, client = max((d[0] for d in outages.values()), key=lambda d: d[0])
        errors = [c.get("last_error") for down in outages.values() for _, c in down]
        return {
            "reachable": False,
            "unreachable_s": round(secs, 1),
            "since": time.time() - secs,
            "tasks": sorted(str(t) for t in outages),
            "roles": sorted({c["role"] for down in outages.values() for _, c in down}),
            "bootstrap": client["bootstrap"],
            "last_error": next((e for e in errors if e), None),
        }

    def kafka_outage(self) -> str | None:
        """Why the job must fail: a running task could not reach Kafka for
        ``kafka_timeout`` seconds; None otherwise."""
        if self.kafka_timeout is None:
            return None
        summary = self.kafka_summary()
        if summary["reachable"] or summary["unreachable_s"] < self.kafka_timeout:
            return None
        tasks = summary["tasks"]
        named = ", ".join(tasks[:4]) + (f" and {len(tasks) - 4} more" if len(tasks) > 4 else "")
        error = summary["last_error"] or "all brokers are down"
        return (
            f"{named} {UNREACHABLE} at {summary['bootstrap']} for "
            f"{summary['unreachable_s']:.0f} s (kafka_timeout {self.kafka_timeout:g} s; last "
            f"error: {error}): start the broker or fix bootstrap_servers, then run the job again"
        )

    # ----------------------------------------------------------------- status
    def recent_errors(self, task: TaskId) -> list[dict[str, Any]]:
        return sorted(self._errors[task].values(), key=lambda e: e.get("last_time", 0))

    def logs(self, task: TaskId) -> list[dict[str, Any]]:
        """Every attempt's log location that is known or can be inferred, by attempt."""
        known = self._logs[task]
        out = dict(known)
        for attempt, worker in self._workers[task].items():
            if attempt in out:
                continue
            twin = next((e for e in known.values() if e["worker"] == worker), None)
            if twin is not None:
                path = re.sub(r"\.attempt\d+\.log$", f".attempt{attempt}.log", twin["path"])
                if path != twin["path"]:
                    out[attempt] = {**twin, "attempt": attempt, "path": path}
        return [out[a] for a in sorted(out)]


def coordinator_log() -> dict[str, Any]:
    """``{"host", "path"}``: where this process (the coordinator) writes its log; path
    None when its standard error is not a file (a terminal, a pipe to docker)."""
    return {"host": socket.gethostname(), "path": log_location()}
