"""netlayer benchmark: throughput and latency of the data plane across processes.

Run::

    .venv/bin/python -m bench.netlayer_bench            # full run (~1 minute)
    .venv/bin/python -m bench.netlayer_bench --quick    # smaller, for a smoke check
    .venv/bin/python -m bench.netlayer_bench --tls      # every connection over mutual TLS

It prints, with ~100-byte dict records, over loopback TCP between OS processes:

- the in-process ceiling: ``orjson.loads(orjson.dumps(r))`` for the same records in one loop;
- records/s and MB/s for a 1->1 and a 4->4 hash exchange, and their ratio to the ceiling;
- p50/p99 record latency (emit to delivery) for 1->1 at 50% of the measured 1->1
  maximum rate, for two ``buffer_timeout`` values; and, for reference, at a low
  rate (``--low-rate``), where the flush timer rather than filling buffers
  decides the latency.

With one subpartition (1->1) the hash partitioner has nothing to choose, so no
key group is computed; the 4->4 figure includes key-group hashing of every key.

Every connection authenticates (the handshake of `netlayer.protocol.handshake`), as in
a job; with ``--tls`` it also runs over mutual TLS (`streamer.security.tls`, a throwaway
CA made with ``openssl``). Each figure is the median over ``--repeat`` runs. Not part
of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from ssl import SSLContext
from typing import Any

import orjson

from netlayer.gate import ChannelInfo, InputGate
from netlayer.partition import RecordWriter, ResultPartition
from netlayer.protocol.handshake import Credentials
from netlayer.transport import PartitionServer
from streamer.security.tls import TlsConfig, make_test_pki

MAX_PARALLELISM = 128
BENCH_KEY = b"k" * 32  # every connection authenticates, as in a job
HIST_BUCKETS = 100_000  # 10 us each: up to 1 s


def make_records(n: int = 1000) -> list[dict[str, Any]]:
    """~100-byte records (101 bytes of JSON each)."""
    return [
        {
            "id": 100000 + i,
            "key": f"user-{i:05d}",
            "ts": 1700000000.123 + i,
            "v": "x" * 30,
            "tags": ["a", "b"],
        }
        for i in range(n)
    ]


def ceiling(seconds: float = 1.0) -> float:
    """Records/s of orjson dumps+loads of the benchmark records in one loop."""
    recs = make_records()
    dumps, loads = orjson.dumps, orjson.loads
    n = 0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for r in recs:
            loads(dumps(r))
        n += len(recs)
    return n / (time.perf_counter() - t0)


# -- processes ---------------------------------------------------------------------------


def _pid(p: int) -> str:
    return f"bench/src#{p}/e0"


def producer_main(
    index: int,
    n_consumers: int,
    n_records: int,
    rate: float,
    buffer_timeout: float,
    ctl: Connection,
    tls: TlsConfig | None = None,
) -> None:
    ssl = tls.server_context() if tls is not None else None
    asyncio.run(_producer(index, n_consumers, n_records, rate, buffer_timeout, ctl, ssl))


async def _producer(
    index: int,
    n_consumers: int,
    n_records: int,
    rate: float,
    buffer_timeout: float,
    ctl: Connection,
    ssl: SSLContext | None,
) -> None:
    part = ResultPartition(_pid(index), n_consumers, buffer_timeout=buffer_timeout)
    server = PartitionServer(auth_key=BENCH_KEY, ssl=ssl)
    server.register(part)
    ctl.send(await server.start())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, ctl.recv)  # "go"
    writer = RecordWriter(part, "hash", max_parallelism=MAX_PARALLELISM)
    emit = writer.emit
    if rate <= 0:
        recs = make_records()
        keys = [r["key"] for r in recs]
        i = 0
        while i < n_records:
            for j in range(min(1000, n_records - i)):
                if (w := emit(recs[j], keys[j])) is not None:
                    await w
            i += 1000
    else:
        # Rate-limited: every tick emit what is due, each record stamped with its emit time
        # (same shape and size as `make_records`, with the float "ts" being the stamp).
        mono = time.monotonic
        keys = [r["key"] for r in make_records()]
        tags = ["a", "b"]
        pad = "x" * 30
        t0 = mono()
        sent = 0
        while sent < n_records:
            due = min(n_records, int((mono() - t0) * rate) + 1)
            while sent < due:
                key = keys[sent % 1000]
                rec = {"id": 100000 + sent, "key": key, "ts": mono(), "v": pad, "tags": tags}
                if (w := emit(rec, key)) is not None:
                    await w
                sent += 1
            await asyncio.sleep(0.0005)
    part.finish()
    await part.wait_consumed()
    ctl.send(part.metrics().as_dict())
    part.close()
    await server.close()


def consumer_main(
    index: int,
    addresses: list[tuple[str, int]],
    latency: bool,
    expected: int,
    ctl: Connection,
    tls: TlsConfig | None = None,
) -> None:
    ssl = tls.client_context() if tls is not None else None
    asyncio.run(_consumer(index, addresses, latency, expected, ctl, ssl))


async def _consumer(
    index: int,
    addresses: list[tuple[str, int]],
    latency: bool,
    expected: int,
    ctl: Connection,
    ssl: SSLContext | None,
) -> None:
    infos = [ChannelInfo(_pid(p), index, addr) for p, addr in enumerate(addresses)]
    creds = Credentials(BENCH_KEY, {"role": "bench"})
    gate = InputGate(infos, credentials=creds, ssl=ssl)
    await gate.start()
    ctl.send("ready")
    n = 0
    # A histogram of 10 us buckets: keeping millions of samples would itself disturb the
    # consumer (allocation, GC traversal of a huge list).
    hist = [0] * HIST_BUCKETS if latency else []
    top = HIST_BUCKETS - 1
    mono = time.monotonic
    first = 0.0
    while (batch := await gate.next_batch()) is not None:
        items = batch[1]
        if type(items[0]) is dict:
            if not first:
                first = mono()
            n += len(items)
            if latency:
                now = mono()
                for r in items:
                    b = int((now - r["ts"]) * 100_000)
                    hist[b if b < top else top] += 1
    end = mono()
    await gate.close()
    ctl.send({"n": n, "first": first, "end": end, "hist": hist})


def run_exchange(
    n_prod: int,
    n_cons: int,
    n_records: int,
    *,
    rate: float = 0.0,
    buffer_timeout: float = 0.005,
    tls: TlsConfig | None = None,
) -> dict[str, Any]:
    """One exchange run; returns records/s, MB/s and latency samples."""
    ctx = mp.get_context("spawn")
    procs: list[Any] = []
    pctl: list[Connection] = []
    cctl: list[Connection] = []
    try:
        for p in range(n_prod):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=producer_main, args=(p, n_cons, n_records, rate, buffer_timeout, child, tls)
            )
            proc.start()
            procs.append(proc)
            pctl.append(parent)
        addresses = [conn.recv() for conn in pctl]
        for c in range(n_cons):
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=consumer_main,
                args=(c, addresses, rate > 0, n_prod * n_records, child, tls),
            )
            proc.start()
            procs.append(proc)
            cctl.append(parent)
        for conn in cctl:
            assert conn.recv() == "ready"
        time.sleep(0.2)
        go = time.monotonic()
        for conn in pctl:
            conn.send("go")
        results = [conn.recv() for conn in cctl]
        pmetrics = [conn.recv() for conn in pctl]
        for proc in procs:
            proc.join(30)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    total = sum(r["n"] for r in results)
    assert total == n_prod * n_records, (total, n_prod * n_records)
    bytes_out = sum(m["bytes_out"] for m in pmetrics)
    elapsed = max(r["end"] for r in results) - go
    hist = [sum(col) for col in zip(*(r["hist"] for r in results), strict=True)]
    return {
        "records_per_s": total / elapsed,
        "mb_per_s": bytes_out / elapsed / 1e6,
        "hist": hist,
    }


def _pct(hist: list[int], q: float) -> float:
    """The ``q`` quantile (seconds) of a latency histogram of 10 us buckets."""
    total = sum(hist)
    if not total:
        return float("nan")
    rank, seen = q * total, 0
    for bucket, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return (bucket + 1) / 100_000
    return len(hist) / 100_000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--records", type=int, default=3_000_000, help="records per producer (1->1)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="fewer records and repeats")
    ap.add_argument("--timeouts", default="0.001,0.005", help="buffer_timeout values (s)")
    ap.add_argument("--low-rate", type=float, default=10_000, help="records/s; 0 to skip")
    ap.add_argument("--tls", action="store_true", help="every connection over mutual TLS")
    args = ap.parse_args(argv)
    tls = make_test_pki(Path(tempfile.mkdtemp(prefix="netlayer-bench-pki-"))) if args.tls else None
    if args.quick:
        args.records, args.repeat = 500_000, 1
    timeouts = [float(x) for x in args.timeouts.split(",")]

    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, orjson {orjson.__version__}")
    print("connections: authenticated" + (", mutual TLS" if tls else ", plaintext"))
    print(f"record: {len(orjson.dumps(make_records(1)[0]))} bytes of JSON (+4 length bytes)")
    ceil = statistics.median(ceiling() for _ in range(args.repeat))
    print(f"in-process ceiling (orjson dumps+loads): {ceil:,.0f} records/s")

    best_1 = 0.0
    for n_prod, n_cons, n_records in ((1, 1, args.records), (4, 4, args.records // 4)):
        runs = [run_exchange(n_prod, n_cons, n_records, tls=tls) for _ in range(args.repeat)]
        rps = statistics.median(r["records_per_s"] for r in runs)
        mbs = statistics.median(r["mb_per_s"] for r in runs)
        if n_prod == 1:
            best_1 = rps
        print(
            f"{n_prod}->{n_cons} hash exchange: {rps:,.0f} records/s, {mbs:.1f} MB/s, "
            f"{rps / ceil:.0%} of the ceiling  (runs: "
            + ", ".join(f"{r['records_per_s']:,.0f}" for r in runs)
            + ")"
        )

    rate = best_1 / 2
    for label, r, seconds in (("50% of max", rate, 3.0), ("low rate", args.low_rate, 2.0)):
        if r <= 0:
            continue
        for bt in timeouts:
            n = int(r * seconds)
            runs = [
                run_exchange(1, 1, n, rate=r, buffer_timeout=bt, tls=tls)
                for _ in range(args.repeat)
            ]
            p50 = statistics.median(_pct(x["hist"], 0.50) for x in runs) * 1e3
            p99 = statistics.median(_pct(x["hist"], 0.99) for x in runs) * 1e3
            got = statistics.median(x["records_per_s"] for x in runs)
            print(
                f"latency 1->1 at {r:,.0f} records/s ({label}; achieved {got:,.0f}), "
                f"buffer_timeout={bt * 1e3:g} ms: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
            )


if __name__ == "__main__":
    main()
