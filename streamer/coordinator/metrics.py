"""Prometheus metrics of a coordinator (``GET /metrics``), read from its JSON status.

``StatusCollector`` is a custom ``prometheus_client`` collector: at each scrape it
reads the coordinator's status routes (``/jobs``, ``/jobs/<id>``, ``/workers``) and
turns what the tasks last reported (``streamer.runtime.task_metrics``) into metric
families. Nothing is kept between scrapes except the workers seen so far (a worker
that is gone reports ``streamer_worker_up 0``). Each coordinator has its own
``CollectorRegistry`` (``metrics_registry``), never the global one.

Task counters restart from 0 with each new attempt (a new process), which
Prometheus' ``rate()`` treats as a counter reset. Labels: ``job`` (the job id),
``vertex``, ``subtask``, ``worker``; per source partition also ``topic`` and
``partition``; ``strategy`` and ``outcome`` for failovers. ``METRICS`` lists every
family with its type, help text and labels.

Threading: the coordinator's loop (the status server calls ``render`` there).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

Route = Callable[[list[str]], Any]

TASK = ("job", "vertex", "subtask", "worker")
RECOVERY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_PLAUSIBLE_MS = (0, 2**53)  # a watermark outside this is a marker (none yet, idle, end)

# name (without the _total a counter gets) -> (type, help, extra labels)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "streamer_task_records_in": (
        "counter",
        "Data records the task read (from Kafka or its input channels)",
        TASK,
    ),
    "streamer_task_records_out": (
        "counter",
        "Data records the task emitted (to its consumers or Kafka)",
        TASK,
    ),
    "streamer_task_input_bytes": ("counter", "Bytes the task read (control records too)", TASK),
    "streamer_task_output_bytes": ("counter", "Bytes the task sent (control records too)", TASK),
    "streamer_task_records_processed": (
        "counter",
        "Records the task's operator chain processed",
        TASK,
    ),
    "streamer_task_records_dropped": (
        "counter",
        "Records routed to a failed consumer and dropped (lossy recovery)",
        TASK,
    ),
    "streamer_task_backpressure_ratio": (
        "gauge",
        "Share of the last metrics interval the task waited for room in its outputs",
        TASK,
    ),
    "streamer_task_backpressured_seconds": (
        "counter",
        "Seconds the task waited for room in its outputs",
        TASK,
    ),
    "streamer_task_watermark_seconds": (
        "gauge",
        "The task's event-time watermark (epoch seconds)",
        TASK,
    ),
    "streamer_task_watermark_lag_seconds": (
        "gauge",
        "Wall-clock time minus the task's watermark",
        TASK,
    ),
    "streamer_task_input_queue_length": (
        "gauge",
        "Items queued in an input channel",
        (*TASK, "channel"),
    ),
    "streamer_task_output_queue_buffers": (
        "gauge",
        "Buffers queued in the task's output partitions",
        TASK,
    ),
    "streamer_task_state_keys": (
        "gauge",
        "Entries in the task's keyed state (RocksDB estimate)",
        TASK,
    ),
    "streamer_task_state_size_bytes": (
        "gauge",
        "Size of the task's keyed state: memtables and SST files",
        TASK,
    ),
    "streamer_task_attempt": (
        "gauge",
        "The task's current attempt (0, then one more per redeploy)",
        TASK,
    ),
    "streamer_task_running": ("gauge", "1 when the task's current attempt is RUNNING", TASK),
    "streamer_source_partition_lag_records": (
        "gauge",
        "Kafka consumer lag of a source partition: high watermark minus next offset",
        (*TASK, "topic", "partition"),
    ),
    "streamer_job_info": (
        "gauge",
        "1 per job, with its name, state and failover strategy",
        ("job", "name", "state", "strategy"),
    ),
    "streamer_job_tasks": ("gauge", "Tasks of the job", ("job",)),
    "streamer_job_tasks_running": (
        "gauge",
        "Tasks of the job whose current attempt runs",
        ("job",),
    ),
    "streamer_job_kafka_reachable": (
        "gauge",
        "1 when every running task reaches Kafka, 0 while some cannot",
        ("job",),
    ),
    "streamer_job_kafka_unreachable_seconds": (
        "gauge",
        "How long the longest current Kafka outage of a task has lasted (0: none)",
        ("job",),
    ),
    "streamer_job_checkpoints": (
        "counter",
        "Checkpoints by outcome (completed, aborted)",
        ("job", "outcome"),
    ),
    "streamer_job_last_checkpoint_id": ("gauge", "Id of the last completed checkpoint", ("job",)),
    "streamer_job_last_checkpoint_timestamp_seconds": (
        "gauge",
        "When the last completed checkpoint completed (epoch seconds)",
        ("job",),
    ),
    "streamer_job_last_checkpoint_duration_seconds": (
        "gauge",
        "How long the last completed checkpoint took",
        ("job",),
    ),
    "streamer_job_last_checkpoint_size_bytes": (
        "gauge",
        "Size of the last completed checkpoint",
        ("job",),
    ),
    "streamer_job_failovers": (
        "counter",
        "Ended failovers by strategy and outcome (done, fell_back, superseded, job_*)",
        ("job", "strategy", "outcome"),
    ),
    "streamer_job_failovers_in_progress": ("gauge", "Failovers still in progress", ("job",)),
    "streamer_job_failover_recovery_seconds": (
        "histogram",
        "Time from failure (or kill request) to recovery, per recovered failover",
        ("job", "strategy", "outcome"),
    ),
    "streamer_worker_up": (
        "gauge",
        "1 while the worker is registered, 0 once it was lost",
        ("worker", "host"),
    ),
    "streamer_worker_slots": ("gauge", "Task slots the worker offers", ("worker", "host")),
    "streamer_worker_slots_used": ("gauge", "Task slots in use on the worker", ("worker", "host")),
    "streamer_worker_heartbeat_age_seconds": (
        "gauge",
        "Seconds since the worker's last heartbeat",
        ("worker", "host"),
    ),
}


class _Families:
    """Metric families by name, made on first use from ``METRICS``."""

    def __init__(self) -> None:
        self._made: dict[str, Metric] = {}

    def add(self, name: str, labels: Iterable[str], value: float) -> None:
        family = self._family(name)
        assert not isinstance(family, HistogramMetricFamily)
        family.add_metric(list(labels), value)

    def histogram(
        self, name: str, labels: Iterable[str], buckets: list[tuple[str, float]], total: float
    ) -> None:
        family = self._family(name)
        assert isinstance(family, HistogramMetricFamily)
        family.add_metric(list(labels), buckets, total)

    def _family(self, name: str) -> Any:
        if name not in self._made:
            kind, doc, labels = METRICS[name]
            cls = {
                "counter": CounterMetricFamily,
                "gauge": GaugeMetricFamily,
                "histogram": HistogramMetricFamily,
            }[kind]
            self._made[name] = cls(name, doc, labels=list(labels))
        return self._made[name]

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._made.values())


class StatusCollector(Collector):
    """Reads the status routes at scrape time (see the module docstring)."""

    def __init__(self, route: Route) -> None:
        self.route = route
        self._workers_seen: dict[str, str] = {}  # worker id -> host

    def collect(self) -> Iterator[Metric]:
        out = _Families()
        now = time.time()
        for summary in self.route(["jobs"]) or []:
            status = self.route(["jobs", summary["job_id"]])
            if status:
                job_metrics(out, status, now)
        self._worker_metrics(out, self.route(["workers"]) or [])
        return iter(out)

    def _worker_metrics(self, out: _Families, workers: list[dict[str, Any]]) -> None:
        live = set()
        for w in workers:
            labels = (str(w["worker_id"]), str(w.get("host") or ""))
            live.add(labels[0])
            self._workers_seen[labels[0]] = labels[1]
            out.add("streamer_worker_up", labels, 1)
            out.add("streamer_worker_slots", labels, w.get("slots", 0))
            out.add("streamer_worker_slots_used", labels, w.get("used", 0))
            if w.get("heartbeat_age") is not None:
                out.add("streamer_worker_heartbeat_age_seconds", labels, w["heartbeat_age"])
        for worker_id, host in self._workers_seen.items():
            if worker_id not in live:
                out.add("streamer_worker_up", (worker_id, host), 0)


def job_metrics(out: _Families, status: dict[str, Any], now: float) -> None:
    """Every family of one job's ``status`` (``streamer.coordinator.status.job_status``)."""
    job = str(status["job_id"])
    out.add(
        "streamer_job_info",
        (job, str(status.get("name", "")), str(status["state"]), str(status.get("strategy", ""))),
        1,
    )
    tasks = status.get("tasks", [])
    out.add("streamer_job_tasks", (job,), len(tasks))
    out.add("streamer_job_tasks_running", (job,), sum(t["state"] == "RUNNING" for t in tasks))
    for row in tasks:
        task_metrics(out, job, row, now)
    kafka = status.get("kafka")
    if kafka is not None:
        out.add("streamer_job_kafka_reachable", (job,), 1 if kafka.get("reachable") else 0)
        out.add("streamer_job_kafka_unreachable_seconds", (job,), kafka.get("unreachable_s", 0))
    checkpoint_metrics(out, job, status.get("checkpoints") or {})
    failover_metrics(out, job, status.get("failovers") or [])


