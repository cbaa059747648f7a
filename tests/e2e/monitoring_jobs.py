"""The job the monitoring tests watch (``tests.e2e.monitoring_jobs:watermarked_count``)."""

from __future__ import annotations

from typing import Any

import streamer
from examples.keyed_count import event_key, make_counter
from streamer.api import StreamEnvironment


@streamer.job
def watermarked_count(params: dict[str, Any]) -> StreamEnvironment:
    """``examples.keyed_count`` with event time: source x2 (watermarks 200 ms behind the
    Kafka timestamps) -hash-> count x4 (RocksDB state) -rebalance-> sink x2."""
    env = StreamEnvironment("watermarked-count", default_parallelism=2)
    (
        env.from_kafka(params["in"], name="events", max_out_of_orderness_ms=200)
        .key_by(event_key)
        .process(make_counter(None), name="count", parallelism=4)
        .rebalance()
        .to_kafka(params["out"], name="sink", parallelism=2, key_fn=event_key)
    )
    return env
