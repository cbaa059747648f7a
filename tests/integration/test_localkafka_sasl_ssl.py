"""`streamer kafka start --sasl-ssl` and a kept secured broker's restart, against real processes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from streamer.connectors.client_config import read_properties
from streamer.errors import LocalKafkaError
from streamer.localkafka import LocalKafka
from streamer.localkafka.broker import broker_properties, pid_alive, read_state
from streamer.localkafka.secured import prepare_sasl_ssl
from tests.cli import streamer


def metadata(bootstrap: str, config: dict[str, str]) -> int:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({**config, "bootstrap.servers": bootstrap, "log_level": 0})
    return len(admin.list_topics(timeout=10).brokers)


def test_cli_start_with_sasl_ssl_prints_the_listener_and_its_client_file(home: Path) -> None:
    started = streamer("kafka", "start", "--sasl-ssl")
    assert started.returncode == 0, started.stderr
    info = read_state()
    assert info is not None and info.sasl_ssl_bootstrap and info.client_properties
    lines = started.stdout.splitlines()
    assert f"SASL_SSL (SCRAM-SHA-512) bootstrap servers: {info.sasl_ssl_bootstrap}" in lines
    assert f"client settings: {info.client_properties} (--kafka-config)" in lines
    client = read_properties(info.client_properties)
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.mechanism"] == "SCRAM-SHA-512"
    assert metadata(info.sasl_ssl_bootstrap, client) == 1
    mode = stat.S_IMODE(os.stat(info.client_properties).st_mode)
    assert mode == 0o600, oct(mode)  # it holds the password
    status = streamer("kafka", "status")
    assert f"client settings: {info.client_properties} (--kafka-config)" in status.stdout
    assert streamer("kafka", "stop").returncode == 0
    assert not pid_alive(info.pid)


def test_a_kept_secured_broker_restarts_with_the_same_user_and_certificates(home: Path) -> None:
    data = home / "kept"
    with LocalKafka(sasl_ssl=True, data_dir=data, keep_data=True, quiet=True) as first:
        assert first.sasl_ssl is not None
        listener = first.sasl_ssl
    ca = Path(listener.ca_location).read_bytes()
    with LocalKafka(sasl_ssl=True, data_dir=data, quiet=True) as second:
        assert second.sasl_ssl is not None
        assert second.sasl_ssl.password == listener.password
        assert Path(second.sasl_ssl.ca_location).read_bytes() == ca
        assert metadata(second.sasl_ssl.bootstrap_servers, second.sasl_ssl.client_config()) == 1


def test_broker_properties_add_the_listener_only_when_asked(tmp_path: Path) -> None:
    plain = broker_properties(9092, 9093, tmp_path)
    assert plain["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    secured = broker_properties(9092, 9093, tmp_path, 9094)
    assert secured["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094,CONTROLLER://127.0.0.1:9093"
    )
    assert secured["advertised.listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094"
    )
    assert secured["listener.security.protocol.map"].endswith(",SASL_SSL:SASL_SSL")
    assert secured["inter.broker.listener.name"] == "PLAINTEXT"


def test_an_unknown_scram_mechanism_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LocalKafkaError) as info:
        prepare_sasl_ssl(tmp_path, "127.0.0.1", 1, "SCRAM-MD5")
    assert str(info.value) == "unknown SCRAM mechanism 'SCRAM-MD5': use SCRAM-SHA-512 or -256"
