"""A job against a real secured broker: SASL_SSL with SCRAM-SHA-512 and a test CA.

The module starts its own ``LocalKafka`` with a SASL_SSL listener (its own ports and
data directory; stopped by its pid when the module ends). The job and the test
produce, read and create topics only through the secured listener; the broker's
plaintext listener stays for the broker's own readiness check.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.localkafka import LocalKafka
from streamer.localkafka.broker import pid_alive
from streamer.localkafka.secured import SaslSslListener
from streamer.testing import TopicFactory, produce_records, read_topic
from streamer.testing.cluster import LocalCluster, Status

pytestmark = pytest.mark.timeout(240)

REPO = Path(__file__).resolve().parents[2]
KEYS, PER_KEY = 8, 25


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslSslListener]:
    kafka = LocalKafka(sasl_ssl=True, data_dir=tmp_path_factory.mktemp("sasl-kafka"), quiet=True)
    kafka.start()
    assert kafka.proc is not None and kafka.sasl_ssl is not None
    pid = kafka.proc.pid
    try:
        yield kafka.sasl_ssl
    finally:
        kafka.stop()  # stops only the pid it started
        assert not pid_alive(pid)


@pytest.fixture
def topics(secured: SaslSslListener) -> Iterator[TopicFactory]:
    with TopicFactory(
        secured.bootstrap_servers, prefix="sasl", client_config=secured.client_config()
    ) as factory:
        yield factory


def events() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"k{i % KEYS}", {"key": f"k{i % KEYS}", "seq": i // KEYS}) for i in range(KEYS * PER_KEY)
    ]


def expected_counts() -> set[tuple[str, int, int]]:
    """(key, seq, count) of every output: the n-th event of a key counts n."""
    return {(f"k{k}", s, s + 1) for k in range(KEYS) for s in range(PER_KEY)}


def outputs(listener: SaslSslListener, topic: str) -> list[tuple[str, int, int]]:
    records = read_topic(
        listener.bootstrap_servers,
        topic,
        expected=KEYS * PER_KEY,
        timeout=60,
        idle=1.5,
        client_config=listener.client_config(),
    )
    values = [orjson.loads(r.value) for r in records]  # type: ignore[arg-type]
    return [(v["key"], v["seq"], v["count"]) for v in values]


def failed(status: Status) -> bool:
    return bool(status["state"] == "FAILED")


def test_an_exactly_once_job_reads_and_writes_through_sasl_ssl(
    cluster: LocalCluster, secured: SaslSslListener, topics: TopicFactory
) -> None:
    src, out = topics.create(4), topics.create(2)
    produce_records(secured.bootstrap_servers, src, events(), client_config=secured.client_config())
    job_id = cluster.submit(
        "examples.keyed_count:job",
        {
            "strategy": "region",
            "bootstrap_servers": secured.bootstrap_servers,
            "kafka_config": secured.client_config(),
            "checkpoint_interval": 0.5,
            "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
            "max_failures_per_task": 0,
            "params": {"in": src, "out": out, "parallelism": "2", "delivery": "exactly_once"},
        },
    )
    got = outputs(secured, out)  # read_committed: only what the transactions committed
    status = cluster.status(job_id)
    cluster.cancel(job_id)
    assert status["state"] == "RUNNING", status.get("failure_reason")
    assert status["failovers"] == []
    assert len(got) == KEYS * PER_KEY
    assert set(got) == expected_counts()


def test_without_credentials_or_with_a_wrong_password_the_job_fails_saying_why(
    cluster: LocalCluster, secured: SaslSslListener, topics: TopicFactory
) -> None:
    src, out = topics.create(2), topics.create(2)

    def submit(kafka_config: dict[str, Any] | None) -> str:
        config: dict[str, Any] = {
            "strategy": "region",
            "bootstrap_servers": secured.bootstrap_servers,
            "max_failures_per_task": 0,
            "params": {"in": src, "out": out, "parallelism": "1"},
        }
        if kafka_config is not None:
            config["kafka_config"] = kafka_config
        return cluster.submit("examples.keyed_count:job", config)

    plaintext = submit(None)
    wrong = submit({**secured.client_config(), "sasl.password": "not-the-password"})
    no_ca = submit({k: v for k, v in secured.client_config().items() if k != "ssl.ca.location"})
    where = secured.bootstrap_servers
    reasons = {
        job: cluster.wait_for(job, failed, timeout=90, what="job FAILED")["failure_reason"]
        for job in (plaintext, wrong, no_ca)
    }
    assert (
        f"ConnectorError: cannot reach Kafka at {where} within 15 s: check that the broker runs "
        "and bootstrap servers are right (`streamer kafka status`); for a secured cluster, "
        "give its security.protocol and credentials in the job's kafka_config (--kafka-config)"
    ) in reasons[plaintext]
    assert (
        f"ConnectorError: cannot reach Kafka at {where} (SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512): check the job's kafka_config (security.protocol, sasl.*, ssl.*)"
    ) in reasons[wrong]
    assert (
        f"ConnectorError: cannot reach Kafka at {where} (SSL handshake failed: "
        "error:0A000086:SSL routines::certificate verify failed: broker certificate could "
        "not be verified"
    ) in reasons[no_ca]
    assert all("\n" not in reason for reason in reasons.values())


def test_streamer_run_with_a_kafka_config_file(
    tmp_path: Path, secured: SaslSslListener, topics: TopicFactory
) -> None:
    """``streamer run --kafka-config FILE`` against the secured listener: the CLI's topic
    check and creation, the job's clients, all through SASL_SSL; the file is the one
    ``LocalKafka`` wrote for the listener."""
    src, out = topics.create(2), f"sasl-out-{os.getpid()}-{tmp_path.name[-6:]}"
    topics.created.append(out)  # created by `streamer run --create-topics`, deleted after
    produce_records(secured.bootstrap_servers, src, events(), client_config=secured.client_config())
    properties = Path(secured.ca_location).with_name("client.properties")
    assert properties.read_text().splitlines()[1:] == [
        f"{k}={v}" for k, v in secured.client_config().items()
    ]
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", secured.bootstrap_servers, "--kafka-config", str(properties),
            "--create-topics", "--topic-partitions", "2", "--workers", "1",
            "--param", f"in={src}", "--param", f"out={out}", "--param", "bounded=1",
            "--param", "parallelism=2",
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=150,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.replace("\r", "\n").splitlines()
    assert f"created topic {out} (2 partitions)" in lines
    assert lines[-1].startswith("job job-") and lines[-1].endswith(" FINISHED")
    got = outputs(secured, out)
    assert len(got) == KEYS * PER_KEY
    assert set(got) == expected_counts()


def test_streamer_run_with_a_wrong_password_in_the_file_is_one_line(
    tmp_path: Path, secured: SaslSslListener
) -> None:
    bad = tmp_path / "wrong.properties"
    bad.write_text(
        "".join(
            f"{k}={'nope' if k == 'sasl.password' else v}\n"
            for k, v in secured.client_config().items()
        )
    )
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [
            sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
            "--bootstrap-servers", secured.bootstrap_servers, "--kafka-config", str(bad),
        ],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: cannot reach Kafka at {secured.bootstrap_servers} (SASL authentication "
        "error: Authentication failed during authentication due to invalid credentials with "
        "SASL mechanism SCRAM-SHA-512): check --kafka-config"
    )
