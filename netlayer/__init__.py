"""netlayer: the data plane (Flink's network stack, with single-task-recovery semantics).

Tasks exchange records through it over TCP; one task can fail while the others
keep flowing. Layers, bottom up:

- `netlayer.protocol`: sans-io frames and codec (bytes <-> messages);
- `netlayer.serialization`: spanning record (de)serialization into 32 KiB buffers;
- `netlayer.partition`: producer side (`RecordWriter`, `ResultPartition`, `ResultSubpartition`);
- `netlayer.gate`: consumer side (`InputGate`, `InputChannel`, `CachedChannelProvider`);
- `netlayer.transport`: asyncio server (one per task), client connections, connect and retry;
- `netlayer.statetable`: the (state, event) -> state tables of subpartitions and channels;
- `netlayer.events`, `netlayer.metrics`.

Threading contract, everywhere: one asyncio event loop per task process owns
all of a task's netlayer objects; every method is called on that loop and none
blocks. Ordering contract: per (producer subtask, consumer subtask) pair,
records and events arrive in the order they were emitted; nothing is ordered
across pairs. netlayer never imports ``streamer``.
"""

from netlayer.events import CheckpointBarrier, EndOfPartition, Watermark
from netlayer.gate import (
    CachedChannelProvider,
    ChannelInfo,
    ChannelUpdateError,
    InputChannel,
    InputGate,
    ReplayRefused,
    UnavailableEvent,
)
from netlayer.metrics import ChannelMetrics, PartitionMetrics, SubpartitionMetrics
from netlayer.partition import RecordWriter, ResultPartition, ResultSubpartition, RetentionBudget
from netlayer.protocol.errors import ProtocolError
from netlayer.transport import PartitionServer

__all__ = [
    "CachedChannelProvider",
    "ChannelInfo",
    "ChannelMetrics",
    "ChannelUpdateError",
    "CheckpointBarrier",
    "EndOfPartition",
    "InputChannel",
    "InputGate",
    "PartitionMetrics",
    "PartitionServer",
    "ProtocolError",
    "RecordWriter",
    "ReplayRefused",
    "ResultPartition",
    "ResultSubpartition",
    "RetentionBudget",
    "SubpartitionMetrics",
    "UnavailableEvent",
    "Watermark",
]
