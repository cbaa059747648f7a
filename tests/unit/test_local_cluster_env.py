"""LocalCluster(env=...): variables added to the environment of the processes it starts."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest

from streamer.local import LocalCluster

PROBE = "import os, orjson, sys; sys.stdout.buffer.write(orjson.dumps(dict(os.environ)))"


def spawned_environment(cluster: LocalCluster) -> dict[str, str]:
    proc = cluster._spawn(["-c", PROBE], "probe.log")
    assert proc.wait(timeout=30) == 0
    env: dict[str, str] = orjson.loads((cluster.work_dir / "probe.log").read_bytes())
    return env


def test_env_is_added_to_the_environment_of_started_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STREAMER_FAULT_HOOKS", "from-the-parent")
    monkeypatch.setenv("STREAMER_KEPT", "kept")
    cluster = LocalCluster(
        work_dir=tmp_path,
        cwd=tmp_path,
        env={"STREAMER_FAULT_HOOKS": "tests.hooks:kill_once", "STREAMER_OTHER": "1"},
    )
    env = spawned_environment(cluster)
    assert env["STREAMER_FAULT_HOOKS"] == "tests.hooks:kill_once"  # env wins
    assert env["STREAMER_OTHER"] == "1"
    assert env["STREAMER_KEPT"] == "kept"  # the rest of this process's environment
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path)


def test_without_env_the_processes_get_this_processs_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STREAMER_FAULT_HOOKS", raising=False)
    env = spawned_environment(LocalCluster(work_dir=tmp_path, cwd=tmp_path))
    assert "STREAMER_FAULT_HOOKS" not in env
    assert env["PATH"] == os.environ["PATH"]
