"""Orders, payments and shipments joined by order id within an event-time interval.

The job: three Kafka sources (event time from each record's ``ts``, watermarks
with bounded out-of-orderness) keyed by ``order_id`` into a three-way interval
join: a payment and a shipment belong to an order when their times lie in
``[order.ts + LOWER_MS, order.ts + UPPER_MS]``. Each complete order is written to
``order_status`` as soon as its last piece arrives.

The generator writes orders at ``--rate`` per second with a payment 0.1-3 s and
a shipment 0.5-6 s after each (event time), a little disorder, and a few
orders that never complete (no shipment, or a payment outside the interval).
``expected_results`` is the oracle: the order ids that must appear, once each.

    streamer run examples.order_join:job --param orders=orders ...
    python -m examples.order_join generate --bootstrap-servers HOST:PORT --rate 200 --duration 30
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterator
from typing import Any

import streamer
from streamer.api import StreamEnvironment

LOWER_MS = 0
UPPER_MS = 10_000
DISORDER_MS = 500
BASE_TS = 1_700_000_000_000

TOPICS = ("orders", "payments", "shipments")


def order_id(event: dict[str, Any]) -> str:
    return str(event["order_id"])


def event_ts(event: dict[str, Any]) -> int:
    return int(event["ts"])


def order_status(
    order: dict[str, Any], payment: dict[str, Any], shipment: dict[str, Any]
) -> dict[str, Any]:
    return {
        "order_id": order["order_id"],
        "customer": order["customer"],
        "amount": order["amount"],
        "order_ts": order["ts"],
        "paid_ts": payment["ts"],
        "shipped_ts": shipment["ts"],
        "carrier": shipment["carrier"],
        "emitted_at": time.time(),
    }


@streamer.job
def job(params: dict[str, Any]) -> StreamEnvironment:
    """Parameters: ``orders``, ``payments``, ``shipments``, ``out`` (topic names),
    ``sources`` (source parallelism, 2), ``parallelism`` (join, 8), ``sinks`` (2),
    ``bounded`` (``"1"``), ``delivery`` (``at_least_once``/``exactly_once``), ``late_topic``."""
    env = StreamEnvironment("order-join", default_parallelism=int(params.get("sources", 2)))
    bounded = params.get("bounded") == "1"
    streams = [
        env.from_kafka(
            params.get(topic, topic),
            name=topic,
            timestamp_assigner=event_ts,
            max_out_of_orderness_ms=DISORDER_MS * 2,
            bounded=bounded,
        ).key_by(order_id)
        for topic in TOPICS
    ]
    orders, payments, shipments = streams
    (
        orders.interval_join(
            payments,
            shipments,
            lower_ms=LOWER_MS,
            upper_ms=UPPER_MS,
            fn=order_status,
            name="join",
            parallelism=int(params.get("parallelism", 8)),
            late_topic=params.get("late_topic"),
        ).to_kafka(
            params.get("out", "order_status"),
            name="sink",
            parallelism=int(params.get("sinks", 2)),
            key_fn=order_id,
            delivery=params.get("delivery", "at_least_once"),
        )
    )
    return env


def generate_events(
    n_orders: int, seed: int = 7, rate: float = 200.0
) -> dict[str, list[dict[str, Any]]]:
    """Events per topic in emission order (event time spaced by ``1/rate``, with disorder)."""
    rng = random.Random(seed)
    out: dict[str, list[tuple[float, dict[str, Any]]]] = {t: [] for t in TOPICS}
    step = 1000.0 / rate
    for i in range(n_orders):
        oid = f"o-{seed}-{i:07d}"
        ts = BASE_TS + int(i * step)
        customer, amount = f"c{rng.randrange(1000)}", rng.randrange(100, 100_000)
        order = {"order_id": oid, "ts": ts, "customer": customer, "amount": amount}
        out["orders"].append((ts, order))
        kind = rng.random()
        paid = ts + (rng.randrange(100, 3000) if kind > 0.02 else UPPER_MS + 500)  # 2%: too late
        method = rng.choice(("card", "wallet"))
        out["payments"].append((paid, {"order_id": oid, "ts": paid, "method": method}))
        if kind < 0.97 or kind > 0.99:  # 2%: never shipped
            ship = ts + rng.randrange(500, 6000)
            carrier = rng.choice(("dhl", "ups", "post"))
            out["shipments"].append((ship, {"order_id": oid, "ts": ship, "carrier": carrier}))
    events = {}
    for topic, items in out.items():
        # emission order: by event time, jittered by up to DISORDER_MS (bounded disorder)
        jittered = sorted(items, key=lambda e: e[0] + rng.randrange(DISORDER_MS))
        events[topic] = [e for _, e in jittered]
    return events


def expected_results(events: dict[str, list[dict[str, Any]]]) -> set[str]:
    """The oracle: order ids with a payment and a shipment inside the interval."""
    orders = {e["order_id"]: e["ts"] for e in events["orders"]}

    def inside(e: dict[str, Any]) -> bool:
        t0 = orders.get(e["order_id"])
        return t0 is not None and t0 + LOWER_MS <= e["ts"] <= t0 + UPPER_MS

    paid = {e["order_id"] for e in events["payments"] if inside(e)}
    shipped = {e["order_id"] for e in events["shipments"] if inside(e)}
    return paid & shipped


def _interleaved(events: dict[str, list[dict[str, Any]]]) -> Iterator[tuple[str, dict[str, Any]]]:
    merged = [(e["ts"], topic, e) for topic, items in events.items() for e in items]
    merged.sort(key=lambda x: x[0])
    for _, topic, e in merged:
        yield topic, e


def generate(argv: list[str]) -> int:
    from streamer.connectors import KafkaSink

    parser = argparse.ArgumentParser(prog="python -m examples.order_join generate")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--rate", type=float, default=200.0, help="orders per second")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--seed", type=int, default=7)
    for topic in TOPICS:
        parser.add_argument(f"--{topic}", default=topic, help=f"topic for {topic}")
    args = parser.parse_args(argv)
    events = generate_events(int(args.rate * args.duration), args.seed, args.rate)
    sinks = {t: KafkaSink(args.bootstrap_servers, getattr(args, t)) for t in TOPICS}
    for sink in sinks.values():
        sink.open()
    started = time.monotonic()
    n = 0
    for topic, event in _interleaved(events):
        sinks[topic].write(event, key=event["order_id"])
        n += 1
        due = started + (event["ts"] - BASE_TS) / 1000.0
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    for sink in sinks.values():
        sink.close()
    print(f"wrote {n} events; {len(expected_results(events))} orders are complete")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        sys.exit(generate(sys.argv[2:]))
    print(__doc__)
