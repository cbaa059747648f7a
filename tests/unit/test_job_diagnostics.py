"""What the coordinator keeps of its tasks' errors, logs and Kafka reachability, what a
task process records, and what is unrecoverable because Kafka cannot be reached."""

from __future__ import annotations

import logging
import re
import time
from typing import Any

import pytest
from confluent_kafka import Consumer

from streamer.api import StreamEnvironment
from streamer.connectors.health import KafkaHealth, all_health, clean_error
from streamer.coordinator.diagnostics import KEEP, JobDiagnostics
from streamer.coordinator.execution import ExecutionStore
from streamer.coordinator.failover import FailoverHandler, Recovery
from streamer.graph import ExecutionGraph, TaskId
from streamer.rpc import TaskState
from streamer.runtime.diagnostics import ErrorRecorder, log_location


def ident(x: Any) -> Any:
    return x


def graph() -> ExecutionGraph:
    env = StreamEnvironment("diag", default_parallelism=2)
    env.from_kafka("in", name="src").key_by(ident).process(ident, name="mid").to_kafka("out")
    return env.build().execution_graph()


def store(eg: ExecutionGraph) -> ExecutionStore:
    tasks = ExecutionStore(eg)
    for task in eg.tasks:
        tasks.deploying(task, "w1")
        tasks.transition(task, TaskState.RUNNING)
    return tasks


def client(role: str, down_for: float | None, error: str | None = None) -> dict[str, Any]:
    return {
        "role": role,
        "bootstrap": "127.0.0.1:9",
        "reachable": down_for is None,
        "unreachable_s": down_for,
        "last_error": error,
    }


SRC0, SRC1, MID0 = TaskId("src", 0), TaskId("src", 1), TaskId("mid", 0)


def test_errors_of_every_attempt_are_kept_with_the_failure_and_its_traceback() -> None:
    eg = graph()
    tasks = store(eg)
    diag = JobDiagnostics(tasks)
    now = time.time()
    warning = {"time": now - 9, "last_time": now - 8, "count": 3, "level": "WARNING",
               "logger": "netlayer", "text": "channel 0 lost"}  # fmt: skip
    diag.on_metrics(MID0, {"recent_errors": [warning], "log_file": "/w/j/mid-0.attempt0.log",
                           "host": "h1"})  # fmt: skip
    diag.on_metrics(MID0, {"recent_errors": [{**warning, "count": 4, "last_time": now - 7}]})
    cause = diag.on_failure(MID0, 0, "exception: ValueError: bad", "Traceback ...\nValueError: bad")
    assert cause == "exception: ValueError: bad"
    tasks.failed(MID0)
    tasks.new_attempt(MID0)
    tasks.deploying(MID0, "w1")
    errors = diag.recent_errors(MID0)
    assert [(e["attempt"], e["logger"], e["count"], e["text"]) for e in errors] == [
        (0, "netlayer", 4, "channel 0 lost"),  # the same entry, its count updated
        (0, "coordinator", 1, "attempt 0 failed: exception: ValueError: bad"),
    ]
    assert errors[1]["traceback"] == "Traceback ...\nValueError: bad"
    for i in range(KEEP + 5):
        diag.on_metrics(
            MID0, {"recent_errors": [{**warning, "text": f"e{i}", "last_time": now + 9 + i}]}
        )
    assert len(diag.recent_errors(MID0)) == KEEP
    assert diag.recent_errors(MID0)[-1]["text"] == f"e{KEEP + 4}"


def test_an_attempt_that_never_reported_is_placed_next_to_its_worker_twin() -> None:
    eg = graph()
    tasks = store(eg)
    diag = JobDiagnostics(tasks)
    diag.on_metrics(MID0, {"log_file": "/w/w1/job/mid-0.attempt0.log", "host": "h1"})
    diag.on_failure(MID0, 0, "process killed by signal 9", None)
    tasks.failed(MID0)
    tasks.new_attempt(MID0)
    tasks.deploying(MID0, "w1")
    diag.on_failure(MID0, 1, "process killed by signal 9", None)  # died before reporting
    assert diag.logs(MID0) == [
        {"attempt": 0, "worker": "w1", "host": "h1", "path": "/w/w1/job/mid-0.attempt0.log"},
        {"attempt": 1, "worker": "w1", "host": "h1", "path": "/w/w1/job/mid-0.attempt1.log"},
    ]
    assert diag.logs(SRC0) == []


def test_an_attempt_s_log_is_known_from_its_deploy_before_it_reports() -> None:
    eg = graph()
    tasks = store(eg)
    diag = JobDiagnostics(tasks)
    diag.on_deployed(MID0, "/w/w1/job/mid-0.attempt0.log")
    assert diag.logs(MID0) == [
        {"attempt": 0, "worker": "w1", "host": None, "path": "/w/w1/job/mid-0.attempt0.log"}
    ]
    diag.on_metrics(MID0, {"log_file": "/w/w1/job/mid-0.attempt0.log", "host": "h1"})
    assert diag.logs(MID0)[0]["host"] == "h1"  # its first report names the host


