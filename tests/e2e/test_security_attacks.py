"""The attacks of issue 11 against a running keyed job, each from a stranger on the
same host (no cluster secret), and where it matters from a peer that holds a key but
not the right to what it tries. Each attack fails, and the job goes on: attempts
unchanged, no failover, output still growing (DESIGN.md §10).

Real coordinator, workers and task processes, real Kafka, real sockets.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from netlayer.protocol.codec import FrameDecoder, encode
from netlayer.protocol.frames import MAX_U32, Error, PartitionRequest
from netlayer.protocol.handshake import Credentials
from streamer.api import load_job
from streamer.graph import TaskId
from streamer.rpc import RpcConnectError, RpcRemoteError, connect
from streamer.rpc.auth import client_handshake
from streamer.rpc.client import CoordinatorClient
from streamer.security import cluster_secret, derive
from streamer.security.roles import client_credentials, worker_credentials
from streamer.testing import TopicFactory
from streamer.testing.cluster import LocalCluster, Status, all_running
from streamer.testing.feeder import EventFeeder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

JOB = "examples.keyed_count:job"


def _config(bootstrap: str, topics: TopicFactory) -> dict[str, Any]:
    return {
        "strategy": "individual",
        "bootstrap_servers": bootstrap,
        "metrics_interval": 0.5,
        "params": {"in": topics.create(4), "out": topics.create(2)},
    }


def _start(cluster: LocalCluster, bootstrap: str, topics: TopicFactory) -> tuple[str, EventFeeder]:
    config = _config(bootstrap, topics)
    job_id = cluster.submit(JOB, config)
    cluster.wait_for(job_id, all_running, what="all tasks running")
    feeder = EventFeeder(bootstrap, config["params"]["in"], rate=300).start()
    cluster.wait_for(job_id, lambda s: s["records_out"] > 50, what="output")
    return job_id, feeder


def _attempts(status: Status) -> dict[str, int]:
    return {t["task"]: t["attempt"] for t in status["tasks"]}


def _still_healthy(cluster: LocalCluster, job_id: str, before: Status) -> None:
    """Same attempts, no failover, RUNNING, and the output keeps growing."""
    after = cluster.wait_for(
        job_id,
        lambda s: s["records_out"] >= before["records_out"] + 100,
        what="output growing after the attack",
    )
    assert after["state"] == "RUNNING"
    assert _attempts(after) == _attempts(before)
    assert after["failovers"] == []


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


async def _stranger(address: str, kind: str, body: dict[str, Any], key: bytes) -> str:
    """Connect with a made-up key and try ``kind``; returns the error it got."""
    host, port = _host_port(address)
    try:
        conn = await connect(host, port, credentials=client_credentials(key), timeout=5)
    except RpcConnectError as exc:
        return str(exc)
    try:
        await conn.request(kind, body, timeout=5)
    finally:
        await conn.close()
    return "it worked"


def test_a_stranger_cannot_submit_cancel_kill_forge_exits_or_register_as_a_worker(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory, tmp_path: Path
) -> None:
    job_id, feeder = _start(cluster, kafka_bootstrap, kafka_topics)
    try:
        before = cluster.status(job_id)
        touched = tmp_path / "touched"
        attacks: list[tuple[str, dict[str, Any]]] = [
            ("submit_job", {"job_ref": "subprocess:getoutput",
                            "config": {"params": {f"touch {touched}": ""}}}),
            ("cancel_job", {"job_id": job_id}),
            ("kill_task", {"job_id": job_id, "task": "count#1"}),
            ("task_exited", {"job_id": job_id, "task": "count#1", "attempt": 0,
                             "exit_code": -9, "signal": 9}),
            ("register_worker", {"worker_id": "w1", "host": "127.0.0.1", "pid": 1, "slots": 64}),
        ]  # fmt: skip
        wrong_secret = os.urandom(32)
        for kind, body in attacks:
            error = asyncio.run(_stranger(cluster.address, kind, body, wrong_secret))
            assert error.startswith(f"cannot authenticate to {cluster.address}: "), kind
            assert "could not prove it holds the cluster secret" in error, kind
        # a stranger that ignores the server's proof and just sends frames gets nothing
        host, port = _host_port(cluster.address)
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(b"\x00\x00\x00\x40STRC\x01" + b'{"k":"cancel_job"}'.ljust(57))
            assert s.recv(4096) == bytes([2, 0, len("authentication failed")]) + (
                b"authentication failed"
            )
        assert not touched.exists()
        _still_healthy(cluster, job_id, before)
    finally:
        feeder.stop()


def test_key_holders_may_do_only_what_their_role_may(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Authorization, beyond authentication: a worker cannot report another worker's
    task dead, nor replace a live worker; a task cannot cancel its job."""
    job_id, feeder = _start(cluster, kafka_bootstrap, kafka_topics)
    secret = cluster_secret()
    try:
        before = cluster.status(job_id)
        victim = next(t for t in before["tasks"] if t["task"] == "count#1")
        other = next(w for w in ("w1", "w2") if w != victim["worker"])

        async def attacks() -> list[str]:
            host, port = _host_port(cluster.address)
            errors = []
            # 1. a second "w1" while w1 lives: refused, w1 keeps its slots and tasks
            rogue = await connect(host, port, credentials=worker_credentials(secret, "w1"))
            body = {"worker_id": "w1", "host": "127.0.0.1", "pid": 1, "slots": 64}
            with pytest.raises(RpcRemoteError) as exc:
                await rogue.request("register_worker", body, timeout=5)
            errors.append(str(exc.value))
            await rogue.close()
            # 2. the other worker reports the victim dead: refused, no failover
            liar = await connect(host, port, credentials=worker_credentials(secret, other))
            exited = {"job_id": job_id, "task": "count#1", "attempt": victim["attempt"],
                      "exit_code": -9, "signal": 9}  # fmt: skip
            with pytest.raises(RpcRemoteError) as exc:
                await liar.request("task_exited", exited, timeout=5)
            errors.append(str(exc.value))
            # 3. ... nor may it speak for another worker
            beat = {"worker_id": victim["worker"], "tasks": []}
            with pytest.raises(RpcRemoteError) as exc:
                await liar.request("heartbeat", beat, timeout=5)
            errors.append(str(exc.value))
            await liar.close()
            # 4. a task attempt's key cannot cancel the job
            keys = {
                "rpc": derive(secret, "rpc", "task", job_id, "count#0", 0).hex(),
                "data": "00",
            }
            task = Credentials(
                bytes.fromhex(keys["rpc"]),
                {"role": "task", "job_id": job_id, "task": "count#0", "attempt": 0},
            )
            conn = await connect(host, port, credentials=task)
            with pytest.raises(RpcRemoteError) as exc:
                await conn.request("cancel_job", {"job_id": job_id}, timeout=5)
            errors.append(str(exc.value))
            await conn.close()
            return errors

        errors = asyncio.run(attacks())
        assert "worker w1 is registered and alive; give each worker its own --id" in errors[0]
        assert "count#1@0 does not run on this worker" in errors[1]
        assert f"not allowed: worker {other} may not speak for worker" in errors[2]
        assert "not allowed: a task may not send cancel_job" in errors[3]
        _still_healthy(cluster, job_id, before)
    finally:
        feeder.stop()


