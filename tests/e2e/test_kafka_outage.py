"""Kafka down: what `streamer run`, the status and the job do (issue 13, "a CLI that tells
the truth"). Each test that stops a broker starts its own ``LocalKafka`` (own port and
data directory) and stops it by its pid; the shared broker is never touched.

- A broker stopped mid-run: the progress lines say that the sources and sinks cannot
  reach Kafka and for how long, and the tasks' warnings are printed; no failover; once
  the broker is back, the job goes on with nothing restarted.
- A broker that stays down for ``kafka_timeout``: the job ends FAILED with the reason,
  without a single failover.
- A refused broker: ``streamer run`` and ``streamer submit`` say so in one line, well
  under 3 s; ``submit --no-broker-check`` accepts the job, which then fails once with
  the reason instead of flapping through failovers.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from streamer.localkafka import LocalKafka, free_port
from streamer.rpc.client import CoordinatorClient
from streamer.security.secret import SECRET_ENV, cluster_secret
from streamer.testing import TopicFactory, produce_records, read_topic
from streamer.testing.cluster import LocalCluster, Status, all_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
REFUSED = "127.0.0.1:1"


class Broker:
    """A local broker that can be stopped and started again on the same port and data."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.controller_port = free_port(), free_port()
        self.data_dir = data_dir
        self.kafka: LocalKafka | None = None
        self.bootstrap = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.kafka = LocalKafka(
            port=self.port,
            controller_port=self.controller_port,
            data_dir=self.data_dir,
            keep_data=True,
            quiet=True,
        )
        self.kafka.start()

    def stop(self) -> None:
        if self.kafka is not None:
            self.kafka.stop(keep_data=True)  # by its own pid
            self.kafka = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path / "kafka")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def events(n: int, start: int = 0) -> list[tuple[str, dict[str, object]]]:
    return [(f"k{i % 8}", {"key": f"k{i % 8}", "seq": i}) for i in range(start, start + n)]


def wait(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.2)


def test_streamer_run_says_kafka_is_unreachable_and_goes_on_when_it_is_back(
    tmp_path: Path, broker: Broker
) -> None:
    topics = TopicFactory(broker.bootstrap)
    src, out = topics.create(4), topics.create(2)
    produce_records(broker.bootstrap, src, events(200))
    home = tmp_path / "home"
    env = dict(os.environ, STREAMER_HOME=str(home), **{SECRET_ENV: cluster_secret().hex()})
    run = subprocess.Popen(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", broker.bootstrap, "--workers", "1",
            "--param", f"in={src}", "--param", f"out={out}", "--param", "parallelism=2",
            "--set", "kafka_timeout=300",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO, env=env,
    )  # fmt: skip
    raw: list[bytes] = []
    assert run.stdout is not None
    stdout = run.stdout
    reader = threading.Thread(target=lambda: raw.extend(iter(stdout.readline, b"")))
    reader.start()

    def lines() -> list[str]:
        return [line.decode() for line in list(raw)]

    def progress(pattern: str, after: int = 0) -> list[str]:
        return [ln for ln in lines()[after:] if ln.startswith("[") and re.search(pattern, ln)]

    try:
        wait("6 tasks running", lambda: bool(progress(r"RUNNING   tasks 6/6 running")), 90)
        job = next(ln.split()[1] for ln in lines() if ln.startswith("job job-"))
        address = orjson.loads((home / "run" / "coordinator.json").read_bytes())["address"]
        coordinator = CoordinatorClient(address)
        wait("200 records out", lambda: coordinator.status(job)["records_out"] == 200, 60)

        stopped_at = len(lines())
        broker.stop()
        wait("an unreachable Kafka", lambda: bool(progress("Kafka unreachable", stopped_at)), 15)
        wait("5 s of it", lambda: bool(progress(r"Kafka unreachable for [5-9] s", stopped_at)), 20)
        shown = progress(r"Kafka unreachable for [5-9] s", stopped_at)[0]
        assert "Kafka unreachable for" in shown and "(sources 2/2, sinks 2/2)" in shown, shown
        status = coordinator.status(job)
        assert status["state"] == "RUNNING" and status["failovers"] == []
        assert status["kafka"]["reachable"] is False
        assert status["kafka"]["tasks"] == ["events#0", "events#1", "sink#0", "sink#1"]
        warned = "".join(lines()[stopped_at:])
        for role in (f"source {src}", f"sink {out}"):
            assert f": {role} cannot reach Kafka at {broker.bootstrap}: all brokers are down\n" in (
                warned
            ), warned

        back_at = len(lines())
        broker.start()
        wait(
            "Kafka reachable again",
            lambda: any("Kafka" not in ln for ln in progress("RUNNING", back_at)),
            60,
        )
        produce_records(broker.bootstrap, src, events(200, start=200))
        assert len(read_topic(broker.bootstrap, out, expected=400, timeout=60)) == 400
        status = coordinator.status(job)
        assert status["state"] == "RUNNING" and status["failovers"] == []
        assert status["kafka"] == {"reachable": True}
        assert {t["attempt"] for t in status["tasks"]} == {0}
        run.send_signal(signal.SIGINT)  # Ctrl-C: the job is canceled, everything stops
        assert run.wait(timeout=60) == 0
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        reader.join(timeout=10)
    text = b"".join(raw).decode()
    assert "\r" not in text  # not a terminal: one line per update
    assert text.splitlines()[-1] == f"job {job} CANCELED"
    updates = [ln for ln in text.splitlines() if ln.startswith("[")]
    assert len(updates) >= 10
    assert all(re.match(r"\[\s*\d+\.\ds\] (RUNNING|CANCELED) ", ln) for ln in updates), updates


