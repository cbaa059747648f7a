"""``streamer bench throughput``'s summary: medians, issue 14's targets, the table, the plot.

Pure functions over the runs ``streamer.bench.throughput`` collected (no I/O but
``print_summary`` and ``plot``). Every median comes with the individual runs.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from streamer.bench.ceiling import TUNED

Runs = list[dict[str, Any]]


def med(values: Iterable[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def spread(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def summarize_ceiling(runs: Runs) -> dict[str, Any]:
    """Median records/s and CPU per record per ``variant/processes``; the ceiling: the
    best tuned variant's median at the most processes."""
    groups: dict[str, Runs] = {}
    for r in runs:
        groups.setdefault(f"{r['variant']}/{r['processes']}", []).append(r)
    medians = {
        key: {
            "rate": med(r["rate"] for r in rs),
            "rates": spread(r["rate"] for r in rs),
            "cpu_per_record_us": med(r["cpu_per_record_us"] for r in rs),
        }
        for key, rs in groups.items()
    }
    most = max((r["processes"] for r in runs), default=0)
    tuned = [
        (m["rate"], key)
        for key, m in medians.items()
        if key.split("/")[0] in TUNED and int(key.split("/")[1]) == most and m["rate"]
    ]
    best = max(tuned, default=None)
    ceiling = None if best is None else {"variant": best[1], "rate": best[0]}
    return {"medians": medians, "ceiling": ceiling}


def summarize_count(runs: dict[str, Runs], ceiling: float | None) -> dict[str, Any]:
    out = {}
    for delivery, rs in runs.items():
        rate = med(r["rate"] for r in rs)
        out[delivery] = {
            "rate": rate,
            "rates": spread(r["rate"] for r in rs),
            "overall_rate": med(r["overall_rate"] for r in rs),
            "share_of_ceiling": None if rate is None or not ceiling else rate / ceiling,
            "cpu_per_record_us": med(r["cpu_per_record_us"] for r in rs),
            "cpus_per_record_us": spread(r["cpu_per_record_us"] for r in rs),
        }
    return out


def summarize_latency(runs: dict[str, Runs]) -> dict[str, Any]:
    return {
        delivery: {
            "rate": med(r["rate"] for r in rs),
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "p99s_ms": spread(r["p99_ms"] for r in rs),
            "to_kafka_p50_ms": med(r["to_kafka"]["p50_ms"] for r in rs),
            "to_kafka_p99_ms": med(r["to_kafka"]["p99_ms"] for r in rs),
            "missing": sum(r["missing"] for r in rs),
            "cpu_pressure": med(r.get("cpu_pressure") for r in rs),
        }
        for delivery, rs in runs.items()
    }


def summarize_breakdown(runs: dict[str, Runs]) -> dict[str, Any]:
    """Per sink and stage: the median over runs of the stage's p50 and p99, and of each
    boundary's age p50/p99 (ms)."""
    out: dict[str, Any] = {}
    for delivery, rs in runs.items():
        results = [r["breakdown"] for r in rs if r.get("breakdown")]
        if not results:
            continue
        stages = [
            {
                "stage": s["stage"],
                "holds": s["holds"],
                "p50_ms": med(r["stages"][i]["p50_ms"] for r in results),
                "p99_ms": med(r["stages"][i]["p99_ms"] for r in results),
            }
            for i, s in enumerate(results[0]["stages"])
        ]
        ages = {
            b: {q: med(r["ages"][b][q] for r in results) for q in ("p50_ms", "p99_ms")}
            for b in results[0]["ages"]
        }
        job = {q: med((r.get("job") or {}).get(q) for r in results) for q in ("p50_ms", "p99_ms")}
        out[delivery] = {
            "rate": med(r["rate"] for r in rs),
            "stages": stages,
            "ages": ages,
            "job": job,
            "end_to_end": {q: med(r[q] for r in rs) for q in ("p50_ms", "p99_ms")},
            "cpu_pressure": med(r.get("cpu_pressure") for r in rs),
            "broker_alone": {
                q: med((r.get("broker_alone") or {}).get(q) for r in rs)
                for q in ("p50_ms", "p99_ms")
            },
        }
    return out


