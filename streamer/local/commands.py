"""CLI commands that run processes here: ``streamer worker`` and ``streamer run`` (local mode).

``streamer run MODULE:JOB`` starts a local Apache Kafka broker (unless
``--bootstrap-servers`` is given; its topics are then created for the job), a
coordinator and ``--workers`` workers, submits the job, shows live progress
(tasks running, records/s, failovers) and stops everything on Ctrl-C, on
``--duration`` or when the job ends. Every process is stopped by its own pid.
The current directory is the project: the local cluster's processes have it on
``PYTHONPATH`` (``LocalCluster(cwd=...)``), so ``streamer run my_jobs.counts:job``
works next to ``my_jobs/``; a job for ``streamer submit`` must be on the
coordinator's and workers' ``PYTHONPATH`` or installed there.
What it prints comes from ``streamer.local.progress``.

``streamer worker`` runs one worker (``streamer.runtime.worker``) in this process.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from typing import TYPE_CHECKING, Any

from streamer.coordinator.commands import add_job_options, job_config, remember_address
from streamer.coordinator.status_http import dashboard_url
from streamer.errors import ConfigError
from streamer.local.cluster import LocalCluster
from streamer.local.progress import ErrorPrinter, FailoverPrinter, fit, progress_line
from streamer.localkafka import broker_or_local
from streamer.rpc import RpcError
from streamer.rpc.client import CoordinatorClient

BROKER_HINT = (
    "check that the broker runs and --bootstrap-servers is right "
    "(`streamer kafka status` for the local one)"
)

if TYPE_CHECKING:
    from streamer.api import Job


def add_parsers(sub: Any) -> None:
    from streamer.runtime.worker import add_arguments

    p = sub.add_parser("worker", help="run a worker that offers task slots to a coordinator")
    add_arguments(p)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("run", help="run a job locally: Kafka, a coordinator and workers")
    add_job_options(p)
    p.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("--slots", type=int, default=8, help="slots per worker (default 8)")
    p.add_argument("--topic-partitions", type=int, default=8,
                   help="partitions of topics created for the job (default 8)")  # fmt: skip
    p.add_argument("--create-topics", action="store_true",
                   help="create the job's missing topics on --bootstrap-servers too")  # fmt: skip
    p.add_argument("--duration", type=float, help="cancel the job after this many seconds")
    p.add_argument("--status-host", default="127.0.0.1",
                   help="bind address of the dashboard and /metrics (default 127.0.0.1; "
                        "beyond loopback they require the status token)")  # fmt: skip
    p.set_defaults(func=cmd_run)


def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from streamer.runtime.worker import run_worker

    logging.getLogger().setLevel(logging.INFO)
    return run_worker(args)


def job_topics(job_ref: str, params: dict[str, Any]) -> list[str]:
    """Every topic the job reads or writes; see ``topics_of``. Loaded here as the local
    cluster will load it: with the current directory on the path (see above)."""
    from streamer.api import load_job

    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return topics_of(load_job(job_ref, params))


def topics_of(job: Job) -> list[str]:
    """Every topic a job reads or writes, sorted: its sources' and sinks' topics, the
    sources' dead-letter topics (``<topic>.dlq`` unless named) and joins' late topics."""
    from streamer.graph import OperatorKind

    topics: set[str] = set()
    for vertex in job.job_graph.vertices:
        for op in vertex.operators:
            if op.kind in (OperatorKind.KAFKA_SOURCE, OperatorKind.KAFKA_SINK):
                topics.add(op.config["topic"])
            for key in ("dead_letter_topic", "late_topic"):
                if op.config.get(key):
                    topics.add(op.config[key])
    return sorted(topics)


def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    create: bool,
    kafka_config: dict[str, Any] | None = None,
) -> None:
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    from streamer.connectors.client_config import client_config
    from streamer.connectors.health import probe

    config = client_config(bootstrap, defaults={"log_level": 0}, kafka_config=kafka_config)
    # one line at once for a refused, unknown or unauthenticated broker; 15 s for a silent one
    metadata = probe(
        bootstrap, 15.0, config, hint=BROKER_HINT, security_hint="check --kafka-config"
    )
    existing = set(metadata.topics)
    admin = AdminClient(config)
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    if not create:
        raise ConfigError(
            f"topics {', '.join(missing)} do not exist at {bootstrap}: create them, "
            "or pass --create-topics"
        )
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
    for topic, fut in futures.items():
        fut.result(timeout=30)
        print(f"created topic {topic} ({partitions} partitions)")


def cmd_run(args: argparse.Namespace) -> int:
    # settings and params are checked before anything starts; the broker comes later
    config = job_config(args, args.bootstrap_servers or "127.0.0.1:9092")
    topics = job_topics(args.job, config["params"])
    stop = {"now": False}

    def on_signal(_sig: int, _frame: Any) -> None:
        stop["now"] = True

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        with broker_or_local(args.bootstrap_servers) as bootstrap:
            ensure_topics(
                bootstrap,
                topics,
                args.topic_partitions,
                create=args.create_topics or not args.bootstrap_servers,
                kafka_config=config.get("kafka_config"),
            )
            print(f"starting a coordinator and {args.workers} workers ...", flush=True)
            cluster = LocalCluster(args.workers, slots=args.slots, status_host=args.status_host)
            with cluster:
                remember_address(cluster.address, cluster.status_port)
                job_id = cluster.submit(args.job, {**config, "bootstrap_servers": bootstrap})
                assert cluster.status_port is not None
                dashboard = dashboard_url(args.status_host, cluster.status_port)
                print(
                    f"job {job_id} submitted ({args.strategy}); dashboard: {dashboard}#{job_id}  "
                    f"kill a task: streamer kill-task {job_id} VERTEX SUBTASK",
                    flush=True,
                )
                print(
                    f"logs: streamer logs {job_id} [VERTEX SUBTASK] [--follow] "
                    f"(files under {cluster.work_dir})",
                    flush=True,
                )
                return _follow(cluster, job_id, args.duration, stop)
    finally:
        signal.signal(signal.SIGINT, previous)


POLL_TIMEOUT_S = 5.0
"""How long one status poll of `streamer run` may take before it is tried again."""
POLL_GIVE_UP_S = 60.0
"""How long polls may keep failing before `streamer run` gives up (and stops the cluster)."""


def _follow(
    cluster: LocalCluster, job_id: str, duration: float | None, stop: dict[str, bool]
) -> int:
    started = time.monotonic()
    last_in = last_out = 0
    last_t = started
    status: dict[str, Any] = {}
    failovers = FailoverPrinter()
    errors = ErrorPrinter(job_id)
    terminal = sys.stdout.isatty()
    poller = CoordinatorClient(cluster.address, timeout=POLL_TIMEOUT_S)
    failing_since: float | None = None
    while True:
        time.sleep(1.0)
        try:
            status = poller.status(job_id)
        except RpcError as exc:  # one slow or failed poll must not tear the cluster down
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > POLL_GIVE_UP_S:
                raise
            print(f"status poll failed ({exc}); still watching", file=sys.stderr, flush=True)
            continue
        failing_since = None
        now = time.monotonic()
        span = max(now - last_t, 1e-6)
        rate_in = (status["records_in"] - last_in) / span
        rate_out = (status["records_out"] - last_out) / span
        last_in, last_out, last_t = status["records_in"], status["records_out"], now
        _print_lines(failovers.new_lines(status["failovers"]) + errors.new_lines(status), terminal)
        line = progress_line(status, now - started, rate_in, rate_out)
        if terminal:  # rewritten in place: cut to the width, clear what a longer one left
            line = "\r" + fit(line, shutil.get_terminal_size().columns - 1) + "\x1b[K"
        else:  # a log file or a pipe: one line per update
            line += "\n"
        sys.stdout.write(line)
        sys.stdout.flush()
        if status["state"] in ("FINISHED", "FAILED", "CANCELED"):
            break
        if stop["now"] or (duration is not None and now - started >= duration):
            print("\ncanceling the job ..." if terminal else "canceling the job ...", flush=True)
            cluster.cancel(job_id)
            status = cluster.status(job_id)
            break
    _print_lines(failovers.new_lines(status["failovers"]) + errors.new_lines(status), terminal)
    print(("\n" if terminal else "") + f"job {job_id} {status['state']}" + (
        f": {status['failure_reason']}" if status.get("failure_reason") else ""
    ))  # fmt: skip
    return 1 if status["state"] == "FAILED" else 0


def _print_lines(lines: list[str], terminal: bool) -> None:
    """Print ``lines``: on a terminal below the progress line being rewritten (the next
    one starts below them), elsewhere simply one after the other."""
    if lines:
        sys.stdout.write(("\n" if terminal else "") + "\n".join(lines) + "\n")
        sys.stdout.flush()