def test_a_job_that_cannot_reach_kafka_fails_with_the_reason_without_failovers(
    tmp_path: Path, broker: Broker
) -> None:
    topics = TopicFactory(broker.bootstrap)
    src, out = topics.create(4), topics.create(2)
    produce_records(broker.bootstrap, src, events(80))
    with LocalCluster(1, slots=8, warm=1, work_dir=tmp_path / "cluster", cwd=REPO) as cluster:
        job = cluster.submit(
            "examples.keyed_count:job",
            {
                "bootstrap_servers": broker.bootstrap,
                "kafka_timeout": 6,
                "params": {"in": src, "out": out, "parallelism": "2"},
            },
        )
        cluster.wait_for(job, all_running, what="all tasks running")
        time.sleep(1.5)  # every task has reported its Kafka clients
        stopped = time.monotonic()  # its connections close as it starts stopping
        broker.stop()
        status = cluster.wait_for(job, lambda s: s["state"] == "FAILED", timeout=30)
        took = time.monotonic() - stopped
    assert 6.0 <= took < 15.0, took
    assert status["failovers"] == []
    assert re.fullmatch(
        rf"events#0, events#1, sink#0, sink#1 cannot reach Kafka at {broker.bootstrap} for "
        rf"[67] s \(kafka_timeout 6 s; last error: Connect to ipv4#{broker.bootstrap} failed: "
        r"Connection refused\): start the broker or fix bootstrap_servers, then run the job "
        "again",
        status["failure_reason"],
    ), status["failure_reason"]


def streamer(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    return result, time.monotonic() - started


def test_a_refused_broker_is_one_line_at_once_and_a_job_sent_anyway_fails_once(
    cluster: LocalCluster,
) -> None:
    _, baseline = streamer("--version")  # Python and streamer's imports, on this machine
    job_args = ("examples.keyed_count:job", "--bootstrap-servers", REFUSED)
    refused = f"error: cannot reach Kafka at {REFUSED} (Connect to ipv4#{REFUSED} failed: "
    run, took = streamer("run", *job_args)
    assert (run.returncode, run.stdout, run.stderr) == (
        2,
        "",
        refused + "Connection refused): check that the broker runs and --bootstrap-servers "
        "is right (`streamer kafka status` for the local one)\n",
    )
    assert took - baseline < 3.0, (took, baseline)

    submit, took = streamer("submit", *job_args, "--coordinator", cluster.address)
    assert (submit.returncode, submit.stdout, submit.stderr) == (
        2,
        "",
        refused + "Connection refused): check that the broker runs and --bootstrap-servers "
        "is right, or pass --no-broker-check when only the workers can reach it\n",
    )
    assert took - baseline < 3.0, (took, baseline)
    assert cluster.workers_status() and CoordinatorClient(cluster.address).jobs() == []

    anyway, _ = streamer("submit", *job_args, "--no-broker-check", "--coordinator", cluster.address)
    assert anyway.returncode == 0, anyway.stderr
    job = anyway.stdout.strip()
    status: Status = cluster.wait_for(job, lambda s: s["state"] == "FAILED", timeout=90)
    (failover,) = status["failovers"]  # one failure, not restarted: no flapping
    assert failover["status"] == "job_failed"
    assert re.fullmatch(
        rf"{re.escape(failover['task'])} failed: exception: ConnectorError: cannot reach Kafka "
        rf"at {REFUSED}\b.* \(not restarted: a new attempt cannot reach it either\)",
        status["failure_reason"],
    ), status["failure_reason"]