def task_metrics(out: _Families, job: str, row: dict[str, Any], now: float) -> None:
    labels = (job, str(row["vertex"]), str(row["subtask"]), str(row.get("worker") or ""))
    m: dict[str, Any] = row.get("metrics") or {}
    out.add("streamer_task_attempt", labels, row["attempt"])
    out.add("streamer_task_running", labels, 1 if row["state"] == "RUNNING" else 0)
    if not m:
        return
    source, sink = m.get("source") or {}, m.get("sink") or {}
    channels = m.get("channels") or []
    partitions = (m.get("partitions") or {}).values()
    records_in = source["records_in"] if source else m.get("records_processed", 0)
    bytes_in = source.get("bytes_in", 0) + sum(c.get("bytes_in", 0) for c in channels)
    records_out = sink["records_out"] if sink else m.get("records_emitted", 0)
    bytes_out = sink.get("bytes_out", 0) + sum(p.get("bytes_out", 0) for p in partitions)
    out.add("streamer_task_records_in", labels, records_in)
    out.add("streamer_task_records_out", labels, records_out)
    out.add("streamer_task_input_bytes", labels, bytes_in)
    out.add("streamer_task_output_bytes", labels, bytes_out)
    out.add("streamer_task_records_processed", labels, m.get("records_processed", 0))
    dropped = sum(sum(p.get("dropped", ())) for p in partitions)
    out.add("streamer_task_records_dropped", labels, dropped)
    pressure = m.get("backpressure") or {}
    out.add("streamer_task_backpressure_ratio", labels, pressure.get("ratio", 0.0))
    out.add("streamer_task_backpressured_seconds", labels, pressure.get("seconds", 0.0))
    watermark = m.get("watermark")
    if isinstance(watermark, int) and _PLAUSIBLE_MS[0] < watermark < _PLAUSIBLE_MS[1]:
        out.add("streamer_task_watermark_seconds", labels, watermark / 1000)
        out.add("streamer_task_watermark_lag_seconds", labels, max(0.0, now - watermark / 1000))
    for index, channel in enumerate(channels):
        out.add("streamer_task_input_queue_length", (*labels, str(index)), channel.get("queued", 0))
    if partitions:
        queued = sum(p.get("queued", 0) for p in partitions)
        out.add("streamer_task_output_queue_buffers", labels, queued)
    state = m.get("state")
    if state:
        out.add("streamer_task_state_keys", labels, state.get("keys", 0))
        out.add("streamer_task_state_size_bytes", labels, state.get("bytes", 0))
    topic = str((source.get("snapshot") or {}).get("topic", ""))
    for partition, lag in sorted((source.get("lag") or {}).items()):
        out.add("streamer_source_partition_lag_records", (*labels, topic, str(partition)), lag)


