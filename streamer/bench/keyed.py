"""The keyed count (``examples.keyed_count``) at max rate, and its latency at half load.

Both run the job as shipped (events x2 -hash-> count x4 -rebalance-> sink x2, the
default recovery settings) on a fresh ``LocalCluster`` (2 workers) per run, with a
checkpoint every second and the sink's ``delivery`` as asked.

``max_rate``: over a preloaded topic of N events (8 partitions; the same topic for
every run), the count tasks' progress (metrics every 0.25 s, as
``bench/recovery_overhead.py`` reads them) is polled every 50 ms with the tasks' CPU
time; rate and CPU are taken between 10% and 90% of the events counted. CPU per
record: the CPU time of the job's task processes (``/proc/<pid>/stat`` of the pids
in the job's status, each checked to be a process below one of the cluster's
workers) over that stretch, divided by the events counted in it.

``latency``: a fresh input topic is fed at a fixed rate by ``loadgen feed`` while
``loadgen read`` reads the output from the start (at-least-once: read_uncommitted;
exactly-once: read_committed, so a result counts when its transaction committed).
Latency = receive time - the produce time of the event whose ``seq`` the result
carries; ``to_kafka`` = the result's Kafka timestamp (the sink's produce call) -
the same. The first ``WARMUP`` of the events are left out (connections, the first
checkpoint). The input topic is ``LogAppendTime``: a source record's timestamp is
when the broker appended it, so with ``trace_dir`` (the tasks record where the time
goes: ``streamer.runtime.latency_trace``, read by ``streamer.bench.breakdown``) the
feeder's and the broker's share is split from the job's. ``cpu_pressure`` is the
share of the feed's wall time in which some runnable task on the machine waited
for a CPU (``/proc/pressure/cpu``): on a shared 2-core machine it is what makes
the broker's produce round trips, and so every stage, take seconds.

``broker_alone``: the control for ``latency``: the same feeder at the same rate
into a ``LogAppendTime`` topic and the same reader on that topic, no job: what the
broker and the load tools alone give on the machine at that moment.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from streamer.bench.loadgen import Child, load_array
from streamer.bench.procstat import cpu_pressure, task_pids, total_cpu
from streamer.bench.timeline import percentile

KEYED_COUNT = "examples.keyed_count:job"
DELIVERIES = ("at_least_once", "exactly_once")
WARMUP = 0.1  # the share of a latency run's events left out
APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}  # the latency runs' input topic
STEADY = (0.1, 0.9)  # the max rate is measured between these shares of the events counted


def job_config(bootstrap: str, work: Path, src: str, out: str, delivery: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": bootstrap,
        "metrics_interval": 0.25,
        "checkpoint_interval": 1.0,
        "checkpoint_dir": str(work / "checkpoints"),
        "params": {"in": src, "out": out, "delivery": delivery},
    }


def counted(status: dict[str, Any]) -> int:
    return sum(
        int(t["metrics"].get("records_processed", 0))
        for t in status["tasks"]
        if t["vertex"] == "count"
    )


def max_rate(bootstrap: str, src: str, records: int, delivery: str, repo: Path) -> dict[str, Any]:
    """Records/s and CPU per record of the keyed count over ``records`` preloaded events.

    ``rate`` and ``cpu_per_record_us`` are over the steady middle: from the first
    status with ``STEADY[0]`` of the events counted to the first with ``STEADY[1]``
    (the tasks' start and the tail are left out; the metrics' reporting delay is the
    same at both ends). ``overall_rate``: from every task running to every event
    counted (from the submission when the job counted everything before its last task
    reported running). A run too short to see the middle (``steady`` False) uses the
    overall figures."""
    from streamer.local.cluster import LocalCluster, all_running
    from streamer.testing import TopicFactory

    lo, hi = int(records * STEADY[0]), int(records * STEADY[1])
    with (
        TopicFactory(bootstrap, prefix="bench-count") as topics,
        tempfile.TemporaryDirectory(prefix="bench-count-") as work,
    ):
        out = topics.create(4)
        with LocalCluster(2, slots=8, work_dir=Path(work), cwd=repo) as cluster:
            config = job_config(bootstrap, Path(work), src, out, delivery)
            submitted = time.perf_counter()
            job_id = cluster.submit(KEYED_COUNT, config)
            status = cluster.wait_for(job_id, all_running, timeout=120, what="all running")
            workers = [p.pid for p in cluster.workers.values()]
            pids = list(task_pids(status, workers).values())
            marks = [(time.perf_counter(), counted(status), total_cpu(pids))]
            first: tuple[float, int, float | None] | None = None
            deadline = time.monotonic() + 900
            while marks[-1][1] < records:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"keyed count: {marks[-1][1]} of {records} in 900 s")
                time.sleep(0.05)
                n = counted(cluster.status(job_id))
                marks.append((time.perf_counter(), n, total_cpu(pids)))
                if first is None and lo <= n < hi and len(marks) > 2:
                    first = marks[-1]
            last = next((m for m in marks if m[1] >= hi), marks[-1])
    start, end = marks[0], marks[-1]
    if end[0] <= start[0]:  # all counted before every task ran: from the submission then
        start = (submitted, 0, start[2])
    steady = first is not None and last[1] > first[1] and last[0] > first[0]
    a, b = (first, last) if steady and first is not None else (start, end)
    cpu = None if a[2] is None or b[2] is None else b[2] - a[2]
    n = b[1] - a[1]
    return {
        "delivery": delivery,
        "records": records,
        "steady": steady,
        "rate": (n if n > 0 else records) / (b[0] - a[0]),
        "overall_rate": records / (end[0] - start[0]),
        "seconds": end[0] - start[0],
        "tasks": len(pids),
        "cpu_s": cpu,
        "cpu_per_record_us": None if cpu is None or n <= 0 else cpu / n * 1e6,
    }


def latency(
    bootstrap: str,
    rate: float,
    seconds: float,
    delivery: str,
    repo: Path,
    trace_dir: Path | None = None,
) -> dict[str, Any]:
    """End-to-end latency of the keyed count fed at ``rate`` events/s for ``seconds``."""
    from streamer.local.cluster import LocalCluster, all_running
    from streamer.runtime.latency_trace import ENV_VAR
    from streamer.testing import TopicFactory

    count = max(1, int(rate * seconds))
    isolation = "read_committed" if delivery == "exactly_once" else "read_uncommitted"
    env = {} if trace_dir is None else {ENV_VAR: str(trace_dir)}
    with (
        TopicFactory(bootstrap, prefix="bench-latency") as topics,
        tempfile.TemporaryDirectory(prefix="bench-latency-") as work_dir,
    ):
        work = Path(work_dir)
        src, out = topics.create(8, config=APPEND_TIME), topics.create(4)
        with LocalCluster(2, slots=8, work_dir=work, cwd=repo, env=env) as cluster:
            job_id = cluster.submit(KEYED_COUNT, job_config(bootstrap, work, src, out, delivery))
            cluster.wait_for(job_id, all_running, timeout=120, what="all running")
            fed, got, pressure = feed_and_read(
                bootstrap, src, out, count, rate, seconds, isolation, work
            )
        measured = latencies(work / "times", work / "out", count)
        if trace_dir is not None:
            from streamer.bench.breakdown import from_run

            measured["breakdown"] = from_run(trace_dir, work, count, WARMUP)
    return {
        "delivery": delivery,
        "rate": rate,
        "seconds": seconds,
        "cpu_pressure": pressure,
        **fed,
        **got,
        **measured,
    }


def broker_alone(bootstrap: str, rate: float, seconds: float) -> dict[str, Any]:
    """``latency``'s feeder and reader with no job between them (one topic of 8
    partitions); ``to_kafka`` is then produce -> the broker's append."""
    from streamer.testing import TopicFactory

    count = max(1, int(rate * seconds))
    with (
        TopicFactory(bootstrap, prefix="bench-broker") as topics,
        tempfile.TemporaryDirectory(prefix="bench-broker-") as work_dir,
    ):
        work = Path(work_dir)
        topic = topics.create(8, config=APPEND_TIME)
        fed, got, pressure = feed_and_read(
            bootstrap, topic, topic, count, rate, seconds, "read_uncommitted", work
        )
        measured = latencies(work / "times", work / "out", count)
    return {"rate": rate, "seconds": seconds, "cpu_pressure": pressure, **fed, **got, **measured}


