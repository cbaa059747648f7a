"""Single-task recovery across real OS processes, real TCP on 127.0.0.1 and real SIGKILL.

The test plays the coordinator: it starts producer and consumer task processes
(``netlayer_node.py``), kills one, starts its next attempt and sends the
UpdatePartitionInfo. Every process is killed by its pid in the fixture's
finalizer, whatever happens.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(60)

NODE = str(Path(__file__).with_name("netlayer_node.py"))


class Node:
    """A task process: JSON commands to its stdin, JSON events from its stdout."""

    def __init__(self, role: str, args: list[str], log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, NODE, role, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []  # every event, in order
        self.unclaimed: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def send(self, **cmd: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait_for(self, event: str, timeout: float = 15.0) -> dict[str, Any]:
        """The oldest not yet waited-for event named ``event``."""
        for i, ev in enumerate(self.unclaimed):
            if ev["event"] == event:
                return self.unclaimed.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {event!r} within {timeout}s; {self.tail()}")
            try:
                ev = self.events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self.proc.poll() is not None and self.events.empty():
                    raise AssertionError(
                        f"{self.name} exited ({self.proc.returncode}) waiting for {event!r}; "
                        f"{self.tail()}"
                    ) from None
                continue
            self.seen.append(ev)
            if ev["event"] == event:
                return ev
            self.unclaimed.append(ev)

    def stats(self) -> dict[str, Any]:
        self.send(cmd="stats")
        return self.wait_for("stats")

    def sigkill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def tail(self) -> str:
        self._log.flush()
        return f"log of {self.name}:\n" + self.log_path.read_text()[-3000:]


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    started: list[Node] = []

    def start(role: str, name: str, *args: Any) -> Node:
        node = Node(role, [str(a) for a in args], tmp_path, name)
        started.append(node)
        return node

    try:
        yield start
    finally:
        for node in started:
            node.stop()


def addr(listening: dict[str, Any], attempt: int = 0) -> str:
    host, port = listening["address"]
    return f"{host}:{port}:{attempt}"


def received(counts: dict[str, int], producer: int, attempt: int) -> int:
    return counts.get(f"{producer}/{attempt}", 0)


def test_sigkill_a_consumer_two_producers_by_two_consumers(nodes: Callable[..., Node]) -> None:
    rate = 20_000  # records/s per producer
    prods = [
        nodes("producer", f"P{p}", "--index", p, "--consumers", 2, "--rate", rate) for p in range(2)
    ]
    where = [addr(p.wait_for("listening")) for p in prods]
    cons = [nodes("consumer", f"C{c}", "--index", c, "--producers", *where) for c in range(2)]
    for c in cons:
        c.wait_for("started")
    for p in prods:
        p.send(cmd="go")
    time.sleep(0.4)
    assert all(received(c.stats()["counts"], 0, 0) > 1000 for c in cons)

    cons[1].sigkill()
    killed_at = time.monotonic()
    # Each producer notices on its own (the connection drops) and starts dropping.
    for p in prods:
        while p.stats()["subs"][1]["available"]:
            assert time.monotonic() - killed_at < 5, "producer never noticed the dead consumer"
            time.sleep(0.02)
    # The survivor keeps receiving, without a stall, while its peer is down.
    samples = []
    for _ in range(6):
        s = cons[0].stats()["counts"]
        samples.append(received(s, 0, 0) + received(s, 1, 0))
        time.sleep(0.1)
    steps = [b - a for a, b in itertools.pairwise(samples)]
    assert min(steps) > 0.3 * rate * 0.1, f"survivor stalled: {steps}"
    dropping = [p.stats()["subs"][1]["records_dropped"] for p in prods]
    assert all(d > 0 for d in dropping)

    # The next attempt of the killed consumer reconnects and gets fresh records.
    c1b = nodes("consumer", "C1b", "--index", 1, "--attempt", 1, "--producers", *where)
    c1b.wait_for("started")
    time.sleep(0.4)
    assert received(c1b.stats()["counts"], 0, 0) > 1000

    for p in prods:
        p.send(cmd="finish")
    done = [p.wait_for("done") for p in prods]
    end0, end1 = cons[0].wait_for("end"), c1b.wait_for("end")
    assert end0["bad"] == end1["bad"] == 0  # every record's checksum verified

    for index, d in enumerate(done):
        sub0, sub1 = d["subs"]
        # The survivor got every record routed to it, exactly once.
        assert sub0["routed_down"] == 0 and sub0["records_dropped"] == 0
        assert received(end0["counts"], index, 0) == sub0["routed"]["0"] == sub0["records_out"]
        # The dead consumer's records were dropped and counted: exactly those routed while down.
        assert sub1["records_dropped"] == sub1["routed_down"] > 0
        # The new attempt got exactly what was routed to it after it reconnected.
        assert received(end1["counts"], index, 0) == sub1["routed"]["1"] > 0
        assert sub1["consumer_attempt"] == 1 and sub1["resets"] == 1
        # Nothing else went anywhere: accepted = sent + discarded (nothing pending at the end).
        assert sub1["records_in"] == sub1["records_out"] + sub1["records_discarded"]
    # The new attempt's sequence numbers started over at 0 with no gap on every channel.
    for ch in end1["channels"]:
        assert (
            ch["expected_seq"] == ch["frames_since_connect"] == ch["buffers_in"] + ch["events_in"]
        )
        assert ch["buffers_in"] > 0 and ch["records_cleared"] == 0


@pytest.mark.parametrize("update", ["before_drain", "after_drain"])
def test_sigkill_a_producer_mid_spanning_record(nodes: Callable[..., Node], update: str) -> None:
    n_before = 200
    p0 = nodes("producer", "P0", "--index", 0, "--mode", "stall", "--records", n_before)
    p1 = nodes("producer", "P1", "--index", 1, "--rate", 10_000)
    where = [addr(p0.wait_for("listening")), addr(p1.wait_for("listening"))]
    block = ["--block", 0] if update == "before_drain" else []
    con = nodes("consumer", "C", "--producers", *where, *block)
    con.wait_for("started")
    p0.send(cmd="go")
    p1.send(cmd="go")
    stalled = p0.wait_for("stalled")["subs"][0]
    # P0 sent what credit allowed (8 buffers): the 200 records and the start of a 1 MB record.
    assert stalled["records_out"] == n_before and stalled["buffers_out"] == 8
    deadline = time.monotonic() + 10
    while True:
        ch0 = con.stats()["channels"][0]
        if update == "before_drain" and ch0["buffers_in"] == 8:
            assert ch0["queued"] == 8 and not ch0["partial"]  # received, not consumed
            break
        if update == "after_drain" and ch0["buffers_in"] == 8 and ch0["queued"] == 0:
            assert ch0["partial"]  # the spanning record is half-way through the deserializer
            break
        assert time.monotonic() < deadline, ch0
        time.sleep(0.02)

    p0.sigkill()
    # While P0 is down (and being redeployed) the consumer keeps consuming from P1.
    before = received(con.stats()["counts"], 1, 0)
    p0b = nodes("producer", "P0b", "--index", 0, "--attempt", 1, "--rate", 10_000)
    where0b = p0b.wait_for("listening")["address"]
    time.sleep(0.3)
    assert received(con.stats()["counts"], 1, 0) > before + 1000
    if update == "after_drain":
        con.wait_for("unavailable")  # the loss is noticed and processed at once
    con.send(cmd="update", channel=0, host=where0b[0], port=where0b[1], attempt=1)
    requested = con.wait_for("update_requested")
    if update == "before_drain":
        # The old attempt's data is still queued: the update waits for the UnavailableEvent.
        assert requested["pending"]
        time.sleep(0.3)
        assert not [e for e in con.seen if e["event"] == "ack"]
        assert received(con.stats()["counts"], 0, 0) == 0
        con.send(cmd="unblock", channel=0)
        assert con.wait_for("unavailable")["cleared"] == 1
    else:
        assert not requested["pending"]
    ack = con.wait_for("ack")
    assert ack == {"event": "ack", "channel": 0, "error": None}
    p0b.send(cmd="go")
    time.sleep(0.3)
    p0b.send(cmd="finish")
    p1.send(cmd="finish")
    done0b, done1 = p0b.wait_for("done"), p1.wait_for("done")
    end = con.wait_for("end")
    assert end["bad"] == 0  # no corrupted or partial record was ever delivered
    assert received(end["counts"], 0, 0) == n_before  # complete ones only: the 1 MB one is gone
    ch0 = end["channels"][0]
    assert ch0["records_cleared"] == 1 and ch0["updates_applied"] == 1
    assert received(end["counts"], 0, 1) == done0b["emitted"] == done0b["subs"][0]["records_out"]
    assert received(end["counts"], 1, 0) == done1["emitted"] == done1["subs"][0]["records_out"]
    # The new attempt's frames were numbered from 0 without a gap.
    assert ch0["expected_seq"] == ch0["frames_since_connect"] > 0


def test_slow_consumer_bounds_producer_memory(nodes: Callable[..., Node]) -> None:
    n, pad = 30_000, 1000  # ~31 MB of records
    prod = nodes("producer", "P", "--records", n, "--pad", pad, "--rate", 0, "--queue-capacity", 4)
    where = addr(prod.wait_for("listening"))
    con = nodes("consumer", "C", "--producers", where, "--credits", 4, "--slow", 0.002)
    con.wait_for("started")
    prod.send(cmd="go")
    done = prod.wait_for("done", timeout=40)
    end = con.wait_for("end", timeout=10)
    sub = done["subs"][0]
    assert received(end["counts"], 0, 0) == n == sub["records_out"] and end["bad"] == 0
    # Bounded queue: never more than its capacity plus the buffer a record spilled into.
    assert sub["max_buffers_queued"] <= 4 + 1
    assert sub["backpressure_time"] > 0.5  # the producer was throttled, not buffering
    growth_mb = (done["maxrss_kb"] - done["rss_before_kb"]) / 1024
    assert growth_mb < 10, f"producer grew by {growth_mb:.1f} MB while sending 31 MB"
    ch = end["channels"][0]
    assert ch["backpressure_time"] > 0.5 and ch["buffers_in"] == sub["buffers_out"]


def test_sigkill_a_consumer_lossless_replay_from_its_checkpoint(
    nodes: Callable[..., Node], tmp_path: Path
) -> None:
    rate = 20_000
    prod = nodes(
        "producer", "P", "--rate", rate, "--retention", 1 << 20, "--spill-dir", tmp_path / "spill"
    )
    where = addr(prod.wait_for("listening"))
    c0 = nodes("consumer", "C0", "--producers", where)
    c0.wait_for("started")
    prod.send(cmd="go")
    at: dict[int, int] = {}
    for checkpoint_id in (1, 2, 3):
        time.sleep(0.15)
        prod.send(cmd="barrier", id=checkpoint_id)
        at[checkpoint_id] = prod.wait_for("barrier")["at"]
    time.sleep(0.1)
    prod.send(cmd="trim", id=2)  # checkpoint 2 completed
    prod.wait_for("trimmed")
    assert received(c0.stats()["counts"], 0, 0) > at[3]  # it got past barrier 3

    c0.sigkill()
    killed_at = time.monotonic()
    while prod.stats()["subs"][0]["state"] != "RETAINING":
        assert time.monotonic() - killed_at < 5, "producer never noticed the dead consumer"
        time.sleep(0.02)
    time.sleep(0.5)  # ~10,000 records are routed to it while it is down
    sub = prod.stats()["subs"][0]
    assert sub["records_dropped"] == 0 and sub["bytes_spilled"] > 0  # past 1 MiB: on disk

    # Its next attempt restored checkpoint 2: the producer replays what followed barrier 2.
    c1 = nodes("consumer", "C1", "--attempt", 1, "--replay-from", 2, "--producers", where)
    c1.wait_for("started")
    # An attempt asking for checkpoint 1 (trimmed) is refused at once, without retries.
    c2 = nodes("consumer", "C2", "--attempt", 2, "--replay-from", 1, "--producers", where)
    c2.wait_for("started", timeout=5)
    refused = c2.wait_for("unavailable")
    assert "cannot replay from checkpoint 1" in refused["reason"]
    c2.stop()
    time.sleep(0.3)
    prod.send(cmd="finish")
    done = prod.wait_for("done")
    end = c1.wait_for("end")
    # Exactly the records after barrier 2, in order, then the live ones: none lost or twice.
    assert end["bad"] == 0 and end["out_of_order"] == {}
    assert end["first"]["0/0"] == at[2] and end["last"]["0/0"] == done["emitted"] - 1
    assert received(end["counts"], 0, 0) == done["emitted"] - at[2]
    sub = done["subs"][0]
    assert sub["records_lost"] == sub["records_dropped"] == sub["records_discarded"] == 0
    assert sub["records_replayed"] >= 10_000 and sub["consumer_attempt"] == 1
    ch = end["channels"][0]
    assert ch["expected_seq"] == ch["buffers_in"] + ch["events_in"] and ch["records_cleared"] == 0