def test_the_hijacking_partition_request_is_refused_and_output_continues(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    job_id, feeder = _start(cluster, kafka_bootstrap, kafka_topics)
    try:
        before = cluster.status(job_id)
        producer = next(t for t in before["tasks"] if t["task"] == "events#0")
        host, port = _host_port(producer["data_address"])
        eg = load_job(JOB, {"in": "x", "out": "y"}).execution_graph()
        partition = eg.result_partitions(TaskId("events", 0))[0].partition_id
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(encode(PartitionRequest(partition, 0, MAX_U32, 64)))
            assert s.recv(4096) == bytes([2, 0, 21]) + b"authentication failed"
        # a connection that knows the job's data key but not the consumer's token
        data_key = derive(cluster_secret(), "data", job_id)

        async def with_key() -> list[Any]:
            reader, writer = await asyncio.open_connection(host, port)
            creds = Credentials(data_key, {"role": "task"})
            await client_handshake(reader, writer, creds)
            writer.write(encode(PartitionRequest(partition, 0, MAX_U32, 64, token=bytes(16))))
            await writer.drain()
            msgs = FrameDecoder().feed(await asyncio.wait_for(reader.read(), 5))
            writer.close()
            return msgs

        msgs = asyncio.run(with_key())
        assert isinstance(msgs[0], Error) and "bad token" in msgs[0].message
        _still_healthy(cluster, job_id, before)
    finally:
        feeder.stop()


def test_floods_and_idle_connections_do_not_hurt_the_coordinator(
    cluster: LocalCluster, kafka_bootstrap: str, kafka_topics: TopicFactory
) -> None:
    """Oversized frames before authentication, connections that never authenticate,
    and an authenticated client pipelining 20,000 requests without reading replies:
    memory stays flat, other clients are answered, idle strangers are dropped."""
    job_id, feeder = _start(cluster, kafka_bootstrap, kafka_topics)
    assert cluster.coordinator is not None
    pid = cluster.coordinator.pid
    host, port = _host_port(cluster.address)
    try:
        before = cluster.status(job_id)
        rss0 = _rss_kib(pid)
        # 1. 20 connections announcing a 16 MiB frame and sending 1 MiB of it
        big = [socket.create_connection((host, port), timeout=10) for _ in range(20)]
        for s in big:
            s.sendall(struct.pack(">I", 16 * 1024 * 1024 - 1) + b"STRC" + b"x" * (1 << 20))
        for s in big:
            assert s.recv(4096).endswith(b"authentication failed")
            s.close()
        # 2. 50 connections that say nothing: dropped after the 5 s handshake timeout
        idle = [socket.create_connection((host, port), timeout=10) for _ in range(50)]
        started = time.monotonic()
        for s in idle:
            assert s.recv(4096) == b""  # closed by the coordinator
            s.close()
        assert time.monotonic() - started < 9

        # 3. an authenticated flood whose replies are never read
        async def flood() -> float:
            reader, writer = await asyncio.open_connection(host, port)
            await client_handshake(reader, writer, client_credentials(cluster_secret()))
            from streamer.rpc.codec import encode as rpc_encode
            from streamer.rpc.messages import Message

            frame = b"".join(
                rpc_encode(Message("job_status", i + 1, {"job_id": job_id}, wants_reply=True))
                for i in range(20_000)
            )
            writer.write(frame)
            await asyncio.sleep(2.0)  # let the coordinator chew on what it accepts
            t0 = time.monotonic()
            await asyncio.to_thread(CoordinatorClient(cluster.address).status, job_id)
            answered = time.monotonic() - t0
            writer.transport.abort()
            return answered

        answered = asyncio.run(flood())
        assert answered < 2.0  # another client is served while the flood sits blocked
        assert _rss_kib(pid) - rss0 < 60 * 1024  # not the 336 MB of before
        _still_healthy(cluster, job_id, before)
        log = (cluster.work_dir / "coordinator.log").read_text()
        assert log.count("Traceback") == 0
        assert len(log) < 200_000
    finally:
        feeder.stop()
