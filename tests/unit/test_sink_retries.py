"""The Kafka sink retries calls that fail while a coordinator moves or loads."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, KafkaException

from streamer.connectors import sink


def failing(codes: list[int], result: str = "ok") -> tuple[list[int], Callable[[], str]]:
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        if codes:
            raise KafkaException(KafkaError(codes.pop(0)))
        return result

    return calls, call


def test_coordinator_errors_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink.time, "sleep", lambda _s: None)
    calls, call = failing([KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS])
    assert sink._retrying(call) == "ok"
    assert len(calls) == 3


def test_other_errors_are_raised_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink.time, "sleep", lambda _s: None)
    calls, call = failing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        sink._retrying(call)
    assert len(calls) == 1


def test_retries_end_with_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink.time, "sleep", lambda _s: None)
    calls, call = failing([KafkaError.NOT_COORDINATOR] * 10)
    with pytest.raises(KafkaException):
        sink._retrying(call, attempts=4)
    assert len(calls) == 4
