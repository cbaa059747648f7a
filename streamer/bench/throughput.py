"""``streamer bench throughput``: what real jobs carry on this machine (issue 14).

In one session, against one broker, each part ``--runs`` times, interleaved:

- ``ceiling``: plain Python processes (confluent-kafka + orjson: consume, decode,
  encode, produce; ``streamer.bench.ceiling``) over a preloaded topic of
  ``--records`` events of ~93 bytes, 1 and 2 processes, per client-settings
  variant (librdkafka defaults, tuned); records/s and CPU per record;
- ``count``: ``examples.keyed_count`` (2 sources -> 4 counts -> 2 sinks, a checkpoint
  every second) at max rate over the same topic, at-least-once and exactly-once
  sink: records/s, share of the tuned 2-process ceiling, CPU per record of the task
  processes (``streamer.bench.keyed``);
- ``latency``: the keyed count fed at half its measured max rate (or
  ``--latency-rate``) for ``--window`` s: p50/p99 from produce to a reader's
  receipt (exactly-once: read committed);
- ``breakdown`` (not in the default set): the same at half load with the tasks'
  latency traces on (``streamer.runtime.latency_trace``), per-stage times
  (``streamer.bench.breakdown``), each run just after its control, the feeder and
  reader with no job (``keyed.broker_alone``); also ``streamer bench latency``;
- ``join``: the order join as shipped (exactly-once sink) against the Faust peer
  (``bench/throughput_faust.py``; ``--no-faust`` to leave it out), a rate search
  with ``--window`` s per rate (``streamer.bench.join_search``), then each at half
  its own max.

Before ``latency`` and ``breakdown``, one run of the keyed count, not counted, warms
the broker up. The load generators produce with librdkafka's
default linger (5 ms), as users' producers do.

Prints each run as it ends, then medians, the machine and the issue's targets (met
or not); writes ``--json`` and ``--plot`` (latency against rate, both systems).
A benchmark: never part of the test run; figures only mean something on an
otherwise idle machine (the load average is recorded at start and end).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from streamer.bench import throughput_report as report
from streamer.bench.machine import machine_info
from streamer.errors import StreamerError

PARTS = ("ceiling", "count", "latency", "breakdown", "join")
DEFAULT_PARTS = "ceiling,count,latency,join"


def say(text: str) -> None:
    print(text, flush=True)


def _list(text: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in items if allowed is not None and s not in allowed]
    if bad:
        raise StreamerError(f"unknown {', '.join(bad)}; choose from {', '.join(allowed or ())}")
    return items


def run_parts(bootstrap: str, args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    """Every selected part, interleaved per run; returns the raw runs and the summary."""
    from streamer.bench import ceiling, keyed
    from streamer.bench.loadgen import preload
    from streamer.testing import TopicFactory

    parts = set(_list(args.only, PARTS))
    deliveries = _list(args.deliveries, keyed.DELIVERIES)
    variants = _list(args.ceiling_variants, tuple(ceiling.VARIANTS))
    processes = [int(p) for p in _list(args.processes)]
    data: dict[str, Any] = {}
    with TopicFactory(bootstrap, prefix="bench-input") as inputs:
        if parts & {"ceiling", "count"}:
            src = inputs.create(8)
            say(f"preloading {args.records:,} events of ~93 bytes into {src} ...")
            took = preload(bootstrap, src, args.records)
            say(f"  preloaded in {took:.1f} s")
            ceiling_runs: list[dict[str, Any]] = []
            count_runs: dict[str, list[dict[str, Any]]] = {d: [] for d in deliveries}
            for run in range(args.runs):
                if "ceiling" in parts:
                    for variant in variants:
                        for n in processes:
                            with TopicFactory(bootstrap, prefix="bench-ceiling") as t:
                                r = ceiling.run_ceiling(bootstrap, src, 8, variant, n, t.create(8))
                            r["run"] = run
                            ceiling_runs.append(r)
                            say(f"  run {run + 1} ceiling {variant}/{n}: {r['rate']:,.0f} "
                                f"records/s, {_us(r['cpu_per_record_us'])}")  # fmt: skip
                if "count" in parts:
                    for delivery in deliveries:
                        r = keyed.max_rate(bootstrap, src, args.records, delivery, repo)
                        r["run"] = run
                        count_runs[delivery].append(r)
                        cpu = _us(r["cpu_per_record_us"])
                        say(f"  run {run + 1} keyed count {delivery}: {r['rate']:,.0f} records/s"
                            f" (overall {r['overall_rate']:,.0f}), {cpu}")  # fmt: skip
            if "ceiling" in parts:
                data["ceiling"] = {"variants": ceiling.VARIANTS, "runs": ceiling_runs}
            if "count" in parts:
                data["count"] = count_runs
    if parts & {"latency", "breakdown"}:
        rates = latency_rates(args, data.get("count"), deliveries)
        warm_up(bootstrap, args, repo, rates)
        if "latency" in parts:
            data["latency"] = latency_runs(bootstrap, args, repo, rates, traced=False)
        if "breakdown" in parts:
            data["breakdown"] = latency_runs(bootstrap, args, repo, rates, traced=True)
    if "join" in parts:
        data["join"] = join_runs(bootstrap, args, repo)
    return data


def _us(v: float | None) -> str:
    return "CPU unknown" if v is None else f"{v:.1f} us CPU/record"


def latency_rates(
    args: argparse.Namespace, count: dict[str, list[dict[str, Any]]] | None, deliveries: list[str]
) -> dict[str, float]:
    """Half of each sink's measured max rate, or ``--latency-rate`` for all."""
    if args.latency_rate:
        return dict.fromkeys(deliveries, float(args.latency_rate))
    out = {}
    for d in deliveries:
        rate = report.med(r["rate"] for r in (count or {}).get(d, []))
        if rate is None:
            raise StreamerError(
                "latency at half load needs the keyed count's max rate: add 'count' to --only "
                "or give --latency-rate"
            )
        out[d] = rate / 2
    return out


