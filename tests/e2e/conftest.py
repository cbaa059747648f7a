"""Fixtures for end-to-end tests: a local cluster (real processes) per test."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from streamer.runtime.faults import FaultHooks
from streamer.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report carries the tails of its cluster's logs (CI keeps no
    files, so this is what explains a failure there)."""
    report = yield
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if call.when == "call" and report.failed and isinstance(cluster, LocalCluster):
        report.sections.append(("cluster logs", cluster.log_tails()))
    return report


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LocalCluster]:
    """A coordinator and two workers; stopped by their pids even when the test fails.

    A test installs fault hooks on the workers with
    ``@pytest.mark.parametrize("cluster", [FaultHooks(...)], indirect=True)``."""
    hooks: FaultHooks = getattr(request, "param", FaultHooks())
    env = {} if hooks.empty else hooks.install(tmp_path / "faults.json")
    with LocalCluster(2, slots=8, warm=1, work_dir=tmp_path / "cluster", cwd=REPO, env=env) as c:
        yield c
