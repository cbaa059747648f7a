"""The pytest fixture's choice of broker: env var wins, then Docker, then the local broker."""

from __future__ import annotations

from streamer.testing.kafka import ENV_BOOTSTRAP, KafkaBackend, choose_kafka_backend, docker_ping


def never_called() -> bool:
    raise AssertionError("the Docker ping must not run when the env var is set")


def test_env_var_wins_without_pinging_docker() -> None:
    env = {ENV_BOOTSTRAP: "broker:9092"}
    assert choose_kafka_backend(env, never_called) is KafkaBackend.ENV


def test_docker_answers_means_container() -> None:
    assert choose_kafka_backend({}, lambda: True) is KafkaBackend.CONTAINER


def test_no_docker_means_local_broker() -> None:
    assert choose_kafka_backend({}, lambda: False) is KafkaBackend.LOCAL


def test_blank_env_var_is_ignored() -> None:
    assert choose_kafka_backend({ENV_BOOTSTRAP: "  "}, lambda: False) is KafkaBackend.LOCAL
    assert choose_kafka_backend({ENV_BOOTSTRAP: ""}, lambda: True) is KafkaBackend.CONTAINER


def test_docker_ping_is_false_for_an_unreachable_engine(monkeypatch: object) -> None:
    import pytest

    mp = pytest.MonkeyPatch()
    try:
        mp.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        assert docker_ping(timeout=0.5) is False
    finally:
        mp.undo()
