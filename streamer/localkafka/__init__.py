"""Apache Kafka for development, tests, CI and the demo, without Docker.

``LocalKafka`` resolves the broker jars from Maven Central (cached under
``$STREAMER_HOME``) and runs a single-node KRaft broker on 127.0.0.1; with
``sasl_ssl=True`` also a SASL_SSL listener (SCRAM, test certificates).
"""

from streamer.localkafka.broker import BrokerInfo, LocalKafka, broker_or_local, free_port
from streamer.localkafka.jars import kafka_version, resolve_kafka_jars, streamer_home
from streamer.localkafka.secured import SaslSslListener

__all__ = [
    "BrokerInfo",
    "LocalKafka",
    "SaslSslListener",
    "broker_or_local",
    "free_port",
    "kafka_version",
    "resolve_kafka_jars",
    "streamer_home",
]
