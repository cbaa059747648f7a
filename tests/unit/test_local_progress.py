"""What `streamer run` prints: each failover once, when it ends, in any order."""

from __future__ import annotations

from typing import Any

from streamer.local.progress import FailoverPrinter, describe_failover, progress_line


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
        "failovers 1 (last: count#2 individual, 35 ms)"
    )
    status["failovers"] = [failover(1, "count#2", "in_progress")]
    assert progress_line(status, 1.0, 0.0, 0.0).endswith("(last: count#2 individual, in progress)")
