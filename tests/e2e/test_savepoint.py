"""Savepoints (rescaling by key group) and recovery from a corrupt checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.testing import TopicFactory, produce_records, read_topic
from streamer.testing.cluster import LocalCluster, Status, all_running

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
KEYS = 32


def events(first_seq: int, per_key: int) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"k{k}", {"key": f"k{k}", "seq": s})
        for s in range(first_seq, first_seq + per_key)
        for k in range(KEYS)
    ]


def run_job(cluster: LocalCluster, bootstrap: str, params: dict[str, str], **extra: Any) -> str:
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": "individual",
            "bootstrap_servers": bootstrap,
            "params": {"delivery": "exactly_once", **params},
            "checkpoint_dir": str(cluster.work_dir / "checkpoints" / params["out"]),
            **extra,
        },
    )
    cluster.wait_for(job_id, all_running, what="all running")
    return job_id


def outputs(bootstrap: str, topic: str, expected: int) -> set[tuple[str, int, int]]:
    records = read_topic(bootstrap, topic, expected=expected, timeout=60, idle=1.5)
    values = [orjson.loads(r.value) for r in records]  # type: ignore[arg-type]
    assert len(values) == expected
    return {(v["key"], v["seq"], v["count"]) for v in values}


def test_savepoint_at_4_restores_at_2_and_8_with_identical_results(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    src = kafka_topics.create(8)
    outs = [kafka_topics.create(4) for _ in range(3)]
    produce_records(kafka_bootstrap, src, events(0, 20))
    first = run_job(cluster, kafka_bootstrap, {"in": src, "out": outs[0], "parallelism": "4"})
    before = outputs(kafka_bootstrap, outs[0], KEYS * 20)
    assert before == {(f"k{k}", s, s + 1) for k in range(KEYS) for s in range(20)}

    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "savepoint", first, "--stop",
            "--dir", str(tmp_path / "sp"), "--coordinator", cluster.address,
        ],
        capture_output=True, text=True, cwd=REPO, timeout=60, env=dict(os.environ),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    savepoint = result.stdout.strip()
    assert savepoint == str(tmp_path / "sp")
    assert (Path(savepoint) / "_metadata.json").is_file()
    assert cluster.wait_for(first, lambda s: s["state"] == "CANCELED", what="stopped")

    produce_records(kafka_bootstrap, src, events(20, 10))
    expected = {(f"k{k}", s, s + 1) for k in range(KEYS) for s in range(20, 30)}
    results = []
    for parallelism, out in (("2", outs[1]), ("8", outs[2])):
        job = run_job(
            cluster,
            kafka_bootstrap,
            {"in": src, "out": out, "parallelism": parallelism},
            from_savepoint=savepoint,
            checkpoint_interval=0.5,
        )
        got = outputs(kafka_bootstrap, out, KEYS * 10)
        results.append(got)
        status = cluster.status(job)
        assert status["checkpoints"]["restored_from"]["path"] == savepoint
        assert len([t for t in status["tasks"] if t["vertex"] == "count"]) == int(parallelism)
        cluster.cancel(job)
    assert results[0] == results[1] == expected  # counts continue from the savepoint's state


def test_a_truncated_checkpoint_makes_recovery_use_the_previous_one(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(8), kafka_topics.create(4)
    produce_records(kafka_bootstrap, src, events(0, 10))
    job_id = run_job(
        cluster,
        kafka_bootstrap,
        {"in": src, "out": out, "parallelism": "4"},
        checkpoint_interval=2.5,
    )
    outputs(kafka_bootstrap, out, KEYS * 10)  # everything processed (and committed)

    def completed(s: Status) -> int:
        return int(s["checkpoints"]["completed"])

    cluster.wait_for(job_id, lambda s: completed(s) >= 2, what="two checkpoints")
    now = completed(cluster.status(job_id))
    status = cluster.wait_for(
        job_id, lambda s: completed(s) > now, timeout=10, what="a fresh checkpoint"
    )
    latest = max(h["id"] for h in status["checkpoints"]["history"] if h["outcome"] == "completed")
    root = Path(status["checkpoints"]["root"])
    task_json = root / f"chk-{latest}" / "tasks" / "count%231" / "task.json"
    data = task_json.read_bytes()
    task_json.write_bytes(data[: len(data) // 2])  # truncate it
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(
        job_id,
        lambda s: bool(s["failovers"]) and s["failovers"][0]["status"] == "done",
        what="recovery",
    )
    restored = status["checkpoints"]["restored_from"]
    assert restored["checkpoint_id"] == latest - 1
    assert len(restored["skipped"]) == 1
    reason = restored["skipped"][0]
    assert reason.startswith(f"checkpoint {latest}: ")
    assert "count#1" in reason and "task.json" in reason
    log = (cluster.work_dir / "coordinator.log").read_text()
    assert f"recovery used checkpoint {latest - 1}: checkpoint {latest}" in log
    time.sleep(0.5)
    assert all_running(cluster.status(job_id))
