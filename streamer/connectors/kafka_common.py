"""What the Kafka source and sink share: topic checks with one-line errors, and config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamer.connectors.client_config import client_config
from streamer.errors import ConnectorError

DEFAULT_METADATA_TIMEOUT = 15.0


def topic_partitions(
    client: Any,
    topic: str,
    bootstrap: str,
    timeout: float,
    config: Mapping[str, Any] | None = None,
) -> int:
    """Number of partitions of ``topic``, via ``client.list_topics`` (Consumer or Producer).

    Raises ConnectorError with one clear line when the broker cannot be reached or
    the topic does not exist; given the client's ``config``, the line says why it
    could not connect when librdkafka knows (see ``unreachable``).
    """
    from confluent_kafka import KafkaError, KafkaException

    try:
        meta = client.list_topics(topic=topic, timeout=timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        code = err.code() if isinstance(err, KafkaError) else None
        if code in (KafkaError._TRANSPORT, KafkaError._TIMED_OUT, KafkaError._ALL_BROKERS_DOWN):
            raise ConnectorError(unreachable(bootstrap, timeout, config)) from None
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


def unreachable(bootstrap: str, timeout: float, config: Mapping[str, Any] | None) -> str:
    """One line for a client that got no metadata from ``bootstrap`` within ``timeout``.

    The failed call says only "transport failure"; librdkafka tells why (a failed
    authentication, a certificate it cannot verify) to an error callback. So, given
    the client's ``config``, ``connect_error`` asks a short-lived client with the same
    settings, and the line carries its answer."""
    # on a loaded machine a SASL/SCRAM or TLS handshake can take seconds: the probe
    # waits up to 10 s, and stops as soon as it has a security error
    reason = None if config is None else connect_error(config, min(max(timeout, 5.0), 10.0))
    if reason is not None:
        return (
            f"cannot reach Kafka at {bootstrap} ({reason}): check the job's kafka_config "
            "(security.protocol, sasl.*, ssl.*)"
        )
    line = (
        f"cannot reach Kafka at {bootstrap} within {timeout:.0f} s: check that the broker "
        "runs and bootstrap servers are right (`streamer kafka status`)"
    )
    plaintext = str((config or {}).get("security.protocol", "plaintext")).lower() == "plaintext"
    if config is not None and plaintext:
        line += (
            "; for a secured cluster, give its security.protocol and credentials in the "
            "job's kafka_config (--kafka-config)"
        )
    return line


def connect_error(config: Mapping[str, Any], timeout: float) -> str | None:
    """Why a fresh admin client with ``config`` cannot connect when the reason is its
    security settings (a failed authentication or TLS handshake), as librdkafka tells
    its error callback (`health.reach`); None when it connects or fails for another
    reason."""
    from streamer.connectors.health import reach

    bootstrap = str(config.get("bootstrap.servers", ""))
    try:
        return reach(bootstrap, config, timeout).security
    except Exception:  # noqa: BLE001 - settings the main client took; say nothing more
        return None
