"""Jobs for the end-to-end tests, loaded by reference (``tests.e2e.jobs:<name>``)."""

from __future__ import annotations

from typing import Any

import streamer
from examples.keyed_count import event_key, make_counter
from streamer.api import StreamEnvironment


@streamer.job
def two_pipelines(params: dict[str, Any]) -> StreamEnvironment:
    """Two independent keyed pipelines A and B: each source(2) -hash-> count(2) -> sink."""
    env = StreamEnvironment("two-pipelines", default_parallelism=2)
    for p in "AB":
        (
            env.from_kafka(params[f"in{p}"], name=f"events{p}")
            .key_by(event_key)
            .process(make_counter(None), name=f"count{p}")
            .to_kafka(params[f"out{p}"], name=f"sink{p}", key_fn=event_key)
        )
    return env
