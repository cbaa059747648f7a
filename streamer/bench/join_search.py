"""The order join's rate search: streamer (as shipped) against the Faust peer.

One *point* runs a system at a fixed rate for a window: a fresh job (streamer: a
``LocalCluster`` with ``examples.order_join`` as ``streamer bench failover`` and the
demo configure it: sources x2, join x8, sink x2, exactly-once sink, a checkpoint
every second, the default recovery settings; Faust: ``bench/throughput_faust.py``,
2 workers), the order generator (``examples.order_join.generate_events``) writing
``rate * window`` orders in event-time order at real-time speed (payments and
shipments trail their orders by up to 6 s, so it writes for ``window`` + ~6 s),
then a read of the output. ``evaluate`` turns a point into:

- ``delivered``: the share of the oracle's orders in the output by the read's end
  (a few seconds after the generator stopped, read committed);
- latency: ``emitted_at`` (set by the join function) - when the order's last piece
  was produced, as ``streamer bench failover`` measures it (for the exactly-once
  sink, a read-committed reader sees a result only when its checkpoint commits:
  up to a checkpoint interval later; ``streamer bench throughput``'s keyed-count
  latency shows that cost); p50/p99 over the *steady* orders, those completed from
  ``RAMP_S`` (or half the window, if shorter) after the start to the window's end;
- lag growth: the backlog (orders whose last piece was produced but that were not
  yet emitted) sampled every 0.5 s over the same steady span, and its least-squares
  slope in orders/s; ``growing`` when the slope exceeds ``GROWTH_SHARE`` of the rate
  (and ``GROWTH_FLOOR``);
- ``sustained``: delivered >= 99%, steady p99 < 1 s and no growing backlog
  (issue 14's definition);
- CPU per order: the system's processes' CPU time over the run / orders;
- ``cpu_pressure``: the share of the point's wall time in which some runnable task
  on the machine waited for a CPU (``/proc/pressure/cpu``): other work on a shared
  machine, which the figures then include.

``search`` walks a rate ladder per run, interleaving the systems at each rate, and
stops a system after ``STOP_AFTER`` failed rates in a row; its max sustained rate
is the highest rate it sustained. Then each system runs once at half its own max.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from streamer.bench.procstat import cpu_pressure, task_pids, total_cpu
from streamer.bench.timeline import percentile

RAMP_S = 6.5  # the generator's shipments trail orders by up to 6 s: completions ramp up
GROWTH_SHARE = 0.02
GROWTH_FLOOR = 2.0  # orders/s: below it, growth is the backlog's noise at low rates
STOP_AFTER = 2
DELIVERED_MIN = 0.99
P99_MAX_MS = 1000.0
LADDER = (250, 350, 500, 700, 1000, 1400, 2000, 2800, 4000, 5600, 8000)

Point = dict[str, Any]
PointFn = Callable[[float, float, int], Point]
"""``fn(rate, window, seed)``: one point of one system."""


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ``ys`` over ``xs`` (0 for fewer than 2 points)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


def evaluate(
    rate: float,
    window: float,
    oracle: set[str],
    last_piece_at: dict[str, float],
    outputs: Iterable[tuple[str, float]],
    started_at: float,
) -> Point:
    """A point's measurements from ``(order id, emitted_at)`` outputs (see the module)."""
    emitted: dict[str, float] = {}
    duplicates = 0
    for oid, at in outputs:
        if oid in emitted:
            duplicates += 1
            emitted[oid] = min(emitted[oid], at)
        else:
            emitted[oid] = at
    delivered = [o for o in oracle if o in emitted]
    lo, hi = started_at + min(RAMP_S, window / 2), started_at + window
    steady = [
        (emitted[o] - last_piece_at[o]) * 1000
        for o in delivered
        if o in last_piece_at and lo <= last_piece_at[o] <= hi
    ]
    done = sorted(last_piece_at[o] for o in oracle if o in last_piece_at)
    out = sorted(emitted[o] for o in delivered)
    xs, ys = [], []
    t = lo
    while t <= hi:
        xs.append(t - started_at)
        ys.append(_count_le(done, t) - _count_le(out, t))
        t += 0.5
    growth = slope(xs, ys)
    share = len(delivered) / len(oracle) if oracle else 0.0
    p99 = percentile(steady, 0.99)
    growing = growth > max(GROWTH_SHARE * rate, GROWTH_FLOOR)
    return {
        "rate": rate,
        "window_s": window,
        "expected": len(oracle),
        "delivered": share,
        "duplicates": duplicates,
        "p50_ms": percentile(steady, 0.5),
        "p99_ms": p99,
        "steady_results": len(steady),
        "backlog_end": ys[-1] if ys else None,
        "backlog_growth_per_s": growth,
        "growing": growing,
        "sustained": share >= DELIVERED_MIN and p99 is not None and p99 < P99_MAX_MS
        and not growing,
    }  # fmt: skip


