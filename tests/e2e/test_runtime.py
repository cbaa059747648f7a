"""Runtime end to end: bounded input, missed heartbeats, the `streamer run` command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streamer.localkafka.broker import pid_alive
from streamer.testing import TopicFactory, produce_records, read_topic
from streamer.testing.cluster import LocalCluster, all_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def events(n: int, keys: int = 16) -> list[tuple[str, dict[str, object]]]:
    return [(f"k{i % keys}", {"key": f"k{i % keys}", "seq": i // keys}) for i in range(n)]


def test_bounded_input_finishes_every_task_with_exact_output(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(8), kafka_topics.create(4)
    produce_records(kafka_bootstrap, src, events(1600))
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": "individual",
            "bootstrap_servers": kafka_bootstrap,
            "params": {"in": src, "out": out, "bounded": "1"},
        },
    )
    status = cluster.wait_for(job_id, lambda s: s["state"] == "FINISHED", what="job FINISHED")
    assert {t["state"] for t in status["tasks"]} == {"FINISHED"}
    assert status["failovers"] == []
    records = [orjson.loads(r.value) for r in read_topic(kafka_bootstrap, out, expected=1600)]  # type: ignore[arg-type]
    assert len(records) == 1600
    per_key: dict[str, list[int]] = {}
    for r in records:
        per_key.setdefault(r["key"], []).append(r["count"])
    assert {k: sorted(v) for k, v in per_key.items()} == {
        f"k{i}": list(range(1, 101)) for i in range(16)
    }


def test_missed_heartbeats_declare_a_worker_lost(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(8), kafka_topics.create(4)
    with LocalCluster(
        2, slots=8, warm=1, work_dir=tmp_path / "c", cwd=REPO, heartbeat_timeout=2.0
    ) as cluster:
        job_id = cluster.submit(
            "examples.keyed_count:job",
            {
                "strategy": "individual",
                "bootstrap_servers": kafka_bootstrap,
                "params": {"in": src, "out": out},
            },
        )
        before = cluster.wait_for(job_id, all_running, what="all running")
        on_w1 = {t["task"]: t["pid"] for t in before["tasks"] if t["worker"] == "w1"}
        assert on_w1
        frozen = cluster.workers["w1"].pid
        os.kill(frozen, signal.SIGSTOP)  # alive, connected, silent
        try:
            stopped_at = time.time()
            status = cluster.wait_for(
                job_id,
                lambda s: (
                    len(s["failovers"]) >= len(on_w1)
                    and all(f["status"] == "done" for f in s["failovers"])
                    and all_running(s)
                ),
                what="tasks of the silent worker recovered",
            )
            causes = {f["cause"] for f in status["failovers"]}
            assert causes == {"worker w1 lost"}
            assert min(f["detected_at"] for f in status["failovers"]) - stopped_at >= 1.5
            assert all(t["worker"] == "w2" for t in status["tasks"])
            # the old attempts lost their coordinator and stopped themselves
            deadline = time.monotonic() + 10
            while any(pid_alive(p) for p in on_w1.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(pid_alive(p) for p in on_w1.values())
        finally:
            os.kill(frozen, signal.SIGCONT)


def test_streamer_run_cli_runs_a_bounded_job(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(4), kafka_topics.create(2)
    produce_records(kafka_bootstrap, src, events(400))
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", kafka_bootstrap, "--workers", "1",
            "--param", f"in={src}", "--param", f"out={out}", "--param", "bounded=1",
            "--param", "parallelism=2",
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.replace("\r", "\n").splitlines()
    assert any(line.startswith("job job-") and "submitted (individual)" in line for line in lines)
    assert any("tasks " in line and "running" in line and "in " in line for line in lines)
    assert lines[-1].startswith("job job-") and lines[-1].endswith(" FINISHED")
    assert len(read_topic(kafka_bootstrap, out, expected=400)) == 400

    jobs = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "jobs"], capture_output=True, text=True, env=env
    )
    assert jobs.returncode == 2  # the local cluster is gone with `run`
    assert jobs.stderr.startswith("error: ")
    assert len(jobs.stderr.strip().splitlines()) == 1


def test_run_with_a_missing_topic_is_one_clear_line(tmp_path: Path, kafka_bootstrap: str) -> None:
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", kafka_bootstrap, "--param", "in=nope-in",
            "--param", "out=nope-out",
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: topics nope-in, nope-out do not exist at {kafka_bootstrap}: create them, "
        "or pass --create-topics"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--set", "checkpoint_intreval=5"],
            "error: unknown job setting 'checkpoint_intreval': did you mean 'checkpoint_interval'?",
        ),
        (
            ["--set", "restart_delay=soon"],
            "error: job setting restart_delay='soon' must be a number",
        ),
        (
            [],
            "error: cannot reach Kafka at 127.0.0.1:1 (Connect to ipv4#127.0.0.1:1 failed: "
            "Connection refused): check that the broker runs and --bootstrap-servers is right "
            "(`streamer kafka status` for the local one)",
        ),
    ],
)
def test_run_with_bad_settings_or_no_broker_is_one_clear_line(
    tmp_path: Path, extra: list[str], message: str
) -> None:
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", "127.0.0.1:1", *extra,
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == message  # nothing else: no client log spam
