"""What the Kafka source and sink share: topic checks with one-line errors, and config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer.connectors.client_config import client_config
from streamer.errors import ConnectorError

DEFAULT_METADATA_TIMEOUT = 15.0


def topic_partitions(client: Any, topic: str, bootstrap: str, timeout: float) -> int:
    """Number of partitions of ``topic``, via ``client.list_topics`` (Consumer or Producer).

    Raises ConnectorError with one clear line when the broker cannot be reached or
    the topic does not exist.
    """
    from confluent_kafka import KafkaError, KafkaException

    try:
        meta = client.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        if code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN):
            raise ConnectorError(
                f"cannot reach Kafka at {bootstrap} within {timeout:.0f} s: check that the "
                "broker runs and bootstrap servers are right (`streamer kafka status`)"
            ) from None
        raise ConnectorError(
            f"cannot read metadata of topic {topic!r} at {bootstrap}: {exc}"
        ) from None
    tmeta = meta.topics.get(topic)
    if tmeta is None or (
        tmeta.error is not None and tmeta.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
    ):
        raise ConnectorError(
            f"topic {topic!r} does not exist at {bootstrap}: create it first "
            "(e.g. kafka-topics.sh --create) or fix the name"
        )
    if tmeta.error is not None:
        raise ConnectorError(f"topic {topic!r} at {bootstrap} is not usable: {tmeta.error.str()}")
    return len(tmeta.partitions)


def base_config(
    bootstrap: str,
    extra: Mapping[str, Any] | None,
    *,
    kafka_config: Mapping[str, Any] | None = None,
    managed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """librdkafka settings of one client: streamer's defaults, then ``extra`` (the
    component's defaults), the job's ``kafka_config`` (checked) and, winning, the
    ``managed`` settings; see ``streamer.connectors.client_config``."""
    return client_config(bootstrap, defaults=extra, kafka_config=kafka_config, managed=managed)