def _count_le(ordered: list[float], t: float) -> int:
    import bisect

    return bisect.bisect_right(ordered, t)


def streamer_point(bootstrap: str, rate: float, window: float, seed: int, repo: Path) -> Point:
    """The order join as shipped at ``rate`` orders/s for ``window`` s."""
    import orjson

    from examples.order_join import TOPICS, expected_results, generate_events
    from streamer.bench.failover import ORDER_JOIN, order_join_config
    from streamer.bench.loadgen import OrderFeeder, read_all
    from streamer.local.cluster import LocalCluster, all_running
    from streamer.testing import TopicFactory

    events = generate_events(max(1, int(rate * window)), seed, rate)
    oracle = expected_results(events)
    with (
        TopicFactory(bootstrap, prefix="bench-join") as topics,
        LocalCluster(2, cwd=repo) as cluster,
    ):
        names = {t: topics.create(8) for t in TOPICS}
        out = topics.create(4)
        config = order_join_config("lossless", bootstrap, cluster, names, out)
        job_id = cluster.submit(ORDER_JOIN, config)
        status = cluster.wait_for(job_id, all_running, timeout=120, what="all tasks running")
        pids = list(task_pids(status, [p.pid for p in cluster.workers.values()]).values())
        cpu0 = total_cpu(pids)
        producer = OrderFeeder(bootstrap, names, events)
        producer.start()
        lags: list[int] = []
        while producer.is_alive():
            producer.join(1.0)
            lags.append(_source_lag(cluster.status(job_id)))
        if producer.error is not None:
            raise producer.error
        time.sleep(2.0)  # the last results' checkpoint commits
        records = read_all(bootstrap, out, expected=len(oracle), idle=1.5, timeout=30)
        cpu1 = total_cpu(pids)
    results = [orjson.loads(value) for value, _ in records]
    point = evaluate(
        rate,
        window,
        oracle,
        producer.last_piece_at,
        ((r["order_id"], r["emitted_at"]) for r in results),
        producer.started_at,
    )
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    point.update(
        system="streamer",
        cpu_s=cpu,
        cpu_per_order_ms=None if cpu is None else cpu / len(events["orders"]) * 1000,
        source_lag_max=max(lags, default=0),
    )
    return point


def _source_lag(status: dict[str, Any]) -> int:
    return sum(
        sum(t["metrics"].get("source", {}).get("lag", {}).values()) for t in status.get("tasks", [])
    )


def faust_point_fn(progress: Callable[[str], None]) -> Callable[..., Point] | None:
    """The Faust peer's ``faust_point(bootstrap, rate, window, seed)``, or None (with the
    reason printed) when the peers extra is missing."""
    try:
        from bench.throughput_faust import (  # type: ignore[import-not-found,unused-ignore]
            faust_point,
        )
    except ImportError as exc:
        progress(f"  faust: skipped ({exc}); install the peers extra: pip install -e '.[peers]'")
        return None
    fn: Callable[..., Point] = faust_point
    return fn