def summarize_join(search: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for system, points in search["points"].items():
        best = search["max_sustained"][system]
        at_max = [
            p for p in points
            if p.get("run") is not None and p["rate"] == best[p["run"]]
        ]  # fmt: skip
        half = search["half_load"].get(system) or []
        out[system] = {
            "max_sustained": med(best),
            "max_sustained_runs": best,
            "ladder_top": max(search["rates"], default=None),
            "fails_at": med(search["fails_at"][system]),
            "p50_ms_at_max": med(p["p50_ms"] for p in at_max),
            "p99_ms_at_max": med(p["p99_ms"] for p in at_max),
            "cpu_per_order_ms_at_max": med(p.get("cpu_per_order_ms") for p in at_max),
            "half_load": {
                "rate": med(p["rate"] for p in half),
                "p50_ms": med(p["p50_ms"] for p in half),
                "p99_ms": med(p["p99_ms"] for p in half),
            },
        }
    return out


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets beside the figures: met True/False, None when not measured."""
    count = summary.get("count") or {}
    alo, eo = count.get("at_least_once") or {}, count.get("exactly_once") or {}
    # the half-load p99: the plain latency runs', else the traced ones' (`bench latency`)
    lat = (
        (summary.get("latency") or {}).get("at_least_once")
        or ((summary.get("breakdown") or {}).get("at_least_once") or {}).get("end_to_end")
        or {}
    )
    join = summary.get("join") or {}
    ours, faust = join.get("streamer") or {}, join.get("faust") or {}
    out: list[dict[str, Any]] = []

    def add(
        what: str, value: float | None, show: Callable[[float], str], ok: Callable[[float], bool]
    ) -> None:
        """One target; a figure not measured (None) shows "-" and is neither met nor not."""
        shown = "-" if value is None else show(value)
        out.append(
            {
                "target": what,
                "value": value,
                "shown": shown,
                "met": None if value is None else ok(value),
            }
        )

    add(
        "keyed count at-least-once >= 30% of the tuned 2-process ceiling",
        alo.get("share_of_ceiling"),
        lambda v: f"{v:.1%}",
        lambda v: v >= 0.30,
    )
    add(
        "keyed count at-least-once CPU per record <= 8 us",
        alo.get("cpu_per_record_us"),
        lambda v: f"{v:.1f} us",
        lambda v: v <= 8.0,
    )
    ratio = None if not alo.get("rate") or eo.get("rate") is None else eo["rate"] / alo["rate"]
    add(
        "keyed count exactly-once within 15% of at-least-once",
        ratio,
        lambda v: f"{v:.0%} of it",
        lambda v: v >= 0.85,
    )
    add(
        "keyed count at half load, p99 <= 50 ms (at-least-once)",
        lat.get("p99_ms"),
        lambda v: f"{v:,.0f} ms",
        lambda v: v <= 50.0,
    )
    a, b = ours.get("max_sustained"), faust.get("max_sustained")
    add(
        "order join max sustained >= 5x the Faust peer's",
        None if a is None or not b else a / b,
        lambda v: f"{v:.1f}x ({a:,.0f} vs {b:,.0f}/s)",
        lambda v: v >= 5,
    )
    add(
        "order join p99 <= 100 ms at half its own max",
        (ours.get("half_load") or {}).get("p99_ms"),
        lambda v: f"{v:,.0f} ms",
        lambda v: v <= 100.0,
    )
    return out  # fmt: skip


def _f(v: float | None, unit: str = "", fmt: str = ",.0f") -> str:
    return "-" if v is None else f"{v:{fmt}}{unit}"


def _runs(values: list[float], fmt: str = ",.0f") -> str:
    return "" if len(values) < 2 else " (runs: " + ", ".join(f"{v:{fmt}}" for v in values) + ")"


def print_summary(summary: dict[str, Any]) -> None:
    print("\n== medians (individual runs in brackets) ==")
    ceiling = summary.get("ceiling")
    if ceiling:
        print("ceiling (plain processes: consume, orjson decode/encode, produce):")
        for key, m in ceiling["medians"].items():
            cpu = _f(m["cpu_per_record_us"], " us/record", ".1f")
            print(f"  {key:<16}{_f(m['rate']):>12} records/s  {cpu}{_runs(m['rates'])}")
        if ceiling["ceiling"]:
            c = ceiling["ceiling"]
            print(f"  the ceiling: {c['variant']} at {_f(c['rate'])} records/s")
    for delivery, c in (summary.get("count") or {}).items():
        share = _f(c["share_of_ceiling"], fmt=".1%")
        cpu = _f(c["cpu_per_record_us"], " us/record", ".1f")
        print(
            f"keyed count {delivery:<14}{_f(c['rate']):>10} records/s  {share} of the "
            f"ceiling  CPU {cpu}{_runs(c['rates'])}{_runs(c['cpus_per_record_us'], '.1f')}"
        )
    for delivery, m in (summary.get("latency") or {}).items():
        print(
            f"latency {delivery:<14} at {_f(m['rate'])}/s: p50 {_f(m['p50_ms'], ' ms')}, "
            f"p99 {_f(m['p99_ms'], ' ms')}{_runs(m['p99s_ms'])}; to the sink's produce: "
            f"p50 {_f(m['to_kafka_p50_ms'], ' ms')}, p99 {_f(m['to_kafka_p99_ms'], ' ms')}"
            f"; CPU contention {_f(m.get('cpu_pressure'), fmt='.0%')} of the time"
        )
    for delivery, b in (summary.get("breakdown") or {}).items():
        print(f"latency breakdown {delivery} at {_f(b['rate'])}/s (per traced record):")
        for s in b["stages"]:
            print(f"  {s['stage']:<20} p50 {_f(s['p50_ms'], ' ms', ',.1f'):>11}"
                  f"  p99 {_f(s['p99_ms'], ' ms', ',.1f'):>11}  {s['holds']}")  # fmt: skip
        received = b["ages"].get("received") or {}
        print(f"  {'end to end':<20} p50 {_f(received.get('p50_ms'), ' ms', ',.1f'):>11}"
              f"  p99 {_f(received.get('p99_ms'), ' ms', ',.1f'):>11}")  # fmt: skip
        job = b.get("job") or {}
        print(f"  {'job (append->recv)':<20} p50 {_f(job.get('p50_ms'), ' ms', ',.1f'):>11}"
              f"  p99 {_f(job.get('p99_ms'), ' ms', ',.1f'):>11}  CPU contention "
              f"{_f(b.get('cpu_pressure'), fmt='.0%')} of the time")  # fmt: skip
        alone = b.get("broker_alone") or {}
        print(f"  {'broker alone':<20} p50 {_f(alone.get('p50_ms'), ' ms', ',.1f'):>11}"
              f"  p99 {_f(alone.get('p99_ms'), ' ms', ',.1f'):>11}  the same feeder and "
              f"reader, no job, just before")  # fmt: skip
    for system, j in (summary.get("join") or {}).items():
        runs = ", ".join(_f(v) for v in j["max_sustained_runs"])
        half = j["half_load"]
        top = " (the ladder's top)" if j["max_sustained"] == j.get("ladder_top") else ""
        cpu = _f(j["cpu_per_order_ms_at_max"], " ms", ".2f")
        print(f"order join {system:<9} max sustained {_f(j['max_sustained'], '/s')}{top} (runs: "
              f"{runs}), fails at {_f(j['fails_at'], '/s')}; there p50/p99 "
              f"{_f(j['p50_ms_at_max'])}/{_f(j['p99_ms_at_max'])} ms, CPU {cpu}/order; at "
              f"{_f(half['rate'])}/s p50/p99 {_f(half['p50_ms'])}/"
              f"{_f(half['p99_ms'])} ms")  # fmt: skip
    measured = [t for t in summary.get("targets", []) if t["met"] is not None]
    if not measured:
        return
    print("\n== issue 14's targets ==")
    for t in summary.get("targets", []):
        mark = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
        print(f"  {mark:<13}{t['target']}: {t['shown']}")


def plot(search: dict[str, Any], path: Path) -> bool:
    """Latency (p50 dashed, p99 solid) against offered rate per system: lines through the
    medians over runs at each rate, a marker per run (round: p99, small: p50), hollow
    where that run did not sustain the rate. False without data."""
    series: dict[str, dict[float, Runs]] = {}
    for system, points in search["points"].items():
        for p in [*points, *(search["half_load"].get(system) or [])]:
            if p.get("p99_ms") is not None:
                series.setdefault(system, {}).setdefault(float(p["rate"]), []).append(p)
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colors = {"streamer": "tab:blue", "faust": "tab:orange"}
    for system, by_rate in series.items():
        rates = sorted(by_rate)
        color = colors.get(system, "tab:gray")
        for q, style in (("p50_ms", "--"), ("p99_ms", "-")):
            ys = [med(p[q] for p in by_rate[r]) or float("nan") for r in rates]
            ax.plot(rates, ys, style, color=color, label=f"{system} {q[:3]} (median)")
            size = 6 if q == "p99_ms" else 3
            for r in rates:
                for p in by_rate[r]:
                    fill = color if p["sustained"] else "white"
                    ax.plot([r], [p[q]], "o", color=color, mfc=fill, markersize=size)
    ax.axhline(1000, color="gray", linewidth=0.8, linestyle=":")
    ax.axhline(100, color="gray", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks(sorted({r for by_rate in series.values() for r in by_rate}))
    ax.set_xlabel("offered rate (orders/s)")
    ax.set_ylabel("latency (ms): last piece produced -> result emitted")
    ax.set_title("order join: latency against rate (a marker per run; hollow: not sustained)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
