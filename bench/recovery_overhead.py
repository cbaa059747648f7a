"""What lossless single-task recovery costs in steady state: the keyed count at max rate,
``individual_recovery=lossy`` against ``lossless`` (retention + determinants).

    .venv/bin/python -m bench.recovery_overhead [--records 200000] [--runs 3]

Each run: a fresh local cluster (2 workers), ``examples.keyed_count`` (events x2
-hash-> count x4 -rebalance-> sink x2, at-least-once sink, a checkpoint every
second) over a topic preloaded with ``--records`` events of 64 keys; the clock
runs from the moment every task runs until every event is counted, so the
figure is the job's throughput on this machine. Runs alternate between the two
modes; the medians and the overhead (``1 - lossless/lossy``) are printed with
the machine. A benchmark: never part of the test run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from streamer.bench.machine import machine_info
from streamer.localkafka import broker_or_local

REPO = Path(__file__).resolve().parents[1]
KEYS = 64


def preload(bootstrap: str, topic: str, n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(n):
        key = f"k{i % KEYS}"
        while True:
            try:
                producer.produce(
                    topic, key=key.encode(), value=orjson.dumps({"key": key, "seq": i})
                )
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60) != 0:
        raise RuntimeError("could not preload the input topic")


def counted(status: dict[str, Any]) -> int:
    return sum(
        int(t["metrics"].get("records_processed", 0))
        for t in status["tasks"]
        if t["vertex"] == "count"
    )


def one_run(bootstrap: str, mode: str, records: int) -> float:
    """Records/s of the keyed count over ``records`` preloaded events under ``mode``."""
    from streamer.local.cluster import LocalCluster, all_running
    from streamer.testing import TopicFactory

    with (
        TopicFactory(bootstrap, prefix="overhead") as topics,
        tempfile.TemporaryDirectory(prefix="overhead-") as work,
    ):
        src, out = topics.create(8), topics.create(4)
        preload(bootstrap, src, records)
        with LocalCluster(2, slots=8, work_dir=Path(work), cwd=REPO) as cluster:
            job_id = cluster.submit(
                "examples.keyed_count:job",
                {
                    "strategy": "individual",
                    "individual_recovery": mode,
                    "bootstrap_servers": bootstrap,
                    "metrics_interval": 0.25,
                    "checkpoint_interval": 1.0,
                    "checkpoint_dir": str(Path(work) / "checkpoints"),
                    "params": {"in": src, "out": out},
                },
            )
            cluster.wait_for(job_id, all_running, timeout=120, what="all running")
            start = time.perf_counter()
            cluster.wait_for(
                job_id, lambda s: counted(s) >= records, timeout=600, what="every event counted"
            )
            return records / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.recovery_overhead")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bootstrap-servers", help="a broker to use (default: a local one)")
    args = ap.parse_args(argv)
    info = machine_info()
    print(f"machine: {info.get('cpu')}, {info.get('cores')} cores, Python {info.get('python')}")
    print(f"keyed count, {args.records:,} events, {args.runs} run(s) per mode, modes alternating")
    rates: dict[str, list[float]] = {"lossy": [], "lossless": []}
    with broker_or_local(args.bootstrap_servers, profile="throughput") as bootstrap:
        for run in range(args.runs):
            for mode in rates:
                rate = one_run(bootstrap, mode, args.records)
                rates[mode].append(rate)
                print(f"  run {run + 1} {mode:<8} {rate:>10,.0f} records/s", flush=True)
    lossy, lossless = (statistics.median(rates[m]) for m in ("lossy", "lossless"))
    print(f"median lossy    {lossy:>10,.0f} records/s")
    print(f"median lossless {lossless:>10,.0f} records/s")
    print(f"overhead of lossless recovery: {100 * (1 - lossless / lossy):.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
