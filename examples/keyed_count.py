"""A keyed running count: ``events`` -> count per key (parallelism 4) -> ``counts``.

The job used by the runtime's fault-injection tests and by ``docker/compose.yaml``.
Each output says which task attempt produced it and when, so a test can see
which key groups kept flowing during a failover:

    {"key": "k17", "count": 42, "seq": 41, "task": 2, "attempt": 0, "at": 1732...}

Job parameters (``streamer run ... --param key=value``): ``in`` (default
``events``), ``out`` (default ``counts``), ``parallelism`` (default 4),
``bounded`` (``"1"``: stop at the end of the input), ``delivery``
(``at_least_once`` or ``exactly_once``) and ``fail_on`` (a key, or
``*``, whose events make the counter raise: a poison record).

    streamer run examples.keyed_count:job
    python -m examples.keyed_count generate --bootstrap-servers HOST:PORT --rate 200
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import streamer
from streamer.api import StreamEnvironment
from streamer.runtime.operators import ProcessContext


def event_key(event: dict[str, Any]) -> str:
    return str(event["key"])


def make_counter(fail_on: str | None) -> Any:
    def count(ctx: ProcessContext, event: dict[str, Any]) -> None:
        if fail_on is not None and (fail_on == "*" or event["key"] == fail_on):
            raise ValueError(f"poison event for key {event['key']}")
        n = ctx.state.get("count", 0) + 1
        ctx.state.set("count", n)
        ctx.emit(
            {
                "key": ctx.key,
                "count": n,
                "seq": event.get("seq"),
                "task": ctx.task.subtask,
                "attempt": ctx.task.attempt,
                "at": time.time(),
            }
        )

    return count


@streamer.job
def job(params: dict[str, Any]) -> StreamEnvironment:
    env = StreamEnvironment("keyed-count", default_parallelism=2)
    (
        env.from_kafka(
            params.get("in", "events"), name="events", bounded=params.get("bounded") == "1"
        )
        .key_by(event_key)
        .process(
            make_counter(params.get("fail_on")),
            name="count",
            parallelism=int(params.get("parallelism", 4)),
        )
        .rebalance()
        .to_kafka(
            params.get("out", "counts"),
            name="sink",
            parallelism=2,
            key_fn=event_key,
            delivery=params.get("delivery", "at_least_once"),
        )
    )
    return env


def generate(argv: list[str]) -> int:
    """Write events ``{"key": "k<n % keys>", "seq": n // keys}`` at ``--rate`` per second."""
    from streamer.connectors import KafkaSink

    parser = argparse.ArgumentParser(prog="python -m examples.keyed_count generate")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", default="events")
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--keys", type=int, default=64)
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    args = parser.parse_args(argv)
    sink = KafkaSink(args.bootstrap_servers, args.topic)
    sink.open()
    n, started = 0, time.monotonic()
    try:
        while args.count == 0 or n < args.count:
            key = f"k{n % args.keys}"
            sink.write({"key": key, "seq": n // args.keys}, key=key)
            n += 1
            delay = started + n / args.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    except KeyboardInterrupt:
        pass
    finally:
        sink.close()
    print(f"wrote {n} events to {args.topic}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "generate":
        sys.exit(generate(sys.argv[2:]))
    print(__doc__)
