"""Jobs the runtime cannot run are refused at submission with one clear line."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

import streamer
from streamer.api import StreamEnvironment
from streamer.coordinator.jobmaster import JobMaster
from streamer.errors import StreamerError


@streamer.job
def _job() -> StreamEnvironment:
    env = StreamEnvironment("kx")
    (
        env.from_kafka("a", name="src")
        .map(str, name="m1")
        .exchange("kafka", topic="mid")
        .map(str, name="m2")
        .to_kafka("b", name="out")
    )
    return env


@streamer.job
def _two_inputs() -> StreamEnvironment:
    env = StreamEnvironment("kx2")
    a = env.from_kafka("a", name="src").exchange("kafka", topic="mid").key_by(str)
    b = env.from_kafka("b", name="other").key_by(str)
    a.connect(b).process(print, name="m").to_kafka("c", name="out")
    return env


def _submit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job: Any, **config: Any) -> str:
    module: Any = types.ModuleType("kafka_exchange_job")
    module.job = job
    monkeypatch.setitem(sys.modules, "kafka_exchange_job", module)
    monkeypatch.setenv("STREAMER_STATE_ROOTS", str(tmp_path))
    with pytest.raises(StreamerError) as info:
        JobMaster(None, "j", "kafka_exchange_job:job", {"checkpoint_dir": str(tmp_path), **config})  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message
    return message


def test_a_kafka_exchange_the_runtime_cannot_run_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _submit(tmp_path, monkeypatch, _two_inputs) == (
        "the kafka exchange src -> m (topic 'mid') is one of several inputs of 'm': a kafka "
        "exchange must be its consumer's only input (exchange before the union or join instead)"
    )
    assert _submit(tmp_path, monkeypatch, _job, from_savepoint="sp").startswith(
        "savepoints of a job with a kafka exchange are not supported yet"
    )
