"""A keyed running count behind a ``kafka`` exchange (FLIP-1's persisted exchange):

    events x2 -hash-> tag x3 =kafka, hash=> count x4 -rebalance-> sink x2

The exchange persists the tagged events in a topic (one partition per ``count``
subtask), which cuts the job into two pipelined regions: ``events`` + ``tag`` and
``count`` + ``sink``. A region restart on one side stops at the topic; the output
stays exactly once (the exchange is transactional per checkpoint and read
read-committed, its offsets in the checkpoints). The output is that of
``examples.keyed_count``: ``{"key", "count", "seq", "task", "attempt", "at"}``.

Job parameters: ``in`` (default ``events``), ``out`` (``counts``), ``exchange``
(the exchange's topic, default ``<out>.by-key``; created with 4 partitions when
missing), ``bounded`` (``"1"``: stop at the end of the input), ``delivery``
(``exactly_once``, the default, or ``at_least_once``) and ``event_time`` (a bound
in ms: the source's watermarks, with that out-of-orderness, cross the exchange).

    streamer run examples.kafka_exchange:job --set checkpoint_interval=1
"""

from __future__ import annotations

from typing import Any

import streamer
from examples.keyed_count import event_key, make_counter
from streamer.api import StreamEnvironment
from streamer.runtime.operators import ProcessContext


def tag(ctx: ProcessContext, event: dict[str, Any]) -> None:
    """What crosses the exchange: the event, marked with the tagging subtask (keyed, so
    each key's events keep their order on their way to its counter)."""
    ctx.emit({**event, "tagged_by": ctx.task.subtask})


@streamer.job
def job(params: dict[str, Any]) -> StreamEnvironment:
    env = StreamEnvironment("exchange-count", default_parallelism=2)
    out = params.get("out", "counts")
    bound = params.get("event_time")
    (
        env.from_kafka(
            params.get("in", "events"),
            name="events",
            bounded=params.get("bounded") == "1",
            max_out_of_orderness_ms=None if bound is None else int(bound),
        )
        .key_by(event_key)
        .process(tag, name="tag", parallelism=3)
        .exchange("kafka", topic=params.get("exchange", f"{out}.by-key"))
        .key_by(event_key)
        .process(make_counter(None), name="count", parallelism=4)
        .rebalance()
        .to_kafka(
            out,
            name="sink",
            parallelism=2,
            key_fn=event_key,
            delivery=params.get("delivery", "exactly_once"),
        )
    )
    return env
