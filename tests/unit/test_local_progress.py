"""What `streamer run` prints: each failover once, when it ends, in any order."""

from __future__ import annotations

from typing import Any

from streamer.local.progress import (
    ErrorPrinter,
    FailoverPrinter,
    describe_failover,
    fit,
    progress_line,
)


def failover(fid: int, task: str, status: str = "done", **extra: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": fid,
        "task": task,
        "cause": "process killed by signal 9",
        "strategy": "individual",
        "detected_at": 100.0,
        "kill_requested_at": None,
        "deployed_at": 100.009,
        "running_at": 100.027,
        "channels_updated_at": 100.035,
        "tasks_restarted": [task],
        "fell_back": False,
        "status": status,
    }
    record.update(extra)
    return record


def test_a_failover_is_printed_once_when_it_ends() -> None:
    printer = FailoverPrinter()
    assert printer.new_lines([failover(1, "count#2", "in_progress")]) == []
    lines = printer.new_lines([failover(1, "count#2")])
    assert lines == [
        "failover 1: count#2 (process killed by signal 9) individual: detected 0 ms, "
        "deployed 9 ms, running 27 ms, channels updated 35 ms; restarted 1 task(s)"
    ]
    assert printer.new_lines([failover(1, "count#2")]) == []


def test_overlapping_failovers_all_print_in_the_order_they_end() -> None:
    """20 overlapping restarts: the old loop stopped at the first one in progress."""
    printer = FailoverPrinter()
    printed: list[str] = []
    statuses = ["in_progress"] * 20
    for ending in [*range(19, 0, -2), *range(0, 20, 2)]:  # odd ids end first, backwards
        statuses[ending] = "done"
        records = [failover(i + 1, f"count#{i}", s) for i, s in enumerate(statuses)]
        printed += printer.new_lines(records)
    tasks = [line.split()[2] for line in printed]
    assert len(tasks) == 20 and len(set(tasks)) == 20
    assert tasks[:3] == ["count#19", "count#17", "count#15"]
    assert tasks[10:13] == ["count#0", "count#2", "count#4"]


def test_every_ending_status_prints_and_says_so_unless_done() -> None:
    printer = FailoverPrinter()
    lines = printer.new_lines(
        [
            failover(1, "a#0", "in_progress"),
            failover(2, "b#0", "superseded", deployed_at=None, running_at=None, superseded_by=5),
            failover(3, "c#0", "job_failed"),
            failover(4, "d#0", "job_ended"),
            failover(5, "e#0", "done"),
        ]
    )
    assert [line.split(":")[0] for line in lines] == [f"failover {i}" for i in (2, 3, 4, 5)]
    assert lines[0].endswith("deployed -, running -, channels updated 35 ms; "
                             "restarted 1 task(s) (superseded by failover 5)")  # fmt: skip
    assert lines[1].endswith(" (job_failed)")
    assert lines[2].endswith(" (job_ended)")
    assert lines[3].endswith("restarted 1 task(s)")


def test_failovers_are_told_apart_by_id_not_position() -> None:
    printer = FailoverPrinter()
    assert len(printer.new_lines([failover(7, "a#0")])) == 1
    # the same failover at another position is not printed again; a new id is
    lines = printer.new_lines([failover(6, "b#0"), failover(7, "a#0")])
    assert [line.split()[2] for line in lines] == ["b#0"]


def test_records_without_an_id_are_told_apart_by_position() -> None:
    printer = FailoverPrinter()
    first = failover(1, "a#0")
    del first["id"]
    assert printer.new_lines([first]) == [f"failover: {describe_failover(first)}"]
    assert printer.new_lines([first]) == []


def test_timings_count_from_the_kill_request_and_show_a_fallback() -> None:
    f = failover(
        1,
        "join#3",
        kill_requested_at=99.995,
        fell_back=True,
        fallback_reason="no channel update ack within 10 s",
    )
    text = describe_failover(f)
    assert text.startswith("join#3 (process killed by signal 9) individual: detected 5 ms, ")
    assert text.endswith("restarted 1 task(s), fell back: no channel update ack within 10 s")


def test_progress_line() -> None:
    status = {
        "state": "RUNNING",
        "tasks": [{"state": "RUNNING"}, {"state": "DEPLOYING"}],
        "failovers": [failover(1, "count#2", recovery_seconds=0.035)],
    }
    assert progress_line(status, 12.04, 400.0, 399.6) == (
        "[   12.0s] RUNNING   tasks 1/2 running  in      400/s  out      400/s  "
        "lag        -  back-pressure   0%  failovers 1 (last: count#2 individual, 35 ms)"
    )
    status["failovers"] = [failover(1, "count#2", "in_progress")]
    assert progress_line(status, 1.0, 0.0, 0.0).endswith("(last: count#2 individual, in progress)")


