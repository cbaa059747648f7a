"""The ceiling: what plain Python processes with confluent-kafka carry on this machine.

Each process (``python -m streamer.bench.ceiling``) is what a new user would write:
consume a preloaded topic (its share of the partitions, ``assign``ed, from the
beginning to the high watermarks seen at start) with ``consume(1000, 0.1)`` (a longer
timeout would wait it out on the last, partial batch), decode each
value with orjson, encode it again and ``produce`` it with its key to another topic
(``poll(0)`` after each batch), then ``flush``. It says ``ready`` once connected and
starts on a ``go`` line, so that 1 and 2 processes start together; it prints a JSON
line: records, wall time from ``go`` to the end of ``flush``, and its CPU seconds
(every thread, librdkafka's included) over that time.

Client settings are named variants (``VARIANTS``):

- ``defaults``: librdkafka's defaults (``fetch.queue.backoff.ms=1000``: once the
  fetch queue holds ``queued.min.messages`` the fetcher sleeps a second, which caps
  a consumer far below its CPU);
- ``tuned``: ``fetch.queue.backoff.ms=10`` (the setting issue 14 measured);
- ``tuned_plus``: ``tuned`` with a larger prefetch (``queued.min.messages`` 500k),
  fetch requests that wait for 64 KiB (``fetch.min.bytes``, at most 10 ms) and a
  producer that batches for 5 ms with ``acks=1`` (one broker: the same durability).

The share-of-ceiling figures use the best median of the tuned variants at 2
processes (which one is printed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

import orjson

from streamer.bench.procstat import cpu_seconds

VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "defaults": {"consumer": {}, "producer": {}},
    "tuned": {"consumer": {"fetch.queue.backoff.ms": 10}, "producer": {}},
    "tuned_plus": {
        "consumer": {
            "fetch.queue.backoff.ms": 10,
            "queued.min.messages": 500_000,
            "fetch.min.bytes": 65_536,
            "fetch.wait.max.ms": 10,
        },
        "producer": {"linger.ms": 5, "acks": 1},
    },
}
TUNED = ("tuned", "tuned_plus")


def relay(
    bootstrap: str, src: str, dst: str, partitions: list[int], variant: dict[str, Any]
) -> dict[str, Any]:
    """The plain process's loop; returns its measurements."""
    import os

    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"ceiling-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            **variant["consumer"],
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, **variant["producer"]})
    ends = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(src, p), timeout=10)
        if high > low:
            ends[p] = high
    consumer.assign([TopicPartition(src, p, -2) for p in ends])
    print("ready", flush=True)
    sys.stdin.readline()  # "go"
    pid = os.getpid()
    cpu0, started = cpu_seconds(pid), time.time()
    loads, dumps, produce, poll = orjson.loads, orjson.dumps, producer.produce, producer.poll
    n = 0
    while ends:
        for msg in consumer.consume(1000, 0.1):
            if msg.error() is not None:
                continue
            record = loads(msg.value())
            while True:
                try:
                    produce(dst, dumps(record), msg.key())
                    break
                except BufferError:
                    poll(0.01)
            n += 1
            p = msg.partition()
            if p in ends and msg.offset() + 1 >= ends[p]:
                del ends[p]
        poll(0)
    producer.flush(120)
    ended = time.time()
    cpu1 = cpu_seconds(pid)
    consumer.close()
    cpu = None if cpu0 is None or cpu1 is None else cpu1 - cpu0
    return {"records": n, "started": started, "ended": ended, "cpu_s": cpu}


def run_ceiling(
    bootstrap: str, src: str, partitions: int, variant: str, processes: int, dst: str
) -> dict[str, Any]:
    """``processes`` plain processes relay ``src`` to ``dst`` together; records/s."""
    from streamer.bench.loadgen import Child

    config = json.dumps(VARIANTS[variant])
    children = []
    try:
        for i in range(processes):
            mine = ",".join(str(p) for p in range(partitions) if p % processes == i)
            args = ["--bootstrap", bootstrap, "--src", src, "--dst", dst, "--partitions", mine]
            children.append(
                Child("streamer.bench.ceiling", [*args, "--variant", config], stdin=True)
            )
        for child in children:
            child.wait_line("ready")
        for child in children:
            child.send("go")
        results = [child.result(timeout=600) for child in children]
    finally:
        for child in children:
            child.stop()
    records = sum(r["records"] for r in results)
    seconds = max(r["ended"] for r in results) - min(r["started"] for r in results)
    cpus = [r["cpu_s"] for r in results]
    cpu = None if None in cpus else sum(cpus)
    return {
        "variant": variant,
        "processes": processes,
        "records": records,
        "seconds": seconds,
        "rate": records / seconds if seconds > 0 else 0.0,
        "cpu_s": cpu,
        "cpu_per_record_us": None if cpu is None or not records else cpu / records * 1e6,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamer.bench.ceiling")
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--src", required=True)
    ap.add_argument("--dst", required=True)
    ap.add_argument("--partitions", required=True, help="comma-separated")
    ap.add_argument("--variant", required=True, help="JSON: consumer and producer settings")
    args = ap.parse_args(argv)
    parts = [int(p) for p in args.partitions.split(",") if p]
    result = relay(args.bootstrap, args.src, args.dst, parts, json.loads(args.variant))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
