"""The topics of a job's ``kafka`` exchanges: created, or checked, before it deploys.

Each exchange needs a partition per consumer subtask (``partitions``). A missing
topic is created with that many partitions (replication factor 1 on a single
broker, else the broker's default); an existing one must have at least that many.
Blocking (admin calls): the coordinator runs it off its loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from streamer.connectors.kafka_common import base_config
from streamer.errors import ConnectorError
from streamer.graph import JobGraph
from streamer.graph.exchanges import exchange_topics

TIMEOUT_S = 30.0


def ensure_exchange_topics(
    bootstrap: str, topics: Mapping[str, int], kafka_config: Mapping[str, Any] | None = None
) -> list[str]:
    """Create the missing ``topic -> partitions``; returns the created ones.
    `ConnectorError` (one line) for an existing topic with too few partitions."""
    from confluent_kafka import KafkaError, KafkaException
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    if not topics:
        return []
    admin = AdminClient(base_config(bootstrap, None, kafka_config=kafka_config))
    try:
        meta = admin.list_topics(timeout=TIMEOUT_S)
    except KafkaException as exc:
        raise ConnectorError(f"cannot list the topics at {bootstrap}: {exc}") from None
    missing = []
    for topic, partitions in sorted(topics.items()):
        found = meta.topics.get(topic)
        if found is None or found.error is not None:
            missing.append(topic)
        elif len(found.partitions) < partitions:
            raise ConnectorError(
                f"kafka exchange topic {topic!r} has {len(found.partitions)} partitions but "
                f"its consumer runs {partitions} subtasks: give it at least {partitions} "
                "partitions, or use a new topic"
            )
    if not missing:
        return []
    replication = 1 if len(meta.brokers) == 1 else -1
    futures = admin.create_topics([NewTopic(t, topics[t], replication) for t in missing])
    for topic, fut in futures.items():
        try:
            fut.result(timeout=TIMEOUT_S)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # another submission created it meanwhile
            raise ConnectorError(
                f"cannot create kafka exchange topic {topic!r} at {bootstrap}: {exc}"
            ) from None
    return missing


async def prepare_exchange_topics(job_graph: JobGraph, config: Mapping[str, Any]) -> None:
    """Before a job deploys: its kafka exchanges' topics exist with enough partitions
    (created off the caller's loop); `ConnectorError` otherwise."""
    topics = exchange_topics(job_graph)
    if topics:
        await asyncio.get_running_loop().run_in_executor(
            None,
            ensure_exchange_topics,
            str(config.get("bootstrap_servers") or "127.0.0.1:9092"),
            topics,
            config.get("kafka_config"),
        )
