"""`StreamEnvironment`: where a job starts (sources) and ends (``build``).

A job module builds its environment at import time or in a function marked
with ``@streamer.job`` (taking no argument or the job params), e.g.::

    env = StreamEnvironment("orders", default_parallelism=4)
    orders = env.from_kafka("orders").key_by(lambda o: o["id"])
    payments = env.from_kafka("payments").key_by(lambda p: p["order_id"])
    orders.interval_join(payments, lower_ms=0, upper_ms=60_000, name="match").to_kafka("matched")

and every process loads it with ``load_job("my_jobs.orders:env")``. The
builder must be deterministic (same calls in the same order in every
process): operator uids come from names or creation order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from streamer.api._builder import Builder, check_parallelism_arg
from streamer.api.datastream import ConnectedKeyedStreams, DataStream, KeyedStream
from streamer.api.job import Job
from streamer.graph import DEFAULT_MAX_PARALLELISM, GraphError, OperatorKind

__all__ = ["StreamEnvironment"]

StartPosition = Literal["earliest", "latest", "committed"] | int
DecodeErrorPolicy = Literal["fail", "skip", "dead_letter"]
_STARTS = ("earliest", "latest", "committed")
_DECODE_POLICIES = ("fail", "skip", "dead_letter")


class StreamEnvironment:
    """Builds one job; ``build()`` may be called any number of times."""

    def __init__(
        self,
        job_name: str,
        default_parallelism: int = 1,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
    ) -> None:
        if not isinstance(job_name, str) or not job_name.strip():
            raise GraphError(f"job name must be a non-empty string, got {job_name!r}")
        if (
            not isinstance(max_parallelism, int)
            or isinstance(max_parallelism, bool)
            or max_parallelism < 1
        ):
            raise GraphError(f"max_parallelism must be an int >= 1, got {max_parallelism!r}")
        default = check_parallelism_arg(default_parallelism)
        if default is None or default > max_parallelism:
            raise GraphError(
                f"default_parallelism must be between 1 and max_parallelism={max_parallelism}, "
                f"got {default_parallelism!r}"
            )
        self._builder = Builder(job_name, default, max_parallelism)

    @property
    def job_name(self) -> str:
        """The job's name."""
        return self._builder.job_name

    @property
    def default_parallelism(self) -> int:
        """Parallelism of sources and multi-input operators that do not set their own.

        A single-input operator without its own parallelism inherits its input's.
        """
        return self._builder.default_parallelism

    @property
    def max_parallelism(self) -> int:
        """Number of key groups, and upper bound of every operator's parallelism."""
        return self._builder.max_parallelism

    def from_kafka(
        self,
        topic: str,
        *,
        name: str | None = None,
        parallelism: int | None = None,
        start: StartPosition = "earliest",
        key_serde: str = "str",
        value_serde: str = "json",
        on_decode_error: DecodeErrorPolicy = "fail",
        dead_letter_topic: str | None = None,
        timestamp_assigner: Callable[[Any], int] | None = None,
        max_out_of_orderness_ms: int | None = None,
        bounded: bool = False,
    ) -> DataStream[Any]:
        """A stream of the decoded values of a Kafka topic (kind ``kafka_source``).

        ``start``: ``"earliest"``, ``"latest"``, ``"committed"`` or a timestamp
        in epoch milliseconds (used when no checkpoint says otherwise).
        ``on_decode_error``: ``"fail"``, ``"skip"`` or ``"dead_letter"``, which
        writes undecodable records to ``dead_letter_topic``, by default
        ``<topic>.dlq`` (it must exist; ``streamer run`` creates it with the job's
        other topics). Dead letters are at-least-once: a record may appear in the
        dead-letter topic more than once after a failover.
        ``timestamp_assigner(value) -> epoch ms`` gives event time (default:
        the Kafka record timestamp); ``max_out_of_orderness_ms`` bounds the
        watermark lag (``None``: no watermarks). ``bounded=True`` reads up to
        the end offsets seen when the task starts, then finishes.

        Config: ``topic, start, key_serde, value_serde, on_decode_error,
        dead_letter_topic`` (the resolved name under ``"dead_letter"``, else
        ``None``), ``max_out_of_orderness_ms, bounded, timestamp_assigner`` (the
        latter a function uid or ``None``).
        """
        if not isinstance(topic, str) or not topic:
            raise GraphError(f"source topic must be a non-empty string, got {topic!r}")
        if isinstance(start, bool) or not (
            start in _STARTS or (isinstance(start, int) and start >= 0)
        ):
            raise GraphError(
                f"bad start {start!r}: use 'earliest', 'latest', 'committed' or epoch ms >= 0"
            )
        if on_decode_error not in _DECODE_POLICIES:
            raise GraphError(
                f"bad on_decode_error {on_decode_error!r}: use one of {', '.join(_DECODE_POLICIES)}"
            )
        if dead_letter_topic is not None and on_decode_error != "dead_letter":
            raise GraphError("dead_letter_topic is only used with on_decode_error='dead_letter'")
        if on_decode_error == "dead_letter" and dead_letter_topic is None:
            dead_letter_topic = f"{topic}.dlq"
        if dead_letter_topic is not None and (
            not isinstance(dead_letter_topic, str) or not dead_letter_topic
        ):
            raise GraphError(
                f"dead_letter_topic must be a non-empty string, got {dead_letter_topic!r}"
            )
        if max_out_of_orderness_ms is not None and (
            not isinstance(max_out_of_orderness_ms, int)
            or isinstance(max_out_of_orderness_ms, bool)
            or max_out_of_orderness_ms < 0
        ):
            raise GraphError(
                f"max_out_of_orderness_ms must be an int >= 0, got {max_out_of_orderness_ms!r}"
            )
        for label, serde in (("key_serde", key_serde), ("value_serde", value_serde)):
            if not isinstance(serde, str) or not serde:
                raise GraphError(f"{label} must be a non-empty string, got {serde!r}")
        config: dict[str, Any] = {
            "topic": topic,
            "start": start,
            "key_serde": key_serde,
            "value_serde": value_serde,
            "on_decode_error": on_decode_error,
            "dead_letter_topic": dead_letter_topic,
            "max_out_of_orderness_ms": max_out_of_orderness_ms,
            "bounded": bool(bounded),
        }
        node = self._builder.add_node(
            OperatorKind.KAFKA_SOURCE,
            config,
            aux={"timestamp_assigner": timestamp_assigner},
            name=name,
            parallelism=parallelism,
        )
        return DataStream(self._builder, node)

    def connect(self, *streams: KeyedStream[Any]) -> ConnectedKeyedStreams:
        """Keyed streams as inputs ``0..k-1`` of one multi-input keyed operator."""
        for s in streams:
            if isinstance(s, KeyedStream) and s._builder is not self._builder:
                raise GraphError("cannot connect streams of another StreamEnvironment")
        return ConnectedKeyedStreams(tuple(streams))

    def build(self) -> Job:
        """The chained, validated `Job`; `GraphError` (one line) if the job is invalid."""
        return self._builder.build()
