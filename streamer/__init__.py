"""streamer: stream processing on Apache Kafka with single-task recovery.

``streamer.job`` marks a job function (see `streamer.api.job.job`): job
references (``"package.module:attribute"``) load only such functions, `Job`s and
`StreamEnvironment`s.
"""

__version__ = "0.1.0"

from streamer.api.job import job

__all__ = ["__version__", "job"]
