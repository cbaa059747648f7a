"""Load for the throughput benchmark: preloaded topics, a paced feeder, a latency reader.

Records are the keyed count's events, padded to about ``RECORD_BYTES`` (93) bytes of
JSON: ``{"key": "k<i % 64>", "seq": i, "pad": "xx..."}``. ``seq`` is unique: the
keyed count copies it into its output, which is how a result is matched to the
time its event was produced.

The feeder and the reader run as their own processes (``python -m
streamer.bench.loadgen feed|read``), so that neither steals the GIL from the other
nor from the benchmark's own loop:

- ``feed`` writes ``--count`` records at ``--rate`` per second (paced in 1 ms
  ticks) and stores each record's produce time (``time.time()`` just before
  ``produce()``; float64 by ``seq``) in ``--times``. Its producer lingers 5 ms.
- ``read`` consumes a topic from the beginning (``--isolation`` read_committed or
  read_uncommitted) until ``--count`` records or ``--timeout``, and stores per
  record its ``seq`` (int64), the receive time (``time.time()`` when the client
  handed it over: ``consume(n, 0)`` of what is queued, or ``poll`` waiting for the
  next one, never a batch wait) and the record's Kafka timestamp (the sink's
  produce time), in
  ``<--out>.seq|.recv|.kts``. It prints ``ready`` once its partitions are assigned.

Both print one JSON summary line at the end. Parents start them through ``Child``,
which stops them by pid.

``OrderFeeder`` writes the order join's generated events at real-time speed for
the join benchmarks (the rate search's streamer and Faust points, the Faust
failover peer). Every produce loop here goes through ``produce``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

RECORD_BYTES = 93
KEYS = 64
# The load generators produce as a user's producer does: librdkafka's default linger
# (5 ms). With 1 ms, the broker alone took 0.8 of the 2 cores at 30k records/s (0.35
# with 5 ms), CPU the job under test then lacked (issue 14, fourth session).
FEED_PRODUCER = {"linger.ms": 5}
READER_CONSUMER = {"fetch.wait.max.ms": 10, "fetch.queue.backoff.ms": 10}


def event_bytes(i: int, keys: int = KEYS, size: int = RECORD_BYTES) -> bytes:
    """Event ``i`` as JSON of about ``size`` bytes (exactly, while ``seq`` has < 30 digits)."""
    head = b'{"key":"k%d","seq":%d,"pad":"' % (i % keys, i)
    return head + b"x" * max(0, size - len(head) - 2) + b'"}'


def event_key(i: int, keys: int = KEYS) -> bytes:
    return b"k%d" % (i % keys)


def produce(
    producer: Any,
    topic: str,
    value: bytes,
    key: bytes,
    on_delivery: Callable[[Any, Any], None] | None = None,
) -> None:
    """``producer.produce`` that waits (serving delivery reports) while librdkafka's
    queue is full instead of raising ``BufferError``."""
    while True:
        try:
            if on_delivery is None:
                producer.produce(topic, value, key)
            else:
                producer.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.01)


def preload(bootstrap: str, topic: str, n: int, *, progress: bool = True) -> float:
    """Write events ``0..n-1`` to ``topic`` and wait until stored; returns seconds taken."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    started = time.monotonic()
    step = max(1, n // 4)
    for i in range(n):
        produce(producer, topic, event_bytes(i), event_key(i))
        if progress and i and i % step == 0:
            print(f"    preloaded {i:,} of {n:,}", flush=True)
    if producer.flush(120) != 0:
        raise RuntimeError(f"could not preload {topic}")
    return time.monotonic() - started


def feed(bootstrap: str, topic: str, rate: float, count: int, times_path: Path) -> dict[str, Any]:
    """Write ``count`` events at ``rate``/s; store produce times by seq; return a summary."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, **FEED_PRODUCER})
    times = array("d", bytes(8 * count))
    poll, now = producer.poll, time.time
    start = time.monotonic()
    behind = 0.0
    i = 0
    while i < count:
        due = min(count, int((time.monotonic() - start) * rate) + 1)
        if due - i > rate * 0.05:  # more than 50 ms of records behind schedule
            behind = max(behind, (due - i) / rate)
        while i < due:
            value, key = event_bytes(i), event_key(i)
            times[i] = now()
            produce(producer, topic, value, key)
            i += 1
        poll(0)
        pause = start + i / rate - time.monotonic()
        if pause > 0:
            time.sleep(min(pause, 0.001))
    seconds = time.monotonic() - start
    left = producer.flush(60)
    times_path.write_bytes(times.tobytes())
    return {"produced": count - left, "seconds": seconds, "max_behind_s": behind}


class OrderFeeder(threading.Thread):
    """The order join's generated events (``examples.order_join.generate_events``) in
    event-time order at real-time speed, on a thread.

    Records when the last piece of each order was produced (``last_piece_at``, as
    ``streamer bench failover`` measures latency), what was produced per topic
    (``produced``, for the oracle), each order's input partition (``partition_of``,
    from its delivery report) and failed deliveries. ``started`` is set once it
    starts writing (``started_at``, wall time) or fails (``error``); ``stop_flag``
    ends it early. It flushes at the end and fails if records are left undelivered."""

    def __init__(self, bootstrap: str, topics: dict[str, str], events: dict[str, Any]) -> None:
        super().__init__(name="order-generator", daemon=True)
        from confluent_kafka import Producer

        self.producer = Producer({"bootstrap.servers": bootstrap, **FEED_PRODUCER})
        self.topics = topics
        self.events = events
        self.produced: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self.last_piece_at: dict[str, float] = {}
        self.started = threading.Event()
        self.started_at = 0.0
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None
        self.failed_deliveries = 0
        self.partition_of: dict[str, int] = {}  # order id -> input partition

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failed_deliveries += 1
        elif msg.topic() == self.topics["orders"]:
            self.partition_of[msg.key().decode()] = msg.partition()

    def run(self) -> None:
        from examples.order_join import _interleaved

        try:
            base = min(e["ts"] for e in self.events["orders"])
            self.started_at = time.time()
            start = time.monotonic()
            self.started.set()
            for topic, event in _interleaved(self.events):
                delay = start + (event["ts"] - base) / 1000.0 - time.monotonic()
                if delay > 0 and self.stop_flag.wait(delay):
                    break
                oid = event["order_id"]
                value = orjson.dumps(event)
                produce(self.producer, self.topics[topic], value, oid.encode(), self._on_delivery)
                self.producer.poll(0)
                self.last_piece_at[oid] = time.time()
                self.produced[topic].append(event)
            left = self.producer.flush(30)
            if left:
                raise RuntimeError(f"{left} input records were not delivered in 30 s")
        except BaseException as exc:  # noqa: BLE001 - reported by the caller
            self.error = exc
        finally:
            self.started.set()


def read(
    bootstrap: str, topic: str, isolation: str, count: int, timeout: float, out: Path
) -> dict[str, Any]:
    """Consume ``topic`` until ``count`` records or ``timeout``; store seq/recv/kts arrays."""
    from confluent_kafka import Consumer, TopicPartition

    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **READER_CONSUMER,
        }
    )
    seqs, recv, kts = array("q"), array("d"), array("d")
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        consumer.consume(1, 0.5)  # connect and fetch once before saying ready
        print("ready", flush=True)
        deadline = time.monotonic() + timeout
        loads = orjson.loads
        while len(seqs) < count and time.monotonic() < deadline:
            # what is queued, without waiting; else wait for one record: consume(n, t)
            # would wait out its timeout for a batch of fewer than n, late by up to t
            batch = consumer.consume(1000, 0)
            if not batch:
                msg = consumer.poll(0.1)
                batch = [] if msg is None else [msg]
            t = time.time()
            for msg in batch:
                if msg.error() is None:
                    seqs.append(int(loads(msg.value())["seq"]))
                    recv.append(t)
                    kts.append(msg.timestamp()[1] / 1000.0)
    finally:
        consumer.close()
    for suffix, arr in ((".seq", seqs), (".recv", recv), (".kts", kts)):
        Path(f"{out}{suffix}").write_bytes(arr.tobytes())
    return {"read": len(seqs)}


def load_array(path: Path | str, typecode: str) -> array[Any]:
    arr = array(typecode)
    arr.frombytes(Path(path).read_bytes())
    return arr


def read_all(
    bootstrap: str,
    topic: str,
    *,
    expected: int,
    idle: float,
    timeout: float,
    read_committed: bool = True,
) -> list[tuple[bytes, float]]:
    """``(value, Kafka timestamp s)`` of every record of ``topic``; stops once ``expected``
    were read and ``idle`` s brought nothing new, after ``3 * idle`` s with nothing new,
    or at ``timeout``. Never raises for too few records (the caller counts them)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer: Any = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-drain-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed" if read_committed else "read_uncommitted",
        }
    )
    out: list[tuple[bytes, float]] = []
    try:
        meta = consumer.list_topics(topic=topic, timeout=10).topics[topic]
        consumer.assign([TopicPartition(topic, p, -2) for p in meta.partitions])
        deadline = time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = consumer.consume(1000, 0.2)
            for m in batch:
                if m.error() is None:
                    out.append((m.value(), m.timestamp()[1] / 1000.0))
            if batch:
                last_new = time.monotonic()
            quiet = time.monotonic() - last_new
            if (len(out) >= expected and quiet >= idle) or quiet >= 3 * idle:
                break
    finally:
        consumer.close()
    return out