def warm_up(bootstrap: str, args: argparse.Namespace, repo: Path, rates: dict[str, float]) -> None:
    """One run of the keyed count at the first sink's rate, not counted: a fresh broker's
    first minutes at a steady feed are slow (its JIT at work; first runs had p99s 3-10x
    the next ones')."""
    from streamer.bench import keyed

    delivery, rate = next(iter(rates.items()))
    say(f"  warm-up: the keyed count {delivery} at {rate:,.0f}/s for {args.window:g} s "
        "(not counted) ...")  # fmt: skip
    keyed.latency(bootstrap, rate, args.window, delivery, repo)


def latency_runs(
    bootstrap: str, args: argparse.Namespace, repo: Path, rates: dict[str, float], traced: bool
) -> dict[str, list[dict[str, Any]]]:
    from streamer.bench import keyed

    what = "breakdown" if traced else "latency"
    out: dict[str, list[dict[str, Any]]] = {d: [] for d in rates}
    for run in range(args.runs):
        for delivery, rate in rates.items():
            say(f"  run {run + 1} {what} {delivery} at {rate:,.0f}/s for {args.window:g} s ...")
            if traced:  # the control: the feeder, the broker and the reader alone
                alone = keyed.broker_alone(bootstrap, rate, args.window)
                say(f"    broker alone: p50 {alone['p50_ms']:,.1f} ms, p99 "
                    f"{alone['p99_ms']:,.1f} ms (produce -> append: p99 "
                    f"{alone['to_kafka']['p99_ms']:,.1f} ms)")  # fmt: skip
            trace = Path(tempfile.mkdtemp(prefix="bench-trace-")) if traced else None
            try:
                r = keyed.latency(bootstrap, rate, args.window, delivery, repo, trace)
            finally:
                if trace is not None:
                    shutil.rmtree(trace, ignore_errors=True)
            r["run"] = run
            if traced:
                r["broker_alone"] = alone
            out[delivery].append(r)
            pressure = r.get("cpu_pressure")
            busy = "" if pressure is None else f", CPU contention {pressure:.0%} of the time"
            say(f"    p50 {r['p50_ms']:,.1f} ms, p99 {r['p99_ms']:,.1f} ms, {r['missing']} "
                f"missing, feeder behind by up to {r['max_behind_s']:.2f} s{busy}")  # fmt: skip
            if traced:
                from streamer.bench.breakdown import format_table

                for line in format_table(r["breakdown"]):
                    say(line)
    return out


