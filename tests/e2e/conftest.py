"""Fixtures for end-to-end tests: a local cluster (real processes) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test's report carries the tails of its cluster's logs (CI keeps no
    files, so this is what explains a failure there)."""
    outcome = yield
    report = outcome.get_result()
    cluster = getattr(item, "funcargs", {}).get("cluster")
    if call.when == "call" and report.failed and isinstance(cluster, LocalCluster):
        report.sections.append(("cluster logs", cluster.log_tails()))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A coordinator and two workers; stopped by their pids even when the test fails."""
    with LocalCluster(2, slots=8, warm=1, work_dir=tmp_path / "cluster", cwd=REPO) as c:
        yield c
