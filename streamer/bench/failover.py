"""``streamer bench failover``: kill one join task under load, per strategy, and measure.

For each strategy (``individual``, ``region``, ``full``) and run: a fresh local
cluster runs ``examples.order_join`` (3 sources x2, join x8, sink x2, exactly-once
sink, checkpoints every second) while the order generator writes at ``--rate``
orders/s in real time; ``join#<victim>`` is SIGKILLed at ``--kill-at`` seconds.
Measured: detection time (kill -> the coordinator knows), recovery time (kill ->
first output again for the killed task's key groups), the other key groups'
largest output gap after the kill next to their gap before it, tasks restarted,
results lost and duplicated against the generator's oracle, output throughput
and end-to-end latency (emitted - last piece produced) p50/p99. Output: a table
(median, min-max over runs), ``failover_bench.json`` and ``failover_bench.png``
(output rate of the killed task's key groups and of the others around the kill,
one panel per strategy). With ``--faust``, the same join as a Faust app
(``bench/peers``) is measured the same way as a fourth row.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import statistics
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streamer.bench.machine import cpu_model
from streamer.bench.timeline import (
    latency_percentiles,
    max_gap,
    oracle_diff,
    rate_series,
    recovery_time,
)
from streamer.errors import StreamerError

if TYPE_CHECKING:
    from streamer.local.cluster import LocalCluster

log = logging.getLogger(__name__)

STRATEGIES = ("lossless", "individual", "region", "full")
# "lossless" is individual with individual_recovery=lossless (DESIGN.md §9, the
# default), "individual" the lossy ByteDance mode (individual_recovery=lossy)
JOIN_PARALLELISM = 8


ORDER_JOIN = "examples.order_join:job"


def order_join_config(
    strategy: str, bootstrap: str, cluster: LocalCluster, topics: dict[str, str], out: str
) -> dict[str, Any]:
    """The order join's job settings, shared by this benchmark and the demo: join x8,
    a checkpoint every second, an exactly-once sink. ``lossless``: ``individual`` with
    ``individual_recovery=lossless``; ``individual``: with ``lossy``."""
    lossless = {"individual_recovery": "lossless" if strategy == "lossless" else "lossy"}
    return {
        "strategy": "individual" if strategy == "lossless" else strategy,
        **lossless,
        "bootstrap_servers": bootstrap,
        "checkpoint_interval": 1.0,
        "checkpoint_dir": str(cluster.work_dir / "checkpoints"),
        "metrics_interval": 0.5,
        "params": {
            **topics,
            "out": out,
            "parallelism": str(JOIN_PARALLELISM),
            "delivery": "exactly_once",
        },
    }


def machine() -> str:
    cpu = cpu_model() or "unknown CPU"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _repo_root() -> Path:
    import sys

    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: examples/ is next to us
    try:
        import examples.order_join as order_join
    except ImportError:
        raise StreamerError(
            "the failover benchmark runs examples.order_join: run it from the streamer "
            "repository root (where examples/ is)"
        ) from None
    return Path(order_join.__file__).resolve().parents[1]


class Producer(threading.Thread):
    """Writes the generated events in event-time order at real-time speed; records when."""

    def __init__(self, bootstrap: str, topics: dict[str, str], events: dict[str, Any]) -> None:
        super().__init__(name="order-generator", daemon=True)
        from confluent_kafka import Producer as KafkaProducer

        self.producer = KafkaProducer({"bootstrap.servers": bootstrap, "linger.ms": 2})
        self.topics = topics
        self.events = events
        self.last_piece_at: dict[str, float] = {}
        self.started_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        from examples.order_join import _interleaved

        try:
            base = min(e["ts"] for e in self.events["orders"])
            self.started_at = time.time()
            start = time.monotonic()
            for topic, event in _interleaved(self.events):
                delay = start + (event["ts"] - base) / 1000.0 - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                oid = event["order_id"]
                self.producer.produce(self.topics[topic], orjson.dumps(event), key=oid.encode())
                self.producer.poll(0)
                self.last_piece_at[oid] = time.time()
            self.producer.flush(30)
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc


def run_streamer(
    strategy: str,
    bootstrap: str,
    *,
    rate: float,
    duration: float,
    kill_at: float,
    victim: int,
    seed: int,
    window: float,
) -> dict[str, Any]:
    """One run of the join under ``strategy`` with one kill; returns its measurements."""
    repo = _repo_root()
    from examples.order_join import TOPICS, expected_results, generate_events
    from streamer.graph import subtask_for_key
    from streamer.local.cluster import LocalCluster, all_running
    from streamer.testing import TopicFactory, read_topic

    events = generate_events(int(rate * duration), seed, rate)
    oracle = expected_results(events)
    with TopicFactory(bootstrap, prefix="bench") as topics, LocalCluster(2, cwd=repo) as cluster:
        names = {t: topics.create(8) for t in TOPICS}
        out = topics.create(4)
        job_id = cluster.submit(
            ORDER_JOIN, order_join_config(strategy, bootstrap, cluster, names, out)
        )
        cluster.wait_for(job_id, all_running, what="all tasks running")
        producer = Producer(bootstrap, names, events)
        producer.start()
        time.sleep(kill_at)
        cluster.kill_task(job_id, f"join#{victim}")
        cluster.wait_for(
            job_id,
            lambda s: bool(s["failovers"]) and s["failovers"][0]["status"] == "done",
            timeout=120,
            what="failover done",
        )
        producer.join(timeout=duration + 60)
        if producer.error is not None:
            raise producer.error
        done = cluster.status(job_id)["checkpoints"]["completed"]
        cluster.wait_for(
            job_id, lambda s: s["checkpoints"]["completed"] >= done + 2, what="final commits"
        )
        records = read_topic(bootstrap, out, timeout=120, idle=2.0)
        status = cluster.status(job_id)
    results = [orjson.loads(r.value) for r in records]  # type: ignore[arg-type]
    rec = status["failovers"][0]
    kill = rec["kill_requested_at"] or rec["detected_at"]
    failed_band = [
        r["emitted_at"] for r in results
        if subtask_for_key(r["order_id"], 128, JOIN_PARALLELISM) == victim
    ]  # fmt: skip
    others: dict[int, list[float]] = {}
    for r in results:
        band = subtask_for_key(r["order_id"], 128, JOIN_PARALLELISM)
        if band != victim:
            others.setdefault(band, []).append(r["emitted_at"])
    after = max(max_gap(t, kill, kill + window) for t in others.values())
    before = max(max_gap(t, kill - window, kill) for t in others.values())
    diff = oracle_diff(oracle, [r["order_id"] for r in results])
    latencies = [
        r["emitted_at"] - producer.last_piece_at[r["order_id"]]
        for r in results
        if r["order_id"] in producer.last_piece_at
    ]
    start, end = kill - 5.0, kill + window + 2.0
    other_times = [t for ts in others.values() for t in ts]
    return {
        "strategy": strategy,
        "detection_s": rec["detected_at"] - kill,
        # the killed process emits nothing after the kill: the first output is the new attempt's
        "recovery_s": recovery_time(failed_band, kill),
        "other_max_gap_s": after,
        "other_steady_gap_s": before,
        "tasks_restarted": len(rec["tasks_restarted"]),
        "phases_s": {
            k: None if rec[k] is None else rec[k] - kill
            for k in (
                "detected_at",
                "deployed_at",
                "plan_ready_at",
                "running_at",
                "channels_updated_at",
            )
        },
        "fell_back": rec["fell_back"],
        "late_records": sum(
            sum(m.get("late_records", []))
            for t in status["tasks"]
            for m in t["metrics"].get("operators", {}).values()
        ),
        "lost_per_join_task": {
            str(k): v
            for k, v in sorted(
                Counter(
                    subtask_for_key(o, 128, JOIN_PARALLELISM)
                    for o in oracle - {r["order_id"] for r in results}
                ).items()
            )
        },
        "expected": diff.expected,
        "lost": diff.lost,
        "duplicated": diff.duplicated,
        "throughput_per_s": diff.delivered / duration,
        "latency_s": latency_percentiles(latencies),
        "series": {
            "start": start,
            "bin_s": 0.25,
            "kill": kill,
            "failed": rate_series(failed_band, start, end),
            "others_per_task": [
                v / (JOIN_PARALLELISM - 1) for v in rate_series(other_times, start, end)
            ],
        },
    }


def summarize(runs: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in runs if r.get(key) is not None]
    if not values:
        return "-"
    med = statistics.median(values)

    def fmt(v: float) -> str:
        return f"{v * 1000:.0f} ms" if key.endswith("_s") else f"{v:g}"

    if len(values) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(values))}-{fmt(max(values))})"


def print_table(results: dict[str, list[dict[str, Any]]]) -> None:
    cols = [
        ("detection", "detection_s"),
        ("recovery", "recovery_s"),
        ("other max gap", "other_max_gap_s"),
        ("steady gap", "other_steady_gap_s"),
        ("restarted", "tasks_restarted"),
        ("lost", "lost"),
        ("dup", "duplicated"),
    ]
    print(f"{'strategy':<11}" + "".join(f"{c:>24}" for c, _ in cols) + f"{'p50/p99 latency':>22}")
    for strategy, runs in results.items():
        lat = [r["latency_s"] for r in runs]
        p50 = statistics.median([x["p50"] for x in lat if x["p50"] is not None] or [0])
        p99 = statistics.median([x["p99"] for x in lat if x["p99"] is not None] or [0])
        row = "".join(f"{summarize(runs, k):>24}" for _, k in cols)
        print(f"{strategy:<11}{row}{f'{p50 * 1000:.0f}/{p99 * 1000:.0f} ms':>22}")


def plot(results: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(9, 2.6 * len(results)), sharex=True)
    axes = axes if len(results) > 1 else [axes]
    for ax, (strategy, runs) in zip(axes, results.items(), strict=True):
        series = runs[0]["series"]
        xs = [
            i * series["bin_s"] + series["start"] - series["kill"]
            for i in range(len(series["failed"]))
        ]
        ax.plot(xs, series["failed"], label="killed task's key groups", color="tab:red")
        ax.plot(xs, series["others_per_task"], label="other tasks (per task)", color="tab:blue")
        ax.axvline(0, color="black", linestyle="--", linewidth=1)
        ax.set_title(strategy)
        ax.set_ylabel("results/s")
        ax.legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("seconds since the kill")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_benchmark(args: argparse.Namespace) -> int:
    from streamer.localkafka import LocalKafka

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    window = min(5.0, args.duration - args.kill_at - 1.0)
    if window <= 1.0:
        raise StreamerError("--duration must exceed --kill-at by at least 2 s")
    print(f"machine: {machine()}")
    print(f"join x{JOIN_PARALLELISM} on 2 workers, {args.rate:g} orders/s, "
          f"{args.duration:g} s per run, kill join#{args.victim} at {args.kill_at:g} s, "
          f"{args.runs} run(s) per strategy")  # fmt: skip
    results: dict[str, list[dict[str, Any]]] = {}
    with LocalKafka(quiet=True, profile="throughput") as kafka:
        for strategy in strategies:
            for run in range(args.runs):
                print(f"  {strategy} run {run + 1}/{args.runs} ...", flush=True)
                measured = run_streamer(
                    strategy,
                    kafka.bootstrap_servers,
                    rate=args.rate,
                    duration=args.duration,
                    kill_at=args.kill_at,
                    victim=args.victim,
                    seed=args.seed + run,
                    window=window,
                )
                results.setdefault(strategy, []).append(measured)
        if args.faust:
            results["faust"] = run_faust(kafka.bootstrap_servers, args)
    print()
    print_table(results)
    settings = {k: v for k, v in vars(args).items() if k != "func"}
    data = {"machine": machine(), "settings": settings, "results": results}
    (out_dir / "failover_bench.json").write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))
    plot(
        {k: v for k, v in results.items() if v and "series" in v[0]}, out_dir / "failover_bench.png"
    )
    print(f"\nJSON: {out_dir / 'failover_bench.json'}\nplot: {out_dir / 'failover_bench.png'}")
    return 0


def run_faust(bootstrap: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        from bench.peers.faust_run import (  # type: ignore[import-not-found,unused-ignore]
            run_faust_failover,
        )
    except ImportError as exc:
        print(f"  faust: skipped ({exc}); install the peers extra: pip install -e '.[peers]'")
        return []
    runs = []
    for run in range(args.runs):
        print(f"  faust run {run + 1}/{args.runs} ...", flush=True)
        runs.append(
            run_faust_failover(
                bootstrap,
                rate=args.rate,
                duration=args.duration,
                kill_at=args.kill_at,
                seed=args.seed + run,
            )
        )
    return runs


def add_parser(bsub: Any) -> None:
    """``streamer bench failover`` (``bsub``: the ``bench`` group, ``streamer.bench.commands``)."""
    p = bsub.add_parser("failover", help="kill one join task per strategy and measure")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--runs", type=int, default=3, help="runs per strategy (default 3)")
    p.add_argument("--rate", type=float, default=100.0, help="orders per second (default 100)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of input per run")
    p.add_argument("--kill-at", type=float, default=12.0, help="seconds into the run")
    p.add_argument("--victim", type=int, default=3, help="which join subtask to kill")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--faust", action="store_true", help="also measure the Faust peer")
    p.add_argument("--out", default="out", help="where the JSON and PNG go")
    p.set_defaults(func=run_benchmark)
