"""The job API: a fluent builder producing a `Job` (a `JobGraph` plus its callables).

Job code is shipped by reference (``"package.module:attribute"``) and loaded
with `load_job` in every process; nothing is pickled. A reference names a `Job`,
a `StreamEnvironment` or a function marked with ``@streamer.job``
(`streamer.api.job.job`); nothing else is loaded or called.
"""

from streamer.api.datastream import ConnectedKeyedStreams, DataStream, DataStreamSink, KeyedStream
from streamer.api.environment import StreamEnvironment
from streamer.api.job import Job
from streamer.api.loader import JobLoadError, load_job, resolve_job
from streamer.graph import GraphError

__all__ = [
    "ConnectedKeyedStreams",
    "DataStream",
    "DataStreamSink",
    "GraphError",
    "Job",
    "JobLoadError",
    "KeyedStream",
    "StreamEnvironment",
    "load_job",
    "resolve_job",
]
