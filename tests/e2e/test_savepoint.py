"""Savepoints (rescaling by key group), recovery from a corrupt or tampered checkpoint,
and savepoint paths that leave the state roots or manifests this cluster did not sign."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.errors import StreamerError
from streamer.state.manifest import MANIFEST_NAME, manifest_key, sign_manifest
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


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streamer.cli", *args, "--coordinator", cluster.address],
        capture_output=True, text=True, cwd=REPO, timeout=60, env=dict(os.environ),
    )  # fmt: skip


def test_savepoint_at_4_restores_at_2_and_8_with_identical_results(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src = kafka_topics.create(8)
    outs = [kafka_topics.create(4) for _ in range(3)]
    produce_records(kafka_bootstrap, src, events(0, 20))
    first = run_job(cluster, kafka_bootstrap, {"in": src, "out": outs[0], "parallelism": "4"})
    before = outputs(kafka_bootstrap, outs[0], KEYS * 20)
    assert before == {(f"k{k}", s, s + 1) for k in range(KEYS) for s in range(20)}

    target = cluster.work_dir / "sp"  # the local cluster's directory is a state root
    result = cli(cluster, "savepoint", first, "--stop", "--dir", str(target))
    assert result.returncode == 0, result.stderr
    savepoint = result.stdout.strip()
    assert savepoint == str(target)
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


def truncate_task_json(chk: Path) -> None:
    task_json = chk / "tasks" / "count%231" / "task.json"
    data = task_json.read_bytes()
    task_json.write_bytes(data[: len(data) // 2])


def point_a_task_dir_outside(chk: Path) -> None:
    """The attack of issue 11: ``../../..`` as count#1's directory, old signature kept."""
    body = orjson.loads((chk / MANIFEST_NAME).read_bytes())
    body["metadata"]["tasks"]["count#1"]["dir"] = "../../.."
    (chk / MANIFEST_NAME).write_bytes(orjson.dumps(body))


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (truncate_task_json, "task count#1 file task.json: size mismatch"),
        (point_a_task_dir_outside, "manifest was not written by this cluster or was modified"),
    ],
    ids=["truncated", "tampered"],
)
def test_a_corrupt_or_tampered_checkpoint_makes_recovery_use_the_previous_one(
    cluster: LocalCluster,
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    damage: Any,
    reason: str,
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
    damage(root / f"chk-{latest}")
    cluster.kill_task(job_id, "count#1")
    status = cluster.wait_for(
        job_id,
        lambda s: bool(s["failovers"]) and s["failovers"][0]["status"] == "done",
        what="recovery",
    )
    restored = status["checkpoints"]["restored_from"]
    assert restored["checkpoint_id"] == latest - 1
    assert len(restored["skipped"]) == 1
    assert restored["skipped"][0].startswith(f"checkpoint {latest}: {reason}")
    log = (cluster.work_dir / "coordinator.log").read_text()
    assert f"recovery used checkpoint {latest - 1}: checkpoint {latest}" in log
    time.sleep(0.5)
    assert all_running(cluster.status(job_id))


def refused(cluster: LocalCluster, bootstrap: str, params: dict[str, str], **extra: Any) -> str:
    """Submit a job that must be refused; the one-line reason (and no job was added)."""
    assert cluster.client is not None
    before = len(cluster.client.jobs())
    with pytest.raises(StreamerError) as err:
        cluster.submit(
            "examples.keyed_count:job",
            {"bootstrap_servers": bootstrap, "params": params, **extra},
        )
    assert len(cluster.client.jobs()) == before
    message = str(err.value)
    assert "\n" not in message
    return message


def test_state_paths_outside_the_roots_and_savepoints_this_cluster_did_not_sign_are_refused(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    src, out = kafka_topics.create(4), kafka_topics.create(2)
    produce_records(kafka_bootstrap, src, events(0, 5))
    params = {"in": src, "out": out, "parallelism": "2", "delivery": "exactly_once"}
    # a checkpoint directory outside the roots: refused at submission, nothing written
    outside = tmp_path / "outside"
    message = refused(cluster, kafka_bootstrap, params, checkpoint_dir=str(outside))
    assert f"checkpoint_dir {outside} is outside the state roots (" in message
    assert str(cluster.work_dir) in message
    assert not outside.exists()

    job = run_job(cluster, kafka_bootstrap, params)
    outputs(kafka_bootstrap, out, KEYS * 5)
    # a savepoint outside the roots, or climbing out of one: refused, the job runs on
    for target, why in (
        (str(outside / "sp"), f"savepoint directory {outside / 'sp'} is outside the state roots"),
        (f"{cluster.work_dir}/../../escape", "contains '..'"),
    ):
        result = cli(cluster, "savepoint", job, "--dir", target)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
        assert why in result.stderr
    assert not outside.exists() and not (cluster.work_dir.parent.parent / "escape").exists()
    assert all_running(cluster.status(job))

    good = cluster.work_dir / "sp-good"
    result = cli(cluster, "savepoint", job, "--stop", "--dir", str(good))
    assert result.returncode == 0, result.stderr
    cluster.wait_for(job, lambda s: s["state"] == "CANCELED", what="stopped")
    body = orjson.loads((good / MANIFEST_NAME).read_bytes())

    def forge(name: str, manifest: dict[str, Any], where: Path | None = None) -> Path:
        target = (where or cluster.work_dir) / name
        shutil.copytree(good, target)
        (target / MANIFEST_NAME).write_bytes(orjson.dumps(manifest))
        return target

    escaping = copy.deepcopy(body)
    escaping["metadata"]["tasks"]["count#0"]["dir"] = "../../.."
    foreign = "was not written by this cluster or was modified"
    cases = [
        (forge("sp-old-signature", escaping), f"manifest {foreign} (bad signature)"),
        (
            forge("sp-other-secret", sign_manifest(escaping, manifest_key(b"\x05" * 32))),
            f"manifest {foreign} (bad signature)",
        ),
        (
            forge("sp-signed-escaping", sign_manifest(escaping, manifest_key())),
            "task count#0 directory '../../..' has a '..', '.' or empty component",
        ),
        (
            forge("sp-unsigned", {k: v for k, v in body.items() if k != "signature"}),
            f"manifest is not signed: it {foreign}",
        ),
    ]
    for path, why in cases:
        message = refused(cluster, kafka_bootstrap, params, from_savepoint=str(path))
        assert f"cannot restore from savepoint {path}: {why}; " in message
    intact = forge("sp-copy", body, tmp_path)  # intact, but outside the roots
    message = refused(cluster, kafka_bootstrap, params, from_savepoint=str(intact))
    assert f"from_savepoint {intact} is outside the state roots" in message
    # the intact savepoint still restores
    elsewhere = str(cluster.work_dir / "checkpoints" / "again")
    again = run_job(
        cluster, kafka_bootstrap, params, from_savepoint=str(good), checkpoint_dir=elsewhere
    )
    status = cluster.status(again)
    assert status["checkpoints"]["restored_from"]["path"] == str(good)
    cluster.cancel(again)
