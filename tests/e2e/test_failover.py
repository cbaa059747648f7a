"""Failover end to end: a keyed job (source x2 -> count x4 -> sink x2) on two workers.

Real Kafka, real task processes, SIGKILL. Events are ``{"key", "seq"}``; the
counter emits ``{"key", "count", "seq", "task", "attempt", "at"}`` so the output
tells which task attempt produced each record and when.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import orjson
import pytest

from streamer.graph import subtask_for_key
from streamer.runtime.faults import FaultHooks
from streamer.testing import TopicFactory, read_topic
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]


KEYED = "examples.keyed_count:job"
ALL_TASKS = sorted(
    [f"events#{i}" for i in range(2)]
    + [f"count#{i}" for i in range(4)]
    + [f"sink#{i}" for i in range(2)]
)


def config(bootstrap: str, strategy: str, params: dict[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "individual_recovery": "lossy",  # these tests are about ByteDance's lossy protocol
        "bootstrap_servers": bootstrap,
        "metrics_interval": 0.5,
        "params": params,
        **extra,
    }


def start_keyed(
    cluster: LocalCluster,
    bootstrap: str,
    topics: TopicFactory,
    strategy: str,
    rate: float = 300.0,
    **extra: Any,
) -> tuple[str, EventFeeder, str]:
    src, out = topics.create(8), topics.create(4)
    job_id = cluster.submit(KEYED, config(bootstrap, strategy, {"in": src, "out": out}, **extra))
    cluster.wait_for(job_id, all_running, what="all tasks running")
    feeder = EventFeeder(bootstrap, src, rate=rate).start()
    cluster.wait_for(
        job_id, lambda s: _outputs_per_count_task(s) >= 4, what="output from every counter"
    )
    return job_id, feeder, out


def _outputs_per_count_task(status: Status) -> int:
    """How many count tasks have emitted something (from their output partitions)."""
    busy = 0
    for t in status["tasks"]:
        if t["vertex"] == "count":
            parts = t["metrics"].get("partitions", {})
            busy += any(p["records_out"] > 0 for p in parts.values())
    return busy


def failover_done(status: Status, n: int = 1) -> bool:
    f = status["failovers"]
    return len(f) >= n and f[n - 1]["status"] == "done"


def settle(cluster: LocalCluster, job_id: str, quiet: float = 2.0, timeout: float = 60.0) -> Status:
    """Wait until the sinks' output has not grown for ``quiet`` seconds."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        status = cluster.status(job_id)
        if status["records_out"] != last:
            last, since = status["records_out"], time.monotonic()
        elif time.monotonic() - since >= quiet:
            return status
        time.sleep(0.25)
    raise TimeoutError(f"output of {job_id} did not settle")


def outputs(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in read_topic(bootstrap, topic, idle=1.0)]  # type: ignore[arg-type]


def attempts(status: Status) -> dict[str, int]:
    return {t["task"]: t["attempt"] for t in status["tasks"]}