def kafka_client(role: str, reachable: bool = True) -> dict[str, Any]:
    return {"role": role, "bootstrap": "127.0.0.1:9", "reachable": reachable}


def test_progress_line_says_kafka_is_unreachable_and_shows_lag_and_backpressure() -> None:
    def task(name: str, role: str, ratio: float, lag: dict[str, int] | None = None) -> Any:
        metrics: dict[str, Any] = {"backpressure": {"ratio": ratio}, "kafka": [kafka_client(role)]}
        if lag is not None:
            metrics["source"] = {"lag": lag}
        return {"task": name, "state": "RUNNING", "metrics": metrics}

    status: dict[str, Any] = {
        "state": "RUNNING",
        "tasks": [
            task("events#0", "source events", 0.0, {"0": 1200, "2": 4}),
            task("events#1", "source events", 0.0, {"1": 0}),
            {"task": "count#0", "state": "RUNNING", "metrics": {"backpressure": {"ratio": 0.35}}},
            task("sink#0", "sink counts", 0.0),
        ],
        "failovers": [],
        "kafka": {"reachable": False, "unreachable_s": 14.26, "tasks": ["events#1", "sink#0"]},
    }
    assert progress_line(status, 42.0, 0.0, 0.0) == (
        "[   42.0s] RUNNING   tasks 4/4 running  Kafka unreachable for 14 s (sources 1/2, "
        "sinks 1/1)  in        0/s  out        0/s  lag    1,204  back-pressure  35% count#0  "
        "failovers 0"
    )
    status["kafka"] = {"reachable": True}
    assert "Kafka" not in progress_line(status, 43.0, 0.0, 0.0)


def test_errors_print_once_grouped_by_text_and_at_most_five_per_update() -> None:
    def entry(text: str, attempt: int = 0, **extra: Any) -> dict[str, Any]:
        return {"text": text, "level": "WARNING", "logger": "x", "attempt": attempt, **extra}

    down = entry("source events cannot reach Kafka at 127.0.0.1:9: all brokers are down")
    status: dict[str, Any] = {
        "tasks": [
            {"task": "events#0", "recent_errors": [down]},
            {"task": "events#1", "recent_errors": [down]},
            {
                "task": "count#1",
                "recent_errors": [
                    entry("attempt 0 failed: exception: ValueError: bad", logger="coordinator"),
                    entry(
                        "task count#1@1 failed",
                        attempt=1,
                        level="ERROR",
                        traceback="Traceback (most recent call last):\n  ...\nValueError: bad\n",
                    ),
                ],
            },
        ]
    }
    printer = ErrorPrinter("job-1")
    assert printer.new_lines(status) == [
        "warning in events#0@0, events#1@0: source events cannot reach Kafka at 127.0.0.1:9: "
        "all brokers are down",
        "error in count#1@1: task count#1@1 failed: ValueError: bad",
    ]
    assert printer.new_lines(status) == []
    status["tasks"][0]["recent_errors"] = [entry(f"error {i}") for i in range(7)]
    lines = printer.new_lines(status)
    assert lines[:5] == [f"warning in events#0@0: error {i}" for i in range(5)]
    assert lines[5:] == [
        "... and 2 more (streamer status job-1, streamer logs job-1 VERTEX SUBTASK)"
    ]


def test_a_terminal_line_is_cut_to_its_width() -> None:
    assert fit("abcdef", 10) == "abcdef"
    assert fit("abcdef", 4) == "abc…"


def test_a_task_exception_is_printed_with_where_it_was_raised() -> None:
    tb = (
        "Traceback (most recent call last):\n"
        '  File "/r/streamer/runtime/operators.py", line 250, in process\n'
        "    self._fn(ctx, value)\n"
        '  File "/r/examples/keyed_count.py", line 38, in count\n'
        "    raise ValueError(f\"poison event for key {event['key']}\")\n"
        "ValueError: poison event for key k3\n"
    )
    failure = {
        "text": "attempt 0 failed: exception: ValueError: poison event for key k3",
        "level": "ERROR",
        "logger": "coordinator",
        "attempt": 0,
        "traceback": tb,
    }
    killed = {**failure, "text": "attempt 1 failed: process killed by signal 9", "attempt": 1}
    del killed["traceback"]
    status = {"tasks": [{"task": "count#0", "recent_errors": [failure, killed]}]}
    assert ErrorPrinter("job-1").new_lines(status) == [
        "error in count#0@0: attempt 0 failed: exception: ValueError: poison event for key k3 "
        "(at /r/examples/keyed_count.py:38 in count)"
    ]
