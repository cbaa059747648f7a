"""streamer: stream processing on Apache Kafka with single-task recovery."""

__version__ = "0.1.0"
