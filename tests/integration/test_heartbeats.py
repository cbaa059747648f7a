"""The coordinator's heartbeat watchdog over real sockets: a silent worker is declared
lost; a stall of the coordinator's own loop is not held against the workers."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

from streamer.coordinator.coordinator import Coordinator
from streamer.rpc import RpcConnection, connect
from streamer.security.roles import worker_credentials

pytestmark = pytest.mark.timeout(30)

SECRET = b"heartbeat-test-cluster-secret-32"


async def _register(port: int, worker_id: str) -> RpcConnection:
    creds = worker_credentials(SECRET, worker_id)
    conn = await connect("127.0.0.1", port, name=worker_id, credentials=creds)
    body = {"worker_id": worker_id, "host": "127.0.0.1", "pid": os.getpid(), "slots": 1}
    await conn.request("register_worker", body, timeout=5)
    return conn


def _steady_worker(port: int, registered: threading.Event, stop: threading.Event) -> None:
    """A worker on its own thread and loop that heartbeats every 0.1 s until ``stop``."""

    async def go() -> None:
        conn = await _register(port, "steady")
        registered.set()
        while not stop.is_set():
            await conn.notify("heartbeat", {"worker_id": "steady", "tasks": []})
            await asyncio.sleep(0.1)
        await conn.close(reason="test over")

    asyncio.run(go())


def test_a_coordinator_stall_does_not_lose_workers_but_silence_does() -> None:
    async def go() -> None:
        coordinator = Coordinator(
            status_port=None, heartbeat_interval=0.2, heartbeat_timeout=1.0, secret=SECRET
        )
        await coordinator.start()
        registered, stop = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=_steady_worker, args=(coordinator.port, registered, stop), daemon=True
        )
        thread.start()
        silent = await _register(coordinator.port, "silent")
        try:
            while not registered.is_set():
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            assert set(coordinator.workers) == {"steady", "silent"}
            time.sleep(2.0)  # the coordinator's loop stalls twice the heartbeat timeout
            await asyncio.sleep(0.3)
            assert set(coordinator.workers) == {"steady", "silent"}
            await asyncio.sleep(1.5)  # now "silent" has been silent for real
            assert set(coordinator.workers) == {"steady"}
        finally:
            stop.set()
            thread.join(timeout=5)
            await silent.close(reason="test over")
            await coordinator.close()

    asyncio.run(go())
