"""Fixtures for end-to-end tests: a local cluster (real processes) per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.testing.cluster import LocalCluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    """A coordinator and two workers; stopped by their pids even when the test fails."""
    with LocalCluster(2, slots=8, warm=1, work_dir=tmp_path / "cluster", cwd=REPO) as c:
        yield c
