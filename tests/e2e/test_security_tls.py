"""A real job on a cluster whose control and data planes run over mutual TLS (the
three STREAMER_TLS_* variables on every process), and a client without the
cluster's certificate that cannot get in."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamer.errors import StreamerError
from streamer.rpc.client import CoordinatorClient
from streamer.security.tls import TLS_CA_ENV, TLS_CERT_ENV, TLS_KEY_ENV, make_test_pki
from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster, all_running
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def test_a_job_runs_with_both_planes_over_mutual_tls(
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pki = make_test_pki(tmp_path / "pki")
    env = {TLS_CERT_ENV: str(pki.cert), TLS_KEY_ENV: str(pki.key), TLS_CA_ENV: str(pki.ca)}
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # this process's client too
    src, out = kafka_topics.create(4), kafka_topics.create(2)
    config = {
        "strategy": "individual",
        "bootstrap_servers": kafka_bootstrap,
        "metrics_interval": 0.5,
        "params": {"in": src, "out": out},
    }
    with LocalCluster(2, slots=8, warm=1, work_dir=tmp_path / "c", cwd=REPO, env=env) as cluster:
        job_id = cluster.submit("examples.keyed_count:job", config)
        cluster.wait_for(job_id, all_running, what="all tasks running")
        feeder = EventFeeder(kafka_bootstrap, src, rate=300).start()
        try:
            # every record crossed two TLS data connections (source -> count -> sink)
            status = cluster.wait_for(job_id, lambda s: s["records_out"] >= 300, what="output")
            assert status["state"] == "RUNNING" and status["failovers"] == []
        finally:
            feeder.stop()
        for name in env:
            monkeypatch.delenv(name)
        with pytest.raises(StreamerError, match="cannot authenticate"):
            CoordinatorClient(cluster.address, timeout=5).jobs()  # no TLS: refused
