"""Kafka connectors: a parallel source subtask, a parallel sink subtask, serdes."""

from streamer.connectors.dead_letter import DecodeErrorPolicy
from streamer.connectors.serde import BytesSerde, JsonSerde, Serde, StrSerde, get_serde
from streamer.connectors.sink import Delivery, KafkaSink, transactional_id
from streamer.connectors.source import KafkaSource, SourceRecord, owned_partitions

__all__ = [
    "BytesSerde",
    "DecodeErrorPolicy",
    "Delivery",
    "JsonSerde",
    "KafkaSink",
    "KafkaSource",
    "Serde",
    "SourceRecord",
    "StrSerde",
    "get_serde",
    "owned_partitions",
    "transactional_id",
]
