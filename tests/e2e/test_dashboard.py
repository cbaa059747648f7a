"""The dashboard in a real browser: Playwright drives Debian's headless chromium against
a running job, a task is killed, and the page shows the failover and the new attempt.

The browser is ``$STREAMER_CHROMIUM`` or ``chromium`` on ``PATH`` (``make test``
installs Debian's package as root; Playwright's own browser download is not used).
Without one the test is skipped with the reason, unless ``STREAMER_REQUIRE_BROWSER=1``
(set by ``make test`` once it installed chromium), where that is a failure.
Screenshots go to the test's ``tmp_path``. Playwright's sync API runs an event loop
on this thread, so the cluster's client (which runs its own) is called on another
(``off_loop``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest

from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster
from tests.e2e.monitoring import attempt_of, failover_done, start_job

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

TIMEOUT_MS = 60_000
T = TypeVar("T")
_client_thread = ThreadPoolExecutor(1, thread_name_prefix="cluster-client")


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` on a thread without Playwright's event loop."""
    return _client_thread.submit(fn, *args, **kwargs).result()


def chromium_path() -> str | None:
    given = os.environ.get("STREAMER_CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture
def page() -> Iterator[Any]:
    path = chromium_path()
    if path is None:
        reason = "no chromium: install Debian's chromium or set STREAMER_CHROMIUM"
        if os.environ.get("STREAMER_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=path, headless=True)
        try:
            context = browser.new_context(viewport={"width": 1500, "height": 1300})
            yield context.new_page()
        finally:
            browser.close()


def test_the_dashboard_shows_a_failover_and_the_new_attempt(
    cluster: LocalCluster,
    kafka_bootstrap: str,
    kafka_topics: TopicFactory,
    page: Any,
    tmp_path: Path,
) -> None:
    job_id, feeder = off_loop(start_job, cluster, kafka_bootstrap, kafka_topics)
    try:
        before = attempt_of(off_loop(cluster.status, job_id), "count#1")
        page.goto(f"http://127.0.0.1:{cluster.status_port}/#{job_id}")

        # the job list, the graph, the task table, the checkpoints: all live
        page.wait_for_selector(f'.job-list li[data-job="{job_id}"]', timeout=TIMEOUT_MS)
        assert page.inner_text("#job h1").startswith("watermarked-count")
        row = f'#tasks tr[data-task="count#1"][data-attempt="{before}"]'
        page.wait_for_selector(row, timeout=TIMEOUT_MS)
        assert page.locator("#tasks tbody tr").count() == 8
        assert page.locator("#graph .vertex").count() == 3
        assert "\u00d74" in (page.text_content('#graph .vertex[data-vertex="count"]') or "")  # x4
        edge_labels = sorted(page.locator("#graph .edge-label").all_text_contents())
        assert edge_labels == ["hash · pipelined", "rebalance · pipelined"]
        assert page.inner_text("#failovers .muted") == "No failover yet."
        page.wait_for_function(
            "document.querySelectorAll('#checkpoints .cp-bar.completed').length >= 2",
            timeout=TIMEOUT_MS,
        )
        page.wait_for_function(  # records/s computed from two metric reports
            "[...document.querySelectorAll('#tasks tr[data-task^=\"count\"] td:nth-child(5)')]"
            ".some(td => Number(td.textContent) > 0)",
            timeout=TIMEOUT_MS,
        )
        page.screenshot(path=str(tmp_path / "dashboard-running.png"), full_page=True)

        off_loop(cluster.kill_task, job_id, "count#1")

        timeline = '#failovers .tl-row[data-failover="1"]'
        page.wait_for_selector(f'{timeline}[data-status="done"]', timeout=TIMEOUT_MS)
        page.wait_for_selector(
            f'#tasks tr[data-task="count#1"][data-attempt="{before + 1}"]', timeout=TIMEOUT_MS
        )
        status = off_loop(cluster.wait_for, job_id, failover_done, what="failover done")
        record = status["failovers"][0]
        assert record["task"] == "count#1" and record["strategy"] == "individual"
        assert page.get_attribute(timeline, "data-fell-back") == str(record["fell_back"]).lower()
        label = page.inner_text(f"{timeline} .tl-label")
        assert label.startswith("#1 count#1")
        assert "individual" in label.lower()
        cell = '#tasks tr[data-task="count#1"] td.attempt'
        assert page.inner_text(cell) == str(before + 1)
        # the phases are drawn: detection (a kill was requested), deploy, ..., channels
        for phase in ("detect", "deploy", "channels"):
            assert page.locator(f"{timeline} .tl-seg.{phase}").count() == 1, phase
        page.wait_for_timeout(1500)  # a couple more polls: rates and timeline settle
        shot = tmp_path / "dashboard.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if os.environ.get("STREAMER_DASHBOARD_SCREENSHOT"):  # docs: refresh the README's
            shutil.copy(shot, os.environ["STREAMER_DASHBOARD_SCREENSHOT"])
    finally:
        feeder.stop()