def join_runs(bootstrap: str, args: argparse.Namespace, repo: Path) -> dict[str, Any]:
    from streamer.bench import join_search

    systems: dict[str, join_search.PointFn] = {
        "streamer": functools.partial(join_search.streamer_point, bootstrap, repo=repo)
    }
    if not args.no_faust:
        faust = join_search.faust_point_fn(say)
        if faust is not None:
            systems["faust"] = functools.partial(faust, bootstrap)
    rates = [float(r) for r in _list(args.join_rates)]
    return join_search.search(
        systems, rates=rates, window=args.window, runs=args.runs, seed=args.seed, progress=say
    )


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    ceiling_rate = None
    if "ceiling" in data:
        summary["ceiling"] = report.summarize_ceiling(data["ceiling"]["runs"])
        ceiling_rate = (summary["ceiling"]["ceiling"] or {}).get("rate")
    if "count" in data:
        summary["count"] = report.summarize_count(data["count"], ceiling_rate)
    if "latency" in data:
        summary["latency"] = report.summarize_latency(data["latency"])
    if "breakdown" in data:
        summary["breakdown"] = report.summarize_breakdown(data["breakdown"])
    if "join" in data:
        summary["join"] = report.summarize_join(data["join"])
    summary["targets"] = report.targets(summary)
    return summary


def run_benchmark(args: argparse.Namespace) -> int:
    from streamer.bench.failover import _repo_root
    from streamer.localkafka import broker_or_local

    repo = _repo_root()  # the jobs are examples/: run from the repository root
    info = machine_info()
    load_start = os.getloadavg()
    say(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}; "
        f"load average {load_start[0]:.2f}")  # fmt: skip
    if load_start[0] > 0.5:
        say("  (the machine is busy: these figures will not be comparable)")
    say(f"parts {args.only}; {args.runs} run(s) each; {args.records:,} records; "
        f"window {args.window:g} s")  # fmt: skip
    started = time.monotonic()
    bootstrap = args.bootstrap_servers or os.environ.get("STREAMER_KAFKA_BOOTSTRAP")
    with broker_or_local(bootstrap, profile="throughput") as servers:
        data = run_parts(servers, args, repo)
    summary = summarize(data)
    report.print_summary(summary)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    result = {
        "machine": {**info, "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
        "settings": settings,
        "seconds": time.monotonic() - started,
        "summary": summary,
        "runs": data,
    }
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    say(f"\nJSON: {json_path}")
    if "join" in data:
        plot_path = Path(args.plot or json_path.with_suffix(".png"))
        if report.plot(data["join"], plot_path):
            say(f"plot: {plot_path}")
    return 0


def run_latency(args: argparse.Namespace) -> int:
    """``streamer bench latency``: the breakdown part alone (with the count first when no
    ``--rate`` is given: half of its measured max)."""
    args.only = "breakdown" if args.rate else "count,breakdown"
    args.latency_rate = args.rate
    args.ceiling_variants, args.processes, args.join_rates, args.no_faust = "tuned", "2", "", True
    args.seed = 7
    return run_benchmark(args)


def _common(p: argparse.ArgumentParser, runs: int, json_name: str) -> None:
    p.add_argument("--runs", type=int, default=runs, help=f"runs of each part (default {runs})")
    p.add_argument("--records", type=int, default=1_000_000, help="preloaded events (1,000,000)")
    p.add_argument("--window", type=float, default=20.0, help="seconds per rate (default 20)")
    p.add_argument("--deliveries", default="at_least_once,exactly_once", help="keyed count sinks")
    p.add_argument("--bootstrap-servers", help="broker (default $STREAMER_KAFKA_BOOTSTRAP, "
                   "else a local one is started)")  # fmt: skip
    p.add_argument("--json", default=json_name, help=f"where the JSON goes ({json_name})")
    p.add_argument("--plot", help="where the PNG goes (default: the JSON's name, .png)")


def add_parser(bsub: Any) -> None:
    p = bsub.add_parser("throughput", help="ceiling, keyed count, latency, join vs Faust")
    p.add_argument("--only", default=DEFAULT_PARTS, help=f"parts, of {','.join(PARTS)} "
                   f"(default {DEFAULT_PARTS})")  # fmt: skip
    _common(p, 3, "out/throughput_bench.json")
    p.add_argument("--processes", default="1,2", help="ceiling processes (1,2)")
    p.add_argument("--ceiling-variants", default="defaults,tuned,tuned_plus")
    p.add_argument("--latency-rate", type=float, help="events/s (default: half the max)")
    p.add_argument("--join-rates", default=",".join(str(r) for r in _ladder()))
    p.add_argument("--no-faust", action="store_true", help="leave the Faust peer out")
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=run_benchmark)
    q = bsub.add_parser("latency", help="where the keyed count's latency goes, at half load")
    _common(q, 1, "out/latency_breakdown.json")
    q.add_argument("--rate", type=float, help="events/s (default: half the measured max)")
    q.set_defaults(func=run_latency)


def _ladder() -> tuple[int, ...]:
    from streamer.bench.join_search import LADDER

    return LADDER
