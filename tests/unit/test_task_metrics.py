"""Back-pressure in a task's metrics: time blocked on the outputs, and its ratio."""

from __future__ import annotations

import asyncio
import time

from streamer.runtime.outputs import WriterOutput
from streamer.runtime.task_metrics import Counters, MetricSources, collect


def test_blocked_seconds_count_the_drain_waits_including_one_going_on() -> None:
    async def scenario() -> tuple[float, float, float]:
        out = WriterOutput([])
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        out.waits.append(fut)
        draining = asyncio.ensure_future(out.drain())
        await asyncio.sleep(0.2)
        during = out.blocked_seconds()
        fut.set_result(None)
        await draining
        after = out.blocked_seconds()
        await asyncio.sleep(0.1)
        return during, after, out.blocked_seconds()

    during, after, later = asyncio.run(scenario())
    assert 0.18 <= during <= 0.5
    assert during <= after <= 0.5
    assert later == after  # not blocked any more: the total stays


def test_backpressure_ratio_is_the_share_of_time_blocked_since_the_last_collect() -> None:
    blocked = [0.0]
    m = MetricSources(Counters(), {}, blocked=lambda: blocked[0])
    first = collect(m)["backpressure"]
    assert first == {"seconds": 0.0, "ratio": 0.0}  # no previous collect: no ratio yet
    time.sleep(0.2)
    blocked[0] = 0.1  # blocked half of the 0.2 s
    second = collect(m)["backpressure"]
    assert second["seconds"] == 0.1
    assert 0.3 <= second["ratio"] <= 0.5
    time.sleep(0.1)
    assert collect(m)["backpressure"]["ratio"] == 0.0  # not blocked since


def test_a_task_without_outputs_reports_no_backpressure() -> None:
    out = collect(MetricSources(Counters(records_processed=3), {}))
    assert out["backpressure"] == {"seconds": 0.0, "ratio": 0.0}
    assert "state" not in out and "channels" not in out
