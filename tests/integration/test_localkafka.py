"""LocalKafka and `streamer kafka`: lifecycle and one-line errors, against real processes."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from streamer.errors import LocalKafkaError
from streamer.localkafka import LocalKafka, kafka_version
from streamer.localkafka.broker import free_port, pid_alive, read_state
from tests.cli import streamer

pytestmark = pytest.mark.kafka


def _jvm_args(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


def test_cli_start_status_stop(home: Path) -> None:
    started = streamer("kafka", "start", "--profile", "throughput")
    assert started.returncode == 0, started.stderr
    assert "bootstrap servers: 127.0.0.1:" in started.stdout
    info = read_state()
    assert info is not None and pid_alive(info.pid)
    assert Path(info.data_dir).is_dir()
    args = _jvm_args(info.pid)  # the throughput profile: the full JIT
    assert "-XX:+UseSerialGC" in args and "-XX:TieredStopAtLevel=1" not in args

    again = streamer("kafka", "start")
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error: a local broker already runs at")
    assert len(again.stderr.strip().splitlines()) == 1

    status = streamer("kafka", "status")
    assert status.returncode == 0
    assert f"pid {info.pid} at {info.bootstrap_servers}, answering" in status.stdout

    stopped = streamer("kafka", "stop")
    assert stopped.returncode == 0
    assert f"stopped Kafka broker pid {info.pid}" in stopped.stdout
    assert not pid_alive(info.pid)
    assert not Path(info.data_dir).exists(), "stop removes the data unless told to keep it"
    assert streamer("kafka", "status").returncode == 1


def test_context_manager_keeps_data_when_asked(home: Path) -> None:
    with LocalKafka(keep_data=True, quiet=True) as broker:
        pid = broker.proc.pid if broker.proc else -1
        assert "-XX:TieredStopAtLevel=1" in _jvm_args(pid)  # the test profile, the default
        data = broker.data_dir
        host, port = broker.bootstrap_servers.split(":")
        assert host == "127.0.0.1"
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    assert not pid_alive(pid)
    assert data is not None and (data / "server.properties").exists()


def test_port_taken_is_one_clear_line(home: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = streamer("kafka", "start", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: broker port {port} on 127.0.0.1 is taken: stop what uses it or choose another port"
    )


def test_restart_on_the_same_port_right_after_stop(home: Path) -> None:
    """A stopped broker's connections linger in TIME_WAIT for about 60 s; they must not
    make `start --port` refuse a port that Kafka itself can bind (SO_REUSEADDR)."""
    port = free_port()
    first = streamer("kafka", "start", "--port", str(port))
    assert first.returncode == 0, first.stderr
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        assert streamer("kafka", "stop").returncode == 0
        client.settimeout(10)
        assert client.recv(1) == b""  # the broker closed its side first ...
    finally:
        client.close()  # ... so that side is now in TIME_WAIT
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # what the old check did, and why it refused
    again = streamer("kafka", "start", "--port", str(port))
    assert again.returncode == 0, again.stderr
    assert f"bootstrap servers: 127.0.0.1:{port}" in again.stdout
    assert streamer("kafka", "stop").returncode == 0


def test_an_unknown_profile_is_one_clear_error() -> None:
    with pytest.raises(LocalKafkaError, match="unknown broker profile 'fast': use one of"):
        LocalKafka(profile="fast")


def test_no_java(home: Path) -> None:
    env = dict(os.environ, PATH="/nonexistent")
    result = streamer("kafka", "start", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no `java` on PATH")
    assert len(result.stderr.strip().splitlines()) == 1


def test_no_mvn_and_nothing_cached(tmp_path: Path) -> None:
    java = subprocess.run(["which", "java"], capture_output=True, text=True).stdout.strip()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "java").symlink_to(os.path.realpath(java))
    env = dict(os.environ, PATH=str(bindir), STREAMER_HOME=str(tmp_path / "empty"))
    result = streamer("kafka", "start", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("error: no `mvn` on PATH and Kafka's jars are not cached")


def test_resolution_fails_offline_with_nothing_cached(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        STREAMER_HOME=str(tmp_path / "empty"),
        STREAMER_MAVEN_ARGS=f"-o -Dmaven.repo.local={tmp_path / 'm2'}",
    )
    result = streamer("kafka", "start", env=env)
    assert result.returncode == 2
    err = result.stderr.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"error: could not resolve Apache Kafka {kafka_version()} with Maven")
    assert not (tmp_path / "empty" / "kafka" / kafka_version() / "libs").exists()


def test_bad_setting_fails_at_format_with_the_cause(home: Path) -> None:
    broker = LocalKafka(quiet=True, extra_properties={"num.io.threads": "-1"})
    with pytest.raises(LocalKafkaError) as info:
        broker.start()
    message = str(info.value)
    assert message.startswith("formatting KRaft storage failed:")
    assert "num.io.threads" in message
    assert "\n" not in message


def test_broker_dying_while_starting_shows_its_log(home: Path, tmp_path: Path) -> None:
    data = tmp_path / "kept"
    with LocalKafka(quiet=True, data_dir=data, keep_data=True):
        pass
    (data / "logs" / "meta.properties").write_text("version=1\nnode.id=7\n")  # damage it
    broker = LocalKafka(quiet=True, data_dir=data)  # reuses the kept data: no format
    with pytest.raises(LocalKafkaError) as info:
        broker.start()
    first, *tail = str(info.value).splitlines()
    assert first.startswith("the Kafka broker exited with code 1 while starting; last lines")
    assert any("meta.properties" in line for line in tail)
    assert not any(line.lstrip().startswith("at ") for line in tail)
    assert broker.proc is None


def test_start_timeout(home: Path) -> None:
    broker = LocalKafka(quiet=True, start_timeout=0.3)
    with pytest.raises(LocalKafkaError, match=r"did not answer within 0 s"):
        broker.start()
    assert broker.proc is None  # the half-started broker was killed
