"""Fixtures of the integration tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.localkafka import kafka_version, resolve_kafka_jars
from streamer.localkafka.broker import pid_alive, read_state


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh STREAMER_HOME that reuses the cached jars (no network); a broker a
    failed test left running there is killed by its pid."""
    libs = resolve_kafka_jars(quiet=True)
    target = tmp_path / "home" / "kafka" / kafka_version()
    target.mkdir(parents=True)
    (target / "libs").symlink_to(libs)
    monkeypatch.setenv("STREAMER_HOME", str(tmp_path / "home"))
    yield tmp_path / "home"
    info = read_state()
    if info is not None and pid_alive(info.pid):
        os.kill(info.pid, 9)