def checkpoint_metrics(out: _Families, job: str, checkpoints: dict[str, Any]) -> None:
    if not checkpoints:
        return
    out.add("streamer_job_checkpoints", (job, "completed"), checkpoints.get("completed", 0))
    out.add("streamer_job_checkpoints", (job, "aborted"), checkpoints.get("aborted", 0))
    completed = [h for h in checkpoints.get("history", ()) if h.get("outcome") == "completed"]
    if not completed:
        return
    last = completed[-1]
    out.add("streamer_job_last_checkpoint_id", (job,), last["id"])
    out.add("streamer_job_last_checkpoint_duration_seconds", (job,), last.get("seconds", 0.0))
    if last.get("at") is not None:
        out.add("streamer_job_last_checkpoint_timestamp_seconds", (job,), last["at"])
    if last.get("size") is not None:
        out.add("streamer_job_last_checkpoint_size_bytes", (job,), last["size"])


def failover_outcome(record: dict[str, Any]) -> str:
    """``done``, ``fell_back`` (done by a region restart after the individual protocol
    gave up), ``superseded``, ``job_failed``, ``job_ended`` or ``in_progress``."""
    status = str(record.get("status", "in_progress"))
    return "fell_back" if status == "done" and record.get("fell_back") else status


def failover_metrics(out: _Families, job: str, records: list[dict[str, Any]]) -> None:
    ended: dict[tuple[str, str], int] = {}
    recoveries: dict[tuple[str, str], list[float]] = {}
    in_progress = 0
    for rec in records:
        outcome = failover_outcome(rec)
        if outcome == "in_progress":
            in_progress += 1
            continue
        key = (str(rec.get("strategy", "")), outcome)
        ended[key] = ended.get(key, 0) + 1
        if rec.get("recovery_seconds") is not None:
            recoveries.setdefault(key, []).append(float(rec["recovery_seconds"]))
    out.add("streamer_job_failovers_in_progress", (job,), in_progress)
    for (strategy, outcome), n in sorted(ended.items()):
        out.add("streamer_job_failovers", (job, strategy, outcome), n)
    for (strategy, outcome), seconds in sorted(recoveries.items()):
        buckets = [(_le(b), float(sum(s <= b for s in seconds))) for b in RECOVERY_BUCKETS]
        buckets.append(("+Inf", float(len(seconds))))
        out.histogram(
            "streamer_job_failover_recovery_seconds",
            (job, strategy, outcome),
            buckets,
            sum(seconds),
        )


def _le(bound: float) -> str:
    return repr(float(bound))


def metrics_registry(route: Route) -> CollectorRegistry:
    """A registry of its own holding one ``StatusCollector`` over ``route``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatusCollector(route))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (version 0.0.4)."""
    return generate_latest(registry)
