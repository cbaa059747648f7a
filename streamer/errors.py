"""The error types streamer shows to users.

Every `StreamerError` carries a one-line message that says what is wrong and
what to do; the CLI prints it as ``error: <message>`` and exits non-zero, never
a traceback from deep inside.
"""

from __future__ import annotations


class StreamerError(Exception):
    """Base class: a problem the user can act on, described in one line."""


class ConfigError(StreamerError):
    """A setting is missing, malformed or inconsistent."""


class LocalKafkaError(StreamerError):
    """The local Apache Kafka broker could not be resolved, started or stopped."""


class ConnectorError(StreamerError):
    """A Kafka source or sink cannot go on (unknown topic, unreachable broker, bad record)."""
