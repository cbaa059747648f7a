"""WriterOutput: what a chain emits reaches each output edge's subpartitions as [ts, value]."""

from __future__ import annotations

import asyncio
from typing import Any

from netlayer.partition import RecordWriter, ResultPartition
from netlayer.serialization import RecordDeserializer
from streamer.graph.keygroups import subtask_for_key
from streamer.runtime.outputs import WriterOutput


def _received(partition: ResultPartition) -> list[list[Any]]:
    """Per subpartition, the records its serializer holds (not yet flushed)."""
    out = []
    for sp in partition.subpartitions:
        finished = sp.serializer.flush()
        data = b"" if finished is None else bytes(finished[0][sp.serializer.header_size :])
        out.append(RecordDeserializer().feed(data))
    return out


def _key(value: dict[str, Any]) -> str:
    return str(value["k"])


def test_one_hash_edge_and_two_edges_route_every_record() -> None:
    async def run() -> None:
        values = [{"k": f"k{i % 7}", "i": i} for i in range(40)]
        hashed = ResultPartition("a", 3, buffer_timeout=None)
        single = WriterOutput([(RecordWriter(hashed, "hash", max_parallelism=128), _key)])
        both_hashed = ResultPartition("b", 3, buffer_timeout=None)
        round_robin = ResultPartition("c", 2, buffer_timeout=None)
        double = WriterOutput(
            [
                (RecordWriter(both_hashed, "hash", max_parallelism=128), _key),
                (RecordWriter(round_robin, "rebalance"), None),
            ]
        )
        for i, v in enumerate(values):
            single.collect(v, 1000 + i)
            double.collect(v, 1000 + i)
        expected: list[list[Any]] = [[], [], []]
        for i, v in enumerate(values):
            expected[subtask_for_key(_key(v), 128, 3)].append([1000 + i, v])
        assert _received(hashed) == expected
        assert _received(both_hashed) == expected
        assert _received(round_robin) == [
            [[1000 + i, v] for i, v in enumerate(values) if i % 2 == 0],
            [[1000 + i, v] for i, v in enumerate(values) if i % 2 == 1],
        ]
        assert single.records == double.records == 40
        assert single.waits == double.waits == []

    asyncio.run(run())
