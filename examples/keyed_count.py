"""A keyed running count: ``events`` -> count per key (parallelism 4) -> ``counts``.

The job used by the runtime's fault-injection tests and by ``docker/compose.yaml``.
Each output says which task attempt produced it and when, so a test can see
which key groups kept flowing during a failover:

    {"key": "k17", "count": 42, "seq": 41, "task": 2, "attempt": 0, "at": 1732...}

Settings come from the environment: ``STREAMER_EXAMPLE_IN`` (default ``events``),
``STREAMER_EXAMPLE_OUT`` (default ``counts``), ``STREAMER_EXAMPLE_PARALLELISM``
(default 4), ``STREAMER_EXAMPLE_BOUNDED=1`` (stop at the end of the input) and
``STREAMER_EXAMPLE_FAIL_ON`` (a key, or ``*``, whose events make the counter raise).

    streamer run examples.keyed_count:job
    python -m examples.keyed_count generate --bootstrap-servers HOST:PORT --rate 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from streamer.api import StreamEnvironment
from streamer.runtime.operators import ProcessContext

IN_TOPIC = os.environ.get("STREAMER_EXAMPLE_IN", "events")
OUT_TOPIC = os.environ.get("STREAMER_EXAMPLE_OUT", "counts")
PARALLELISM = int(os.environ.get("STREAMER_EXAMPLE_PARALLELISM", "4"))
BOUNDED = os.environ.get("STREAMER_EXAMPLE_BOUNDED") == "1"
FAIL_ON = os.environ.get("STREAMER_EXAMPLE_FAIL_ON")


def event_key(event: dict[str, Any]) -> str:
    return str(event["key"])


def count(ctx: ProcessContext, event: dict[str, Any]) -> None:
    if FAIL_ON is not None and (FAIL_ON == "*" or event["key"] == FAIL_ON):
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


def job() -> StreamEnvironment:
    env = StreamEnvironment("keyed-count", default_parallelism=2)
    (
        env.from_kafka(IN_TOPIC, name="events", bounded=BOUNDED)
        .key_by(event_key)
        .process(count, name="count", parallelism=PARALLELISM)
        .rebalance()
        .to_kafka(OUT_TOPIC, name="sink", parallelism=2, key_fn=event_key)
    )
    return env


def generate(argv: list[str]) -> int:
    """Write events ``{"key": "k<n % keys>", "seq": n // keys}`` at ``--rate`` per second."""
    from streamer.connectors import KafkaSink

    parser = argparse.ArgumentParser(prog="python -m examples.keyed_count generate")
    parser.add_argument("--bootstrap-servers", required=True)
    parser.add_argument("--topic", default=IN_TOPIC)
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