def by_key(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        out[r["key"]].append(r)
    return out


def test_individual_restarts_only_the_failed_task(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    # restart_delay stretches the outage to ~1 s so output during it can be seen
    job_id, feeder, out = start_keyed(
        cluster, kafka_bootstrap, kafka_topics, "individual", restart_delay=1.0
    )
    time.sleep(1.0)
    cluster.kill_task(job_id, "count#1")
    cluster.wait_for(
        job_id,
        lambda s: failover_done(s) and s["failovers"][0]["records_dropped"] is not None,
        what="failover done with its counts",
    )
    time.sleep(1.5)
    produced = feeder.stop()
    status = settle(cluster, job_id)

    assert attempts(status) == {t: (1 if t == "count#1" else 0) for t in ALL_TASKS}
    rec = status["failovers"][0]
    assert (rec["task"], rec["strategy"], rec["fell_back"]) == ("count#1", "individual", False)
    assert rec["tasks_restarted"] == ["count#1"]
    assert rec["cause"] == "process killed by signal 9"
    assert rec["kill_requested_at"] <= rec["detected_at"] <= rec["deployed_at"]
    assert rec["deployed_at"] <= rec["running_at"] <= rec["channels_updated_at"]
    assert rec["running_at"] - rec["detected_at"] >= 1.0  # the restart delay
    assert rec["records_dropped"] > 0  # records routed to count#1 while it was down
    assert rec["records_cleared"] >= 0

    records = outputs(kafka_bootstrap, out)
    keys = by_key(records)
    for key, recs in keys.items():
        assert {r["task"] for r in recs} == {subtask_for_key(key, 128, 4)}  # key groups hold

    # the surviving tasks kept producing during the outage, the failed one did not
    outage = [r for r in records if rec["detected_at"] < r["at"] < rec["running_at"]]
    assert {r["task"] for r in outage} == {0, 2, 3}
    assert len(outage) >= 100

    # the failed task's key groups resume on attempt 1
    resumed = [r for r in records if r["task"] == 1 and r["attempt"] == 1]
    assert resumed and min(r["at"] for r in resumed) >= rec["running_at"]

    # no other task lost or duplicated anything: every (key, seq) exactly once, counts exact
    lost_for_failed = 0
    for key, n in produced.items():
        recs = keys.get(key, [])
        if subtask_for_key(key, 128, 4) != 1:
            assert sorted(r["seq"] for r in recs) == list(range(n)), key
            assert sorted(r["count"] for r in recs) == list(range(1, n + 1)), key
        else:
            seqs = [r["seq"] for r in recs]
            assert len(seqs) == len(set(seqs)), key  # never duplicated
            # without checkpoints attempt 1 starts empty: its last count is what it kept
            final = max((r["count"] for r in recs if r["attempt"] == 1), default=0)
            lost_for_failed += n - final
    # the loss record is exact: everything routed to count#1 before attempt 1 took over
    assert lost_for_failed == rec["records_dropped"]


def test_region_restart_of_an_all_to_all_job_restarts_every_task(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder, _out = start_keyed(cluster, kafka_bootstrap, kafka_topics, "region")
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(job_id, failover_done, what="failover done")
    feeder.stop()
    assert attempts(status) == dict.fromkeys(ALL_TASKS, 1)
    rec = status["failovers"][0]
    assert rec["strategy"] == "region"
    assert rec["tasks_restarted"] == ALL_TASKS
    cluster.wait_for(job_id, all_running, what="all running again")


def test_region_restart_of_independent_pipelines_restarts_only_one(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    t = {name: kafka_topics.create(2) for name in ("inA", "outA", "inB", "outB")}
    job_id = cluster.submit("tests.e2e.jobs:two_pipelines", config(kafka_bootstrap, "region", t))
    cluster.wait_for(job_id, all_running, what="all tasks running")
    cluster.kill_task(job_id, "countA#0")
    status = cluster.wait_for(job_id, failover_done, what="failover done")
    pipeline_a = sorted(f"{v}A#{i}" for v in ("events", "count") for i in range(2))
    assert status["failovers"][0]["tasks_restarted"] == pipeline_a
    assert {k: v for k, v in attempts(status).items()} == {
        **{task: 1 for task in pipeline_a},
        **{f"{v}B#{i}": 0 for v in ("events", "count") for i in range(2)},
    }


def test_full_restart_restarts_every_task(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder, _out = start_keyed(cluster, kafka_bootstrap, kafka_topics, "full")
    cluster.kill_task(job_id, "count#2")
    status = cluster.wait_for(job_id, failover_done, what="failover done")
    feeder.stop()
    assert attempts(status) == dict.fromkeys(ALL_TASKS, 1)
    assert status["failovers"][0]["tasks_restarted"] == ALL_TASKS
    assert status["failovers"][0]["strategy"] == "full"


@pytest.mark.parametrize(
    "cluster",
    [FaultHooks(never_ack_channel_update=frozenset({"sink#0"}))],
    indirect=True,
    ids=["never_ack_channel_update"],
)
def test_unacknowledged_channel_update_falls_back_to_a_region_restart(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder, _out = start_keyed(
        cluster,
        kafka_bootstrap,
        kafka_topics,
        "individual",
        channel_update_timeout=1.0,
    )
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(job_id, failover_done, what="failover done")
    feeder.stop()
    rec = status["failovers"][0]
    assert rec["fell_back"] is True
    assert rec["fallback_reason"] == "channel updates not acknowledged within 1 s"
    assert rec["tasks_restarted"] == ALL_TASKS
    assert rec["fallback_at"] - rec["deployed_at"] >= 1.0  # it waited for the acks first
    assert rec["channels_updated_at"] >= rec["fallback_at"]
    expected = {t: 1 for t in ALL_TASKS} | {"count#1": 2}  # individual, then the region
    assert attempts(status) == expected


def test_losing_a_worker_redeploys_its_tasks_on_the_other(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder, _out = start_keyed(cluster, kafka_bootstrap, kafka_topics, "individual")
    before = cluster.status(job_id)
    on_w1 = sorted(t["task"] for t in before["tasks"] if t["worker"] == "w1")
    assert on_w1, "the scheduler spreads tasks over both workers"
    cluster.kill_worker("w1")
    status = cluster.wait_for(
        job_id,
        lambda s: (
            len(s["failovers"]) >= len(on_w1)
            and all(f["status"] == "done" for f in s["failovers"])
            and all_running(s)
        ),
        what="every task of w1 recovered",
    )
    feeder.stop()
    assert sorted(f["task"] for f in status["failovers"]) == on_w1
    for t in status["tasks"]:
        assert t["worker"] == "w2"
        assert t["attempt"] == (1 if t["task"] in on_w1 else 0)


def test_failure_limits_fail_the_job_without_a_restart_storm(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(8), kafka_topics.create(4)
    job_id = cluster.submit(
        KEYED,
        config(
            kafka_bootstrap,
            "individual",
            {"in": src, "out": out, "fail_on": "*"},
            max_failures_per_task=2,
            max_total_failures=5,
            restart_delay=0.2,
        ),
    )
    cluster.wait_for(job_id, all_running, what="all tasks running")
    feeder = EventFeeder(kafka_bootstrap, src, rate=100).start()
    status = cluster.wait_for(job_id, lambda s: s["state"] == "FAILED", what="job FAILED")
    feeder.stop()
    reason = status["failure_reason"]
    assert (
        "more than max_failures_per_task=2" in reason or "more than max_total_failures=5" in reason
    )
    assert "last failure: exception: ValueError: poison event for key" in reason
    assert len(status["failovers"]) <= 6  # the limit stopped it: at most total + 1 failures
    assert status["failovers"][-1]["status"] == "job_failed"
    failed = next(t for t in status["tasks"] if t["error"])
    assert failed["error"].startswith("ValueError: poison event for key")
    time.sleep(1.0)
    assert len(cluster.status(job_id)["failovers"]) == len(status["failovers"])  # no more
    states = {t["task"]: t["state"] for t in status["tasks"]}
    assert set(states.values()) <= {"CANCELED", "FAILED", "FINISHED"}, states


def test_source_and_sink_tasks_recover(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder, _out = start_keyed(cluster, kafka_bootstrap, kafka_topics, "individual")
    cluster.kill_task(job_id, "events#0")
    cluster.wait_for(job_id, failover_done, what="source failover done")
    cluster.kill_task(job_id, "sink#1")
    status = cluster.wait_for(job_id, lambda s: failover_done(s, 2), what="sink failover done")
    assert attempts(status) == {t: (1 if t in ("events#0", "sink#1") else 0) for t in ALL_TASKS}
    assert [f["tasks_restarted"] for f in status["failovers"]] == [["events#0"], ["sink#1"]]

    def new_attempts_working(s: Status) -> bool:
        tasks = {t["task"]: t for t in s["tasks"]}
        return (
            tasks["events#0"]["metrics"].get("source", {}).get("records_in", 0) > 0
            and tasks["sink#1"]["metrics"].get("sink", {}).get("records_out", 0) > 0
        )

    cluster.wait_for(job_id, new_attempts_working, what="new attempts read and write")
    feeder.stop()


def test_a_failure_during_the_restart_delay_joins_the_pending_region_restart(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Two tasks die within the restart delay: one region restart, not two."""
    job_id, feeder, _out = start_keyed(
        cluster, kafka_bootstrap, kafka_topics, "region", restart_delay=1.0
    )
    cluster.kill_task(job_id, "count#0")
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(
        job_id,
        lambda s: (
            len(s["failovers"]) == 2
            and [f["status"] for f in s["failovers"]] == ["done", "superseded"]
            and all_running(s)
        ),
        what="one region restart for both failures",
    )
    time.sleep(1.5)  # the superseded failure must not restart anything later either
    feeder.stop()
    status = cluster.status(job_id)
    assert [f["task"] for f in status["failovers"]] == ["count#0", "count#1"]
    assert status["failovers"][0]["tasks_restarted"] == ALL_TASKS
    assert attempts(status) == dict.fromkeys(ALL_TASKS, 1)
