"""`streamer run` outlives a coordinator that stops answering for a while: one status
poll times out, it says so and keeps watching, and the job goes on (issue 11: it used
to tear the whole cluster down at the first slow poll)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamer.testing import TopicFactory
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(180)]

REPO = Path(__file__).resolve().parents[2]


def _descendants(pid: int) -> list[int]:
    out: list[int] = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += [int(child), *_descendants(int(child))]
    return out


def _coordinator_of(run_pid: int, deadline: float) -> int:
    """The coordinator process `streamer run` started (found among its own children)."""
    while time.monotonic() < deadline:
        for pid in _descendants(run_pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"streamer.coordinator" in cmdline:
                return pid
        time.sleep(0.2)
    raise AssertionError("streamer run started no coordinator")


def test_run_keeps_watching_through_a_coordinator_stall(
    tmp_path: Path, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    src, out = kafka_topics.create(4), kafka_topics.create(2)
    env = dict(os.environ, STREAMER_HOME=str(tmp_path / "home"))
    log = tmp_path / "run.log"
    with log.open("wb") as sink:
        run = subprocess.Popen(
            [
                sys.executable, "-m", "streamer.cli", "run", "examples.keyed_count:job",
                "--bootstrap-servers", kafka_bootstrap, "--workers", "1", "--duration", "25",
                "--param", f"in={src}", "--param", f"out={out}", "--param", "parallelism=2",
            ],
            stdout=sink, stderr=subprocess.STDOUT, cwd=REPO, env=env,
        )  # fmt: skip
    feeder = EventFeeder(kafka_bootstrap, src, rate=200).start()
    coordinator = 0
    try:
        coordinator = _coordinator_of(run.pid, time.monotonic() + 60)
        while b"RUNNING" not in log.read_bytes():
            assert run.poll() is None, log.read_text()
            time.sleep(0.2)
        os.kill(coordinator, signal.SIGSTOP)  # answers nothing for 8 s: a poll times out
        time.sleep(8.0)
        os.kill(coordinator, signal.SIGCONT)
        assert run.wait(timeout=90) == 0, log.read_text()
    finally:
        feeder.stop()
        if coordinator:
            with contextlib.suppress(ProcessLookupError):
                os.kill(coordinator, signal.SIGCONT)
        if run.poll() is None:
            run.kill()
            run.wait(timeout=30)
    text = log.read_text()
    assert "status poll failed (no " in text  # no answer (handshake) or no reply (request)
    assert "within 5 s" in text and "; still watching" in text
    lines = text.splitlines()
    after = lines[max(i for i, line in enumerate(lines) if "still watching" in line) + 1 :]
    assert any("RUNNING" in line for line in after), text  # the progress went on
    assert lines[-1].startswith("job job-") and lines[-1].endswith(" CANCELED"), text
