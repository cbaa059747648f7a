"""A producer or consumer task process for the multi-process netlayer tests.

Run as ``python netlayer_node.py producer|consumer [options]``. It talks to the
test (playing the coordinator) with JSON lines: commands on stdin, events on
stdout. It exits when stdin closes, so a dying test never leaves it behind.

Every record carries a checksum (``c``: crc32 of the rest of the record), its
producer index ``p``, producer attempt ``a`` and per-producer number ``i``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import sys
import time
import zlib
from typing import Any

import orjson

from netlayer._keygroups import key_group
from netlayer.events import CheckpointBarrier
from netlayer.gate import ChannelInfo, InputGate, UnavailableEvent
from netlayer.partition import RecordWriter, ResultPartition, RetentionBudget
from netlayer.protocol.handshake import Credentials
from netlayer.transport import PartitionServer

MAX_PARALLELISM = 128
NODE_KEY = b"k" * 32  # every connection authenticates, as in a job
background: set[asyncio.Future[None]] = set()  # keeps the stdin reader task referenced


def pid_of(producer: int) -> str:
    return f"test/src#{producer}/e0"


def out(event: str, **fields: Any) -> None:
    sys.stdout.write(orjson.dumps({"event": event, **fields}).decode() + "\n")
    sys.stdout.flush()


def checksum(rec: dict[str, Any]) -> int:
    return zlib.crc32(
        orjson.dumps({k: v for k, v in rec.items() if k != "c"}, option=orjson.OPT_SORT_KEYS)
    )


def make_record(p: int, a: int, i: int, pad: str) -> dict[str, Any]:
    rec: dict[str, Any] = {"p": p, "a": a, "i": i, "pad": pad}
    rec["c"] = checksum(rec)
    return rec


def maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def commands(handler: Any) -> None:
    """Read JSON commands from stdin; exit the process when stdin closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        await handler(orjson.loads(line))
    os._exit(3)


# -- producer -------------------------------------------------------------------------------


async def producer(args: argparse.Namespace) -> None:
    part = ResultPartition(
        pid_of(args.index),
        args.consumers,
        args.attempt,
        buffer_timeout=args.buffer_timeout,
        queue_capacity=args.queue_capacity,
        retention=RetentionBudget(args.retention, spill_dir=args.spill_dir)
        if args.retention
        else None,
    )
    server = PartitionServer(auth_key=NODE_KEY)
    server.register(part)
    address = await server.start()
    writer = RecordWriter(part, "hash", max_parallelism=MAX_PARALLELISM)
    subs = part.subpartitions
    i = 0  # the next record's number
    go = asyncio.Event()
    finish = asyncio.Event()
    # Independent bookkeeping, per subpartition: records routed while it was available,
    # by consumer attempt, and records routed while it was unavailable.
    routed: list[dict[int, int]] = [{} for _ in subs]
    routed_down = [0] * len(subs)

    def stats() -> dict[str, Any]:
        return {
            "subs": [
                {
                    "available": sp.is_available,
                    "state": sp.state.name,
                    "consumer_attempt": sp.consumer_attempt,
                    "routed": {str(k): v for k, v in routed[sp.index].items()},
                    "routed_down": routed_down[sp.index],
                    **sp.snapshot().as_dict(),
                }
                for sp in subs
            ],
            "maxrss_kb": maxrss_kb(),
        }

    async def on_command(cmd: dict[str, Any]) -> None:
        if cmd["cmd"] == "go":
            go.set()
        elif cmd["cmd"] == "barrier":  # the records after it start at ``at``
            writer.broadcast_event(CheckpointBarrier(cmd["id"]))
            out("barrier", id=cmd["id"], at=i)
        elif cmd["cmd"] == "trim":  # checkpoint ``id`` completed
            part.trim_barrier_marks(cmd["id"])
            out("trimmed", id=cmd["id"])
        elif cmd["cmd"] == "finish":
            finish.set()
        elif cmd["cmd"] == "stats":
            out("stats", **stats())

    background.add(asyncio.ensure_future(commands(on_command)))
    out("listening", address=address, pid=os.getpid())
    await go.wait()
    rss_before = maxrss_kb()
    pad = "x" * args.pad
    if args.mode == "stall":
        for i in range(args.records):
            writer.emit(make_record(args.index, args.attempt, i, pad), key=i)
        big = make_record(args.index, args.attempt, args.records, "B" * args.big)
        writer.emit(big, key=args.records)  # its first buffers go out on the credit there is
        out("stalled", **stats())
        time.sleep(600)  # a stuck task: the loop never runs again (until SIGKILL)
    n = len(subs)
    per_tick = max(1, int(args.rate * 0.002))
    started = time.monotonic()
    while not finish.is_set() and (args.records < 0 or i < args.records):
        for _ in range(per_tick):
            sub = key_group(i, MAX_PARALLELISM) * n // MAX_PARALLELISM
            sp = subs[sub]
            if sp.is_available:
                routed[sub][sp.consumer_attempt] = routed[sub].get(sp.consumer_attempt, 0) + 1
            else:
                routed_down[sub] += 1
            wait = writer.emit(make_record(args.index, args.attempt, i, pad), key=i)
            i += 1
            if wait is not None:
                await wait
            if args.records >= 0 and i >= args.records:
                break
        due = started + i / args.rate if args.rate > 0 else 0
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    writer.finish()
    try:
        await asyncio.wait_for(part.wait_consumed(), 20)
    except TimeoutError:
        out("error", message="wait_consumed timed out", **stats())
    out("done", emitted=i, rss_before_kb=rss_before, **stats())
    part.close()
    await server.close()


