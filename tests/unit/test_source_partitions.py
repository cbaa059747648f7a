"""A source subtask's partitions and positions, without a broker."""

from __future__ import annotations

import pytest

from streamer.connectors.source_partitions import SourcePositions, owned_partitions
from streamer.errors import ConnectorError


def test_owned_partitions_deal_round_robin() -> None:
    assert [owned_partitions(7, i, 3) for i in range(3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_snapshot_round_trip_and_topic_check() -> None:
    positions = SourcePositions("events")
    positions.next.update({3: 10, 1: 7})
    snap = positions.snapshot()
    assert snap == {"topic": "events", "positions": {"1": 7, "3": 10}}
    assert positions.copy() == {"3": 10, "1": 7}
    again = SourcePositions("events")
    again.restore(snap)
    assert again.restored == {1: 7, 3: 10}
    with pytest.raises(ConnectorError, match="snapshot is for topic 'events', not 'other'"):
        SourcePositions("other").restore(snap)


def test_reached_ends_only_when_every_bounded_partition_is_read_to_its_end() -> None:
    positions = SourcePositions("t")
    assert positions.reached_ends()  # nothing to read
    positions.next.update({0: 5, 1: 0})
    positions.ends.update({0: 5, 1: 2})
    assert not positions.reached_ends()
    positions.next[1] = 2
    assert positions.reached_ends()
