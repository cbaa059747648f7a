"""Producer side: `RecordWriter` -> `ResultPartition` -> `ResultSubpartition`.

A task owns one `ResultPartition` per output edge, identified by a
``partition_id`` string, with one `ResultSubpartition` per consumer subtask.
The `RecordWriter` routes each record (forward, hash by key group, rebalance,
broadcast) to a subpartition, whose `SpanningRecordSerializer` appends it to
the current buffer. Full buffers go to the subpartition's bounded queue and
from there to the consumer's connection, one per unit of credit.

Modules:

- `netlayer.partition.record_writer`: `RecordWriter` (partitioners, the per-record hot path);
- `netlayer.partition.result_partition`: `ResultPartition` (flush timer, events, finish);
- `netlayer.partition.subpartition`: `ResultSubpartition` (consumer attempts, failures, replays);
- `netlayer.partition.subpartition_queue`: its queue half (serializer, queue, credit, send loop);
- `netlayer.partition.states`: the subpartition's availability state table (pure);
- `netlayer.partition.loss`: loss accounting of lossy single-task recovery (pure);
- `netlayer.partition.retention`: `RetentionBudget`, `RetentionStore` (lossless recovery);
- `netlayer.partition.replay`: `Replay` (sends retained frames to a new consumer attempt).

Threading contract: everything here runs on the task's asyncio event loop
(one thread); nothing blocks. Ordering contract: per subpartition, records and
events leave in exactly the order they were emitted.
"""

from netlayer.partition.loss import LossLedger
from netlayer.partition.record_writer import Emit, EmitResult, PartitionerName, RecordWriter
from netlayer.partition.result_partition import (
    DEFAULT_BUFFER_TIMEOUT,
    DEFAULT_QUEUE_CAPACITY,
    ResultPartition,
)
from netlayer.partition.retention import (
    DEFAULT_MAX_SPILL_BYTES,
    DEFAULT_RETENTION_BYTES,
    RetentionBudget,
    RetentionStore,
)
from netlayer.partition.states import SubpartitionEvent, SubpartitionState
from netlayer.partition.subpartition import ConsumerLink, ResultSubpartition

__all__ = [
    "DEFAULT_BUFFER_TIMEOUT",
    "DEFAULT_MAX_SPILL_BYTES",
    "DEFAULT_QUEUE_CAPACITY",
    "DEFAULT_RETENTION_BYTES",
    "ConsumerLink",
    "Emit",
    "EmitResult",
    "LossLedger",
    "PartitionerName",
    "RecordWriter",
    "ResultPartition",
    "ResultSubpartition",
    "RetentionBudget",
    "RetentionStore",
    "SubpartitionEvent",
    "SubpartitionState",
]