class Child:
    """A ``python -m streamer.bench.loadgen`` (or other module) child process, stopped by
    its pid (SIGTERM, then SIGKILL) in ``stop``; its last stdout line is a JSON summary."""

    def __init__(self, module: str, args: Sequence[str], *, stdin: bool = False) -> None:
        self.name = f"{module} {args[0] if args else ''}".strip()
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            text=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, expected: str, timeout: float = 60.0) -> None:
        """Block until the child prints ``expected`` (a line); raise if it exits first."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.name} exited with {self.proc.wait()}")
            if line.strip() == expected:
                return
        raise TimeoutError(f"{self.name} did not say {expected!r} in {timeout:g} s")

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the child to end; its last stdout line as JSON."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise TimeoutError(f"{self.name} did not finish in {timeout:g} s") from None
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{self.name} printed no result")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m streamer.bench.loadgen")
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("feed")
    r = sub.add_parser("read")
    for p in (f, r):
        p.add_argument("--bootstrap", required=True)
        p.add_argument("--topic", required=True)
        p.add_argument("--count", type=int, required=True)
    f.add_argument("--rate", type=float, required=True)
    f.add_argument("--times", required=True)
    r.add_argument("--isolation", default="read_committed")
    r.add_argument("--timeout", type=float, required=True)
    r.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "feed":
        result = feed(args.bootstrap, args.topic, args.rate, args.count, Path(args.times))
    else:
        result = read(
            args.bootstrap, args.topic, args.isolation, args.count, args.timeout, Path(args.out)
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
