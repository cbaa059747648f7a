"""``GET /metrics`` during a real job: Prometheus text that moves as the job runs, and a
killed task that shows up as a failover, a recovery time and a new attempt."""

from __future__ import annotations

import time
import urllib.request
from collections import defaultdict

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamer.coordinator.metrics import METRICS
from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster
from tests.e2e.monitoring import TASKS, attempt_of, failover_done, start_job

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


def scrape(cluster: LocalCluster) -> tuple[str, Samples]:
    """The content type and every sample: name -> sorted labels -> value."""
    url = f"http://127.0.0.1:{cluster.status_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        content_type = resp.headers["Content-Type"]
        text = resp.read().decode()
    samples: Samples = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[s.name][tuple(sorted(s.labels.items()))] = s.value
    return content_type, samples


def per_task(samples: Samples, name: str, job_id: str) -> dict[str, float]:
    """``vertex#subtask`` -> value of ``name`` for the job's tasks."""
    out = {}
    for labels, value in samples[name].items():
        d = dict(labels)
        assert d["job"] == job_id
        out[f"{d['vertex']}#{d['subtask']}"] = value
    return out


def one(samples: Samples, name: str, **labels: str) -> float:
    want = tuple(sorted(labels.items()))
    return samples[name][want]


def test_metrics_move_with_the_job_and_count_a_failover(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder = start_job(cluster, kafka_bootstrap, kafka_topics)
    try:
        content_type, first = scrape(cluster)
        assert content_type.startswith("text/plain; version=0.0.4")
        time.sleep(2.0)
        _, second = scrape(cluster)

        # per task: counters move, labels name the job, vertex, subtask and worker
        for name in (
            "streamer_task_records_in_total",
            "streamer_task_records_out_total",
            "streamer_task_input_bytes_total",
            "streamer_task_output_bytes_total",
        ):
            before, after = per_task(first, name, job_id), per_task(second, name, job_id)
            assert sorted(after) == TASKS, name
            assert all(after[t] > before[t] for t in TASKS), (name, before, after)
        # data records only: a counter emits one record per input, read in one report
        ins = per_task(second, "streamer_task_records_in_total", job_id)
        outs = per_task(second, "streamer_task_records_out_total", job_id)
        assert all(ins[f"count#{i}"] == outs[f"count#{i}"] for i in range(4)), (ins, outs)
        workers = {dict(k)["worker"] for k in second["streamer_task_records_in_total"]}
        assert workers == {"w1", "w2"}
        assert per_task(second, "streamer_task_attempt", job_id) == dict.fromkeys(TASKS, 0)
        assert per_task(second, "streamer_task_running", job_id) == dict.fromkeys(TASKS, 1)
        ratios = per_task(second, "streamer_task_backpressure_ratio", job_id)
        assert sorted(ratios) == TASKS and all(0 <= r <= 1 for r in ratios.values())
        # event time: every task has a watermark, a few hundred ms behind the wall clock
        lags = per_task(second, "streamer_task_watermark_lag_seconds", job_id)
        assert sorted(lags) == TASKS and all(0 <= lag < 10 for lag in lags.values()), lags
        marks = per_task(second, "streamer_task_watermark_seconds", job_id)
        assert all(abs(marks[t] - time.time()) < 10 for t in TASKS)
        # queues: one gauge per input channel (count: 2 sources; sink: 4 counters)
        queues = second["streamer_task_input_queue_length"]
        channels = sorted((dict(k)["vertex"], dict(k)["channel"]) for k in queues)
        assert channels.count(("count", "0")) == 4 and channels.count(("sink", "3")) == 2
        assert len(channels) == 4 * 2 + 2 * 4
        # keyed state only where there is some: the counters
        keys = per_task(second, "streamer_task_state_keys", job_id)
        assert sorted(keys) == [f"count#{i}" for i in range(4)] and all(keys.values())
        assert all(per_task(second, "streamer_task_state_size_bytes", job_id).values())
        # consumer lag for each of the 8 source partitions, from the subtask owning it
        lag = second["streamer_source_partition_lag_records"]
        owners = sorted((dict(k)["partition"], dict(k)["subtask"]) for k in lag)
        assert owners == sorted((str(p), str(p % 2)) for p in range(8))
        assert all(0 <= v < 10_000 for v in lag.values())

        # per job: checkpoints complete; no failover yet
        done_1 = one(first, "streamer_job_checkpoints_total", job=job_id, outcome="completed")
        done_2 = one(second, "streamer_job_checkpoints_total", job=job_id, outcome="completed")
        assert done_2 > done_1 >= 1
        last_id = one(second, "streamer_job_last_checkpoint_id", job=job_id)
        assert last_id >= done_2  # ids count aborted checkpoints too
        assert one(second, "streamer_job_last_checkpoint_size_bytes", job=job_id) > 0
        assert 0 < one(second, "streamer_job_last_checkpoint_duration_seconds", job=job_id) < 30
        at = one(second, "streamer_job_last_checkpoint_timestamp_seconds", job=job_id)
        assert time.time() - 10 < at <= time.time()
        assert "streamer_job_failovers_total" not in second
        assert one(second, "streamer_job_failovers_in_progress", job=job_id) == 0
        info = second["streamer_job_info"]
        assert list(info) == [
            (
                ("job", job_id),
                ("name", "watermarked-count"),
                ("state", "RUNNING"),
                ("strategy", "individual"),
            )
        ]
        assert one(second, "streamer_job_tasks_running", job=job_id) == 8
        assert one(second, "streamer_job_kafka_reachable", job=job_id) == 1

        # per worker: slots and liveness
        for w in ("w1", "w2"):
            assert one(second, "streamer_worker_up", worker=w, host="127.0.0.1") == 1
            assert one(second, "streamer_worker_slots", worker=w, host="127.0.0.1") == 8
            age = one(second, "streamer_worker_heartbeat_age_seconds", worker=w, host="127.0.0.1")
            assert 0 <= age < 4
        used = sum(second["streamer_worker_slots_used"].values())
        assert used == 8

        # a kill: one failover, done, with its recovery time; the task's next attempt
        first_attempt = attempt_of(cluster.status(job_id), "count#1")
        cluster.kill_task(job_id, "count#1")
        status = cluster.wait_for(job_id, failover_done, what="failover done")
        record = status["failovers"][0]
        outcome = "fell_back" if record["fell_back"] else "done"
        _, third = scrape(cluster)
        assert third["streamer_job_failovers_total"] == {
            (("job", job_id), ("outcome", outcome), ("strategy", "individual")): 1.0
        }
        hist = {"job": job_id, "strategy": "individual", "outcome": outcome}
        assert one(third, "streamer_job_failover_recovery_seconds_count", **hist) == 1
        total = one(third, "streamer_job_failover_recovery_seconds_sum", **hist)
        assert total == pytest.approx(record["recovery_seconds"])
        assert one(third, "streamer_job_failover_recovery_seconds_bucket", le="+Inf", **hist) == 1
        assert one(third, "streamer_job_failover_recovery_seconds_bucket", le="60.0", **hist) == 1
        assert per_task(third, "streamer_task_attempt", job_id)["count#1"] == first_attempt + 1
    finally:
        feeder.stop()


def test_every_family_is_documented_and_named_by_the_conventions() -> None:
    for name, (kind, doc, labels) in METRICS.items():
        assert name.startswith("streamer_") and doc and labels
        assert not name.endswith("_total"), name  # the counter's _total is added
        assert kind in ("counter", "gauge", "histogram")
        if "seconds" in name or "bytes" in name:
            assert name.split("_")[-1] in ("seconds", "bytes"), name
