"""KRaft cluster ids for the local broker's storage format."""

from __future__ import annotations

import base64
import uuid

import pytest

from streamer.localkafka import broker


def test_cluster_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # the first UUID encodes to "-" + ...: the storage tool would read it as an option
    dashed = uuid.UUID(bytes=bytes([0xF8]) + bytes(15))
    assert base64.urlsafe_b64encode(dashed.bytes).decode().startswith("-")
    plain = uuid.UUID(int=12345)
    queue = [dashed, plain]
    monkeypatch.setattr(broker.uuid, "uuid4", lambda: queue.pop(0))
    cid = broker.new_cluster_id()
    assert cid == base64.urlsafe_b64encode(plain.bytes).decode().rstrip("=")
    assert len(cid) == 22 and not queue
