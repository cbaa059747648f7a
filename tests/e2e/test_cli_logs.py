"""`streamer logs` and task errors in the status, on a real job: a poison record fails a
counter (an exception with its traceback), a kill starts another attempt."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from streamer.testing import TopicFactory, produce_records
from streamer.testing.cluster import LocalCluster, Status, all_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]
POISON = "ValueError: poison event for key k3"


def streamer(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=timeout,
    )  # fmt: skip


def row(status: Status, task: str) -> dict[str, Any]:
    return next(t for t in status["tasks"] if t["task"] == task)


@pytest.fixture
def poisoned(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> tuple[str, str, Status]:
    """A keyed count whose counter of key k3 raised once and runs again as attempt 1:
    (job id, that task, status)."""
    src, out = kafka_topics.create(4), kafka_topics.create(2)
    produce_records(
        kafka_bootstrap, src, [(f"k{i % 8}", {"key": f"k{i % 8}", "seq": i}) for i in range(80)]
    )
    job = cluster.submit(
        "examples.keyed_count:job",
        {
            "bootstrap_servers": kafka_bootstrap,
            "params": {"in": src, "out": out, "parallelism": "2", "fail_on": "k3"},
        },
    )

    def recovered(s: Status) -> bool:
        return all_running(s) and len(s["failovers"]) == 1 and s["failovers"][0]["status"] == "done"

    status = cluster.wait_for(job, recovered, what="the poisoned counter runs again")
    victim = status["failovers"][0]["task"]
    # its new attempt reports where its log is within a metrics interval
    status = cluster.wait_for(job, lambda s: len(row(s, victim)["logs"]) == 2, timeout=10)
    return job, victim, status


def a_task_exception_reaches_the_status_with_its_traceback(
    poisoned: tuple[str, str, Status],
) -> None:
    _job, victim, status = poisoned
    errors = row(status, victim)["recent_errors"]
    failure = [e for e in errors if e["logger"] == "coordinator"]
    assert [(e["attempt"], e["level"], e["count"], e["text"]) for e in failure] == [
        (0, "ERROR", 1, f"attempt 0 failed: exception: {POISON}")
    ]
    tb = failure[0]["traceback"]
    assert tb.startswith("Traceback (most recent call last):")
    assert 'examples/keyed_count.py", line' in tb and tb.rstrip().endswith(POISON)
    assert status["failure_reason"] is None and status["state"] == "RUNNING"
    assert status["kafka"] == {"reachable": True}


def test_logs_show_every_attempt_the_latest_one_and_the_coordinator(
    cluster: LocalCluster, poisoned: tuple[str, str, Status]
) -> None:
    """Also: the status carries the exception with its traceback; errors are one line."""
    a_task_exception_reaches_the_status_with_its_traceback(poisoned)
    job, victim, status = poisoned
    vertex, _, subtask = victim.partition("#")
    logs = row(status, victim)["logs"]
    workers = cluster.work_dir / "workers"
    assert [(e["attempt"], Path(e["path"]).parent.parent.parent) for e in logs] == [
        (0, workers),
        (1, workers),
    ]
    co = ("--coordinator", cluster.address)

    every = streamer("logs", job, vertex, subtask, *co)
    assert every.returncode == 0 and every.stderr == ""
    first, second = (Path(e["path"]) for e in logs)
    header = "==> {} attempt {}, worker {}: {} <==\n"
    assert every.stdout.startswith(header.format(victim, 0, logs[0]["worker"], first))
    assert f"task {job}/{victim}@0 failed\nTraceback (most recent call last):" in every.stdout
    assert POISON in every.stdout
    assert header.format(victim, 1, logs[1]["worker"], second) in every.stdout

    latest = streamer("logs", job, f"{victim}", "--latest", *co)
    assert latest.returncode == 0 and latest.stderr == ""
    assert latest.stdout and second.read_text().startswith(latest.stdout)
    assert "==>" not in latest.stdout and POISON not in latest.stdout

    last_two = streamer("logs", job, vertex, subtask, "--attempt", "0", "-n", "2", *co)
    assert last_two.stdout.splitlines() == first.read_text().splitlines()[-2:]

    coordinator = streamer("logs", job, *co)
    assert coordinator.returncode == 0
    assert (cluster.work_dir / "coordinator.log").read_text().startswith(coordinator.stdout)
    assert f"job {job}: task {victim}@0 failed: exception: {POISON}" in coordinator.stdout

    cases = [
        (("logs", job, "count", "9"),
         f"error: job {job} has no task count#9; its tasks: count 0-1, events 0-1, sink 0-1"),
        (("logs", "job-nope", "count", "0"),
         "error: no job 'job-nope'; `streamer jobs` lists them"),
        (("logs", job, vertex, subtask, "--attempt", "5"),
         f"error: {victim} has no attempt 5: its attempts are 0-1"),
        (("logs", job, "count"),
         "error: give the task as VERTEX SUBTASK (e.g. count 2), or nothing for the "
         "coordinator's log"),
    ]  # fmt: skip
    for args, line in cases:
        result = streamer(*args, *co)
        assert (result.returncode, result.stdout, result.stderr) == (2, "", line + "\n"), args


def test_follow_goes_on_with_the_next_attempt_until_the_job_ends(
    cluster: LocalCluster, poisoned: tuple[str, str, Status]
) -> None:
    job, victim, _status = poisoned
    follow = subprocess.Popen(
        [sys.executable, "-m", "streamer.cli", "logs", job, victim, "--latest", "--follow",
         "--coordinator", cluster.address],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
    )  # fmt: skip
    lines: list[str] = []
    assert follow.stdout is not None
    out = follow.stdout
    reader = threading.Thread(target=lambda: lines.extend(iter(out.readline, "")))
    reader.start()
    try:
        time.sleep(1.0)
        cluster.kill_task(job, victim)
        status = cluster.wait_for(job, lambda s: len(row(s, victim)["logs"]) == 3, timeout=30)
        entry = row(status, victim)["logs"][2]
        header = f"==> {victim} attempt 2, worker {entry['worker']}: {entry['path']} <==\n"
        deadline = time.monotonic() + 10
        while header not in lines and time.monotonic() < deadline:
            time.sleep(0.1)
        assert header in lines
        cluster.cancel(job)
        assert follow.wait(timeout=15) == 0  # the job ended: following ends too
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
        reader.join(timeout=5)
    after = "".join(lines[lines.index(header) + 1 :])
    assert after and Path(entry["path"]).read_text().startswith(after)
    assert follow.stderr is not None and follow.stderr.read() == ""
