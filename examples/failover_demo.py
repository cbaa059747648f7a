"""The demo: single-task recovery of a multi-stream join, end to end on this machine.

1. starts Apache Kafka (or uses ``--bootstrap-servers``) and a local cluster (a
   coordinator and two workers; every task is its own process);
2. runs ``examples.order_join`` (orders, payments and shipments joined by order
   id: 3 sources x2 -> join x8 -> sink x2, checkpoints, exactly-once sink) under
   ``individual`` while the generator writes orders, with live progress;
3. SIGKILLs ``join#3``, prints the failover record and each join task's largest
   output gap around the kill: only the killed task's key groups pause;
4. runs a short benchmark of the same kill under ``individual``, ``region`` and
   ``full`` and prints the comparison table and the path of the plot.

    python -m examples.failover_demo [--rate 100] [--skip-comparison]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from examples.order_join import TOPICS, expected_results, generate_events
from streamer.bench.failover import (
    JOIN_PARALLELISM,
    ORDER_JOIN,
    Producer,
    order_join_config,
    plot,
    print_table,
    run_streamer,
)
from streamer.bench.timeline import max_gap
from streamer.errors import StreamerError
from streamer.graph import subtask_for_key
from streamer.local.cluster import LocalCluster, all_running
from streamer.localkafka import broker_or_local
from streamer.testing import TopicFactory, read_topic

REPO = Path(__file__).resolve().parents[1]
JOIN = JOIN_PARALLELISM
VICTIM = 3


def story(args: argparse.Namespace, bootstrap: str) -> None:
    run_id = uuid.uuid4().hex[:6]
    events = generate_events(int(args.rate * args.duration), seed=3, rate=args.rate)
    oracle = expected_results(events)
    with TopicFactory(bootstrap) as topics, LocalCluster(2, cwd=REPO) as cluster:
        names = {t: topics.create(8, name=f"demo-{t}-{run_id}") for t in TOPICS}
        out = topics.create(4, name=f"demo-order_status-{run_id}")
        print(f"local cluster: coordinator {cluster.address}, 2 workers; "
              f"status: http://127.0.0.1:{cluster.status_port}/jobs")  # fmt: skip
        job_id = cluster.submit(
            ORDER_JOIN, order_join_config("individual", bootstrap, cluster, names, out)
        )
        cluster.wait_for(job_id, all_running, what="all tasks running")
        print(f"job {job_id}: orders + payments + shipments -> join x{JOIN} -> order_status, "
              "strategy 'individual'")  # fmt: skip
        producer = Producer(bootstrap, names, events)
        producer.start()
        for second in range(1, args.before + 1):
            time.sleep(1)
            s = cluster.status(job_id)
            print(f"  [{second:2d}s] {s['records_in']:>6,} events in, {s['records_out']:>5,} "
                  f"orders complete, checkpoints {s['checkpoints']['completed']}")  # fmt: skip
        print(f"SIGKILL join#{VICTIM} ...", flush=True)
        killed_at = time.time()
        cluster.kill_task(job_id, f"join#{VICTIM}")
        cluster.wait_for(
            job_id,
            lambda s: bool(s["failovers"]) and s["failovers"][0]["status"] == "done",
            what="failover done",
        )
        producer.join()
        done = cluster.status(job_id)["checkpoints"]["completed"]
        cluster.wait_for(
            job_id, lambda s: s["checkpoints"]["completed"] >= done + 2, what="commits"
        )
        status = cluster.status(job_id)
        rec = status["failovers"][0]
        print("failover record:")
        for key in ("task", "strategy", "cause", "tasks_restarted", "fell_back", "records_dropped"):
            print(f"  {key:<20} {rec[key]}")
        for key in ("detected_at", "deployed_at", "running_at", "channels_updated_at"):
            print(f"  {key:<20} +{(rec[key] - killed_at) * 1000:7.1f} ms after the kill")
        attempts = {t["task"]: t["attempt"] for t in status["tasks"] if t["attempt"]}
        print(f"  {'tasks with a new attempt':<20} {attempts}")
        results = [orjson.loads(r.value) for r in read_topic(bootstrap, out, idle=1.5)]  # type: ignore[arg-type]
        times: dict[int, list[float]] = defaultdict(list)
        for r in results:
            times[subtask_for_key(r["order_id"], 128, JOIN)].append(r["emitted_at"])
        print("largest output gap per join task, 3 s either side of the kill:")
        for task in sorted(times):
            gap = max_gap(times[task], killed_at - 3, killed_at + 3)
            mark = "  <- killed" if task == VICTIM else ""
            print(f"  join#{task}: {gap * 1000:7.1f} ms{mark}")
        got = {r["order_id"] for r in results}
        lost = oracle - got
        lost_tasks = sorted({subtask_for_key(o, 128, JOIN) for o in lost})
        print(f"{len(got):,} of {len(oracle):,} complete orders delivered; the {len(lost)} lost "
              f"belong to join task(s) {lost_tasks} (individual restart drops the failed "
              "task's records during its outage)")  # fmt: skip
        cluster.cancel(job_id)


def comparison(args: argparse.Namespace, bootstrap: str) -> None:
    print("\na short benchmark of the same kill under each strategy (1 run each) ...")
    results: dict[str, list[dict[str, Any]]] = {}
    for strategy in ("individual", "region", "full"):
        print(f"  {strategy} ...", flush=True)
        results[strategy] = [
            run_streamer(
                strategy,
                bootstrap,
                rate=args.rate,
                duration=16.0,
                kill_at=10.0,
                victim=VICTIM,
                seed=9,
                window=4.0,
            )
        ]
    print()
    print_table(results)
    out = Path("out")
    out.mkdir(exist_ok=True)
    plot(results, out / "demo_failover.png")
    print(f"\nplot: {(out / 'demo_failover.png').resolve()}")
    print("full benchmark (3 runs each, JSON + plot): streamer bench failover")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="orders per second")
    parser.add_argument("--before", type=int, default=10, help="seconds before the kill")
    parser.add_argument("--duration", type=float, default=18.0, help="seconds of orders")
    parser.add_argument("--skip-comparison", action="store_true")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with broker_or_local(args.bootstrap_servers) as bootstrap:
            story(args, bootstrap)
            if not args.skip_comparison:
                comparison(args, bootstrap)
        return 0
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
