"""LocalCluster(env=...) reaches the coordinator, the workers and their task processes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from streamer.local import LocalCluster

pytestmark = pytest.mark.timeout(120)

REPO = Path(__file__).resolve().parents[2]


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if item)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def test_env_reaches_every_process_the_cluster_starts(tmp_path: Path) -> None:
    mark = {"STREAMER_TEST_MARK": "marked"}
    with LocalCluster(1, slots=2, warm=1, work_dir=tmp_path / "c", cwd=REPO, env=mark) as cluster:
        assert cluster.coordinator is not None
        worker = cluster.workers["w1"].pid
        assert environ(cluster.coordinator.pid)["STREAMER_TEST_MARK"] == "marked"
        assert environ(worker)["STREAMER_TEST_MARK"] == "marked"
        deadline = time.monotonic() + 30
        while not (warm := children(worker)) and time.monotonic() < deadline:
            time.sleep(0.1)  # the warm task processes start after the worker registers
        assert warm, f"the worker started no warm task process\n{cluster.log_tails()}"
        assert all(environ(p)["STREAMER_TEST_MARK"] == "marked" for p in warm)