# -- consumer -------------------------------------------------------------------------------


async def consumer(args: argparse.Namespace) -> None:
    infos = []
    for p, spec in enumerate(args.producers):
        host, port, attempt = spec.split(":")
        address = (host, int(port))
        infos.append(ChannelInfo(pid_of(p), args.index, address, int(attempt), args.replay_from))
    gate = InputGate(
        infos,
        args.attempt,
        credits_per_channel=args.credits,
        connect_timeout=10,
        credentials=Credentials(NODE_KEY, {"role": "test"}),
    )
    for ch in args.block:
        gate.block(ch)
    counts: dict[str, int] = {}
    # Per producer attempt: the first and last record number, and records out of sequence.
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    out_of_order: dict[str, int] = {}
    bad: list[Any] = []
    base = [0] * len(infos)  # frames received before the channel's current connection
    unavailable: list[int] = []

    def channel_stats() -> list[dict[str, Any]]:
        return [
            {
                "available": ch.is_available,
                "partial": ch.deserializer.has_partial,
                "queued": len(ch.queue),
                "update_pending": gate.channel_provider.pending(ch.index),
                "expected_seq": ch._expected_seq,
                "frames_since_connect": ch.metrics.buffers_in
                + ch.metrics.events_in
                - base[ch.index],
                **ch.snapshot().as_dict(),
            }
            for ch in gate.channels
        ]

    def on_done(index: int, error: Exception | None) -> None:
        out("ack", channel=index, error=None if error is None else str(error))

    async def on_command(cmd: dict[str, Any]) -> None:
        c = cmd["cmd"]
        if c == "stats":
            out(
                "stats",
                counts=counts,
                bad=len(bad),
                channels=channel_stats(),
                maxrss_kb=maxrss_kb(),
            )
        elif c == "block":
            gate.block(cmd["channel"])
        elif c == "unblock":
            gate.unblock(cmd["channel"])
        elif c == "update":
            gate.channel_provider.update_partition_info(
                cmd["channel"], (cmd["host"], cmd["port"]), cmd["attempt"], on_done
            )
            out(
                "update_requested",
                channel=cmd["channel"],
                pending=gate.channel_provider.pending(cmd["channel"]),
            )

    background.add(asyncio.ensure_future(commands(on_command)))
    await gate.start()
    out("started", pid=os.getpid())
    batches = 0
    while (batch := await gate.next_batch()) is not None:
        index, items = batch
        for x in items:
            if type(x) is dict:
                if x.get("c") != checksum(x):
                    bad.append(x)
                key = f"{x['p']}/{x['a']}"
                counts[key] = counts.get(key, 0) + 1
                if key in last and x["i"] != last[key] + 1:
                    out_of_order[key] = out_of_order.get(key, 0) + 1
                first.setdefault(key, x["i"])
                last[key] = x["i"]
            elif isinstance(x, UnavailableEvent):
                ch = gate.channels[index]
                base[index] = ch.metrics.buffers_in + ch.metrics.events_in
                unavailable.append(index)
                out(
                    "unavailable",
                    channel=index,
                    cleared=ch.metrics.records_cleared,
                    reason=x.reason,
                )
        batches += 1
        if args.slow:
            await asyncio.sleep(args.slow)
        elif batches % 16 == 0:
            await asyncio.sleep(0)
    out(
        "end",
        counts=counts,
        first=first,
        last=last,
        out_of_order=out_of_order,
        bad=len(bad),
        channels=channel_stats(),
        unavailable=unavailable,
        maxrss_kb=maxrss_kb(),
    )
    await gate.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["producer", "consumer"])
    ap.add_argument("--index", type=int, default=0)
    ap.add_argument("--attempt", type=int, default=0)
    # producer
    ap.add_argument("--consumers", type=int, default=1)
    ap.add_argument("--mode", choices=["stream", "stall"], default="stream")
    ap.add_argument("--rate", type=float, default=20000, help="records/s (0: unthrottled)")
    ap.add_argument("--records", type=int, default=-1, help="-1: until told to finish")
    ap.add_argument("--pad", type=int, default=40)
    ap.add_argument("--big", type=int, default=1_000_000, help="stall mode: spanning record size")
    ap.add_argument("--buffer-timeout", type=float, default=0.002)
    ap.add_argument("--queue-capacity", type=int, default=8)
    ap.add_argument("--retention", type=int, default=0, help="retention budget, bytes (0: off)")
    ap.add_argument("--spill-dir", default=None)
    # consumer
    ap.add_argument("--producers", nargs="*", default=[], help="host:port:attempt per channel")
    ap.add_argument("--credits", type=int, default=8)
    ap.add_argument("--block", type=int, nargs="*", default=[])
    ap.add_argument("--slow", type=float, default=0.0, help="seconds to sleep per batch")
    ap.add_argument("--replay-from", type=int, default=None, help="checkpoint to replay from")
    args = ap.parse_args()
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format=f"%(asctime)s {args.role}{args.index}/{args.attempt} %(message)s",
    )
    asyncio.run(producer(args) if args.role == "producer" else consumer(args))
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