def feed_and_read(
    bootstrap: str,
    src: str,
    out: str,
    count: int,
    rate: float,
    seconds: float,
    isolation: str,
    work: Path,
) -> tuple[dict[str, Any], dict[str, Any], float | None]:
    """Feed ``count`` records into ``src`` at ``rate`` while a reader takes them from
    ``out`` (``work/times``, ``work/out.*``); returns what the feeder and the reader
    said and the CPU pressure during the feed (share of time a task waited for a CPU,
    None where the kernel does not say). Both children are stopped, always."""
    reader = Child(
        "streamer.bench.loadgen",
        ["read", "--bootstrap", bootstrap, "--topic", out, "--count", str(count),
         "--isolation", isolation, "--timeout", str(seconds * 2 + 60),
         "--out", str(work / "out")],
    )  # fmt: skip
    feeder: Child | None = None
    try:
        reader.wait_line("ready")
        feeder = Child(
            "streamer.bench.loadgen",
            ["feed", "--bootstrap", bootstrap, "--topic", src, "--count", str(count),
             "--rate", str(rate), "--times", str(work / "times")],
        )  # fmt: skip
        stalled, wall = cpu_pressure(), time.monotonic()
        fed = feeder.result(timeout=seconds * 3 + 60)
        stalled_end = cpu_pressure()
        pressure = None if stalled is None or stalled_end is None else (
            (stalled_end - stalled) / (time.monotonic() - wall)
        )  # fmt: skip
        got = reader.result(timeout=seconds * 2 + 90)
    finally:
        for child in (feeder, reader):
            if child is not None:
                child.stop()
    return fed, got, pressure


def latencies(times_path: Path, out_prefix: Path, count: int) -> dict[str, Any]:
    """p50/p99 (ms) of receive - produce and of Kafka timestamp - produce, by ``seq``,
    past the warm-up; and how many results were missing or repeated."""
    produced = load_array(times_path, "d")
    seqs = load_array(f"{out_prefix}.seq", "q")
    recv, kts = load_array(f"{out_prefix}.recv", "d"), load_array(f"{out_prefix}.kts", "d")
    first = int(count * WARMUP)
    e2e: list[float] = []
    to_kafka: list[float] = []
    seen: set[int] = set()
    repeated = 0
    for seq, r, k in zip(seqs, recv, kts, strict=True):
        if seq in seen:
            repeated += 1
            continue
        seen.add(seq)
        if first <= seq < len(produced):
            e2e.append((r - produced[seq]) * 1000)
            to_kafka.append((k - produced[seq]) * 1000)

    def pct(values: list[float]) -> dict[str, float | None]:
        return {"p50_ms": percentile(values, 0.5), "p99_ms": percentile(values, 0.99)}

    return {
        "results": len(seen),
        "missing": count - len(seen),
        "repeated": repeated,
        "measured": len(e2e),
        **pct(e2e),
        "to_kafka": pct(to_kafka),
        "max_ms": max(e2e, default=None),
    }