def test_kafka_unreachable_for_the_timeout_fails_the_job_and_marks_failures() -> None:
    eg = graph()
    tasks = store(eg)
    diag = JobDiagnostics(tasks, kafka_timeout=30)
    refused = "Connect to ipv4#127.0.0.1:9 failed: Connection refused"
    assert diag.on_metrics(SRC0, {"kafka": [client("source in", None)]}) is None
    assert diag.kafka_summary() == {"reachable": True}
    assert diag.on_metrics(SRC1, {"kafka": [client("source in", 12.0, refused)]}) is None
    summary = diag.kafka_summary()
    assert summary["reachable"] is False and summary["tasks"] == ["src#1"]
    assert summary["roles"] == ["source in"] and summary["last_error"] == refused
    assert 12.0 <= summary["unreachable_s"] < 13.0
    reason = diag.on_metrics(SRC1, {"kafka": [client("source in", 30.0, refused)]})
    assert reason == (
        "src#1 cannot reach Kafka at 127.0.0.1:9 for 30 s (kafka_timeout 30 s; last error: "
        f"{refused}): start the broker or fix bootstrap_servers, then run the job again"
    )
    assert JobDiagnostics(tasks, kafka_timeout=None).kafka_outage() is None
    cause = diag.on_failure(SRC1, 0, "process exited with 1", None)
    assert re.fullmatch(
        r"process exited with 1; it cannot reach Kafka at 127\.0\.0\.1:9 for 3\d s "
        rf"\(source in: {refused}\)",
        cause,
    ), cause
    assert diag.on_failure(SRC0, 0, "process killed by signal 9", None) == (
        "process killed by signal 9"
    )


def test_a_failure_that_cannot_reach_kafka_is_not_restarted() -> None:
    eg = graph()
    handler = FailoverHandler(eg, {"strategy": "individual"})
    cause = "exception: ConnectorError: cannot reach Kafka at 127.0.0.1:9 within 15 s"
    plan = handler.plan(SRC0, cause, time.monotonic())
    assert plan.recovery == Recovery.UNRECOVERABLE and plan.tasks == frozenset()
    assert (
        plan.reason
        == f"src#0 failed: {cause} (not restarted: a new attempt cannot reach it either)"
    )
    other = handler.plan(SRC0, "process killed by signal 9", time.monotonic())
    assert other.recovery == Recovery.INDIVIDUAL


def test_the_recorder_keeps_distinct_warnings_with_counts_and_tracebacks() -> None:
    recorder = ErrorRecorder(keep=3)
    logger = logging.getLogger("test.diag")
    logger.addHandler(recorder)
    logger.propagate = False
    try:
        for port in (1, 2, 3):
            logger.warning("connect to 127.0.0.1:%d failed", port)  # digits aside: one entry
        logger.info("not kept")
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("task failed")
        logging.getLogger("streamer.kafka.client.x").addHandler(recorder)
        logging.getLogger("streamer.kafka.client.x").error("librdkafka's own line: left out")
        for i in range(3):
            logger.error("error %s", "abc"[i])
    finally:
        logger.removeHandler(recorder)
        logging.getLogger("streamer.kafka.client.x").removeHandler(recorder)
    entries = recorder.snapshot()
    assert [(e["text"], e["count"], e["level"]) for e in entries] == [
        ("error a", 1, "ERROR"),
        ("error b", 1, "ERROR"),
        ("error c", 1, "ERROR"),
    ]
    recorder = ErrorRecorder()
    logger.addHandler(recorder)
    try:
        for port in (1, 2, 3):
            logger.warning("connect to 127.0.0.1:%d failed", port)
        try:
            raise ValueError("bad")
        except ValueError:
            logger.exception("task failed")
    finally:
        logger.removeHandler(recorder)
    first, failed = recorder.take_changes()
    assert recorder.take_changes() == []  # a report carries what changed since the last
    logger.addHandler(recorder)
    logger.warning("connect to 127.0.0.1:4 failed")
    logger.removeHandler(recorder)
    assert [(e["text"], e["count"]) for e in recorder.take_changes()] == [
        ("connect to 127.0.0.1:1 failed", 4)
    ]
    assert len(recorder.snapshot()) == 2
    assert (first["text"], first["count"], first["logger"]) == (
        "connect to 127.0.0.1:1 failed",
        3,
        "test.diag",
    )
    assert failed["text"] == "task failed" and failed["traceback"].endswith("ValueError: bad\n")
    assert ErrorRecorder.install() is ErrorRecorder.install()


def test_a_client_of_a_refused_broker_is_unreachable_at_once() -> None:
    health = KafkaHealth("source t", "127.0.0.1:1")
    consumer = Consumer(
        {"bootstrap.servers": "127.0.0.1:1", "group.id": "g", "log_level": 0,
         **health.callbacks()}
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 5
        while health.snapshot()["reachable"] and time.monotonic() < deadline:
            consumer.poll(0.1)
    finally:
        consumer.close()
    snap = health.snapshot()
    assert snap["reachable"] is False and snap["unreachable_s"] is not None
    assert snap["last_error"] == "Connect to ipv4#127.0.0.1:1 failed: Connection refused"
    assert health in all_health()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("h:1/bootstrap: Connect to ipv4#h:1 failed: Connection refused (after 0ms in state "
         "CONNECT, 1 identical error(s) suppressed)",
         "Connect to ipv4#h:1 failed: Connection refused"),
        ("h:1/3: Disconnected (after 17219ms in state UP)", "Disconnected"),
        ("1/1 brokers are down", "1/1 brokers are down"),
    ],
)  # fmt: skip
def test_clean_error(raw: str, clean: str) -> None:
    assert clean_error(raw) == clean


def test_log_location_is_a_regular_file_or_none(tmp_path: Any) -> None:
    path = tmp_path / "x.log"
    with path.open("w") as f:
        assert log_location(f.fileno()) == str(path)
    assert log_location(99999) is None