def search(
    systems: dict[str, PointFn],
    *,
    rates: Sequence[float],
    window: float,
    runs: int,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """The rate search per run (systems interleaved at each rate), then half load."""
    points: dict[str, list[Point]] = {name: [] for name in systems}
    best: dict[str, list[float | None]] = {name: [] for name in systems}
    fails_at: dict[str, list[float | None]] = {name: [] for name in systems}
    for run in range(runs):
        active = dict(systems)
        failed_in_row = dict.fromkeys(systems, 0)
        top: dict[str, float | None] = dict.fromkeys(systems)
        first_fail: dict[str, float | None] = dict.fromkeys(systems)
        for i, rate in enumerate(rates):
            for name, fn in list(active.items()):
                progress(f"  join run {run + 1}/{runs}: {name} at {rate:g} orders/s ...")
                point = _safe_point(fn, name, rate, window, seed + 100 * run + i)
                point.update(run=run, system=name)
                points[name].append(point)
                progress(f"    {describe(point)}")
                if point["sustained"]:
                    top[name], failed_in_row[name] = rate, 0
                else:
                    failed_in_row[name] += 1
                    if first_fail[name] is None and (top[name] or 0) < rate:
                        first_fail[name] = rate
                    if failed_in_row[name] >= STOP_AFTER:
                        del active[name]
            if not active:
                break
        for name in systems:
            best[name].append(top[name])
            fails_at[name].append(first_fail[name])
    half: dict[str, list[Point]] = {name: [] for name in systems}
    for name, fn in systems.items():
        sustained = [b for b in best[name] if b is not None]
        if not sustained:
            continue
        rate = statistics.median(sustained) / 2
        progress(f"  join half load: {name} at {rate:g} orders/s (half its max) ...")
        point = _safe_point(fn, name, rate, window, seed + 999)
        point.update(system=name, half_of=rate * 2)
        half[name].append(point)
        progress(f"    {describe(point)}")
    return {
        "rates": list(rates),
        "window_s": window,
        "points": points,
        "max_sustained": best,
        "fails_at": fails_at,
        "half_load": half,
    }


def _safe_point(fn: PointFn, name: str, rate: float, window: float, seed: int) -> Point:
    """A point, with ``cpu_pressure``: the share of its wall time in which some runnable
    task on the machine waited for a CPU (other work on a shared machine). A failed run
    counts as not sustained (with its error) rather than ending the search."""
    stalled, wall = cpu_pressure(), time.monotonic()
    point = _run_point(fn, name, rate, window, seed)
    stalled_end = cpu_pressure()
    point["cpu_pressure"] = (
        None
        if stalled is None or stalled_end is None
        else (stalled_end - stalled) / (time.monotonic() - wall)
    )
    return point


def _run_point(fn: PointFn, name: str, rate: float, window: float, seed: int) -> Point:
    try:
        return fn(rate, window, seed)
    except Exception as exc:  # noqa: BLE001 - recorded in the point and printed
        return {
            "rate": rate,
            "system": name,
            "error": f"{type(exc).__name__}: {exc}"[:500],
            "sustained": False,
            "delivered": None,
            "p50_ms": None,
            "p99_ms": None,
        }


def describe(point: Point) -> str:
    if point.get("error"):
        return f"{point['rate']:g}/s: failed to run: {point['error']}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    cpu = point.get("cpu_per_order_ms")
    pressure = point.get("cpu_pressure")
    return (
        f"{point['rate']:g}/s: delivered {point['delivered']:.1%}, p50/p99 "
        f"{ms(point['p50_ms'])}/{ms(point['p99_ms'])} ms, backlog "
        f"{point['backlog_growth_per_s']:+.1f}/s"
        + ("" if cpu is None else f", CPU {cpu:.2f} ms/order")
        + ("" if pressure is None else f", CPU contention {pressure:.0%}")
        + (" -> sustained" if point["sustained"] else " -> not sustained")
    )
