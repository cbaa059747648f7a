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


def test_a_kafka_exchange_is_refused_until_the_runtime_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module: Any = types.ModuleType("kafka_exchange_job")
    module.job = _job
    monkeypatch.setitem(sys.modules, "kafka_exchange_job", module)
    with pytest.raises(StreamerError) as info:
        JobMaster(None, "j", "kafka_exchange_job:job", {"checkpoint_dir": str(tmp_path)})  # type: ignore[arg-type]
    message = str(info.value)
    assert message.endswith(
        "uses a kafka exchange, which the runtime does not run yet; use a pipelined "
        "exchange (remove .exchange('kafka'))"
    )
    assert "\n" not in message
