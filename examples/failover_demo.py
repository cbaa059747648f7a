"""The demo: single-task recovery on a running keyed job, end to end on this machine.

1. starts Apache Kafka (or uses ``--bootstrap-servers``) and a local cluster
   (a coordinator and two workers, each task its own process);
2. runs ``examples.keyed_count`` (source x2 -> count x4 -> sink x2) under the
   chosen strategy while events flow;
3. SIGKILLs one counter task, prints the failover record, and shows each
   counter's largest output gap around the kill: under ``individual`` only the
   killed task's key groups pause.

    python -m examples.failover_demo [--strategy individual|region|full] [--rate 400]
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from streamer.errors import StreamerError
from streamer.localkafka import broker_or_local
from streamer.testing import TopicFactory, read_topic
from streamer.testing.cluster import LocalCluster, all_running
from streamer.testing.feeder import EventFeeder

REPO = Path(__file__).resolve().parents[1]


def max_gaps(records: list[dict[str, Any]], start: float, end: float) -> dict[int, float]:
    """Per counter subtask: the largest gap between consecutive outputs in [start, end]."""
    gaps: dict[int, float] = {}
    for task in sorted({r["task"] for r in records}):
        times = sorted(r["at"] for r in records if r["task"] == task and start <= r["at"] <= end)
        points = [start, *times, end]
        gaps[task] = max(b - a for a, b in itertools.pairwise(points))
    return gaps


def run(args: argparse.Namespace, bootstrap: str) -> int:
    run_id = uuid.uuid4().hex[:6]
    with TopicFactory(bootstrap) as topics, LocalCluster(2, cwd=REPO) as cluster:
        src = topics.create(8, name=f"demo-events-{run_id}")
        out = topics.create(4, name=f"demo-counts-{run_id}")
        print(f"local cluster: coordinator {cluster.address}, 2 workers, "
              f"status http://127.0.0.1:{cluster.status_port}/jobs")  # fmt: skip
        job_id = cluster.submit(
            "examples.keyed_count:job",
            {
                "strategy": args.strategy,
                "bootstrap_servers": bootstrap,
                "metrics_interval": 0.5,
                "params": {"in": src, "out": out},
            },
        )
        cluster.wait_for(job_id, all_running, what="all tasks running")
        print(f"job {job_id} running under '{args.strategy}': events -> count x4 -> counts")
        feeder = EventFeeder(bootstrap, src, rate=args.rate).start()
        for second in range(1, args.before + 1):
            time.sleep(1)
            status = cluster.status(job_id)
            print(f"  [{second:2d}s] {status['records_in']:>7,} events in, "
                  f"{status['records_out']:>7,} counts out")  # fmt: skip
        victim = f"count#{args.victim}"
        print(f"SIGKILL {victim} ...")
        killed_at = time.time()
        cluster.kill_task(job_id, victim)
        status = cluster.wait_for(
            job_id,
            lambda s: bool(s["failovers"]) and s["failovers"][0]["status"] == "done",
            what="failover done",
        )
        time.sleep(args.after)
        feeder.stop()
        time.sleep(1.5)
        status = cluster.status(job_id)
        rec = status["failovers"][0]
        print("failover record:")
        for key in ("task", "strategy", "cause", "tasks_restarted", "fell_back",
                    "records_dropped", "records_cleared"):  # fmt: skip
            print(f"  {key:<20} {rec[key]}")
        for key in ("detected_at", "deployed_at", "running_at", "channels_updated_at"):
            print(f"  {key:<20} +{(rec[key] - killed_at) * 1000:7.1f} ms after the kill")
        attempts = {t["task"]: t["attempt"] for t in status["tasks"]}
        print(f"  {'attempts now':<20} {attempts}")
        records = [orjson.loads(r.value) for r in read_topic(bootstrap, out, idle=1.0)]  # type: ignore[arg-type]
        gaps = max_gaps(records, killed_at - 2.0, killed_at + 2.0)
        print("largest output gap per counter task, 2 s either side of the kill:")
        for task, gap in gaps.items():
            mark = "  <- killed" if task == args.victim else ""
            print(f"  count#{task}: {gap * 1000:7.1f} ms{mark}")
        cluster.cancel(job_id)
        print(f"the demo wrote {len(records):,} counts; job canceled, cluster stopped.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--strategy", choices=("individual", "region", "full"), default="individual"
    )
    parser.add_argument("--rate", type=float, default=400.0, help="events per second")
    parser.add_argument("--before", type=int, default=4, help="seconds before the kill")
    parser.add_argument("--after", type=float, default=3.0, help="seconds after recovery")
    parser.add_argument("--victim", type=int, default=1, help="which count subtask to kill")
    parser.add_argument("--bootstrap-servers", help="use this broker instead of starting one")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("streamer.kafka.client").setLevel(logging.ERROR)  # transient retries
    try:
        with broker_or_local(args.bootstrap_servers) as bootstrap:
            return run(args, bootstrap)
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
