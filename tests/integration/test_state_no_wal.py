"""State is written without RocksDB's write-ahead log (`streamer.state.restore.no_wal`).
That is safe because recovery restores from checkpoints, never from a dead attempt's
live database: a writer SIGKILLed in the middle of writes restores exactly what its
last snapshot held, and a snapshot holds every write made before it, memtables
included (real RocksDB, a real process, a real SIGKILL)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from streamer.state import KeyedStateBackend

pytestmark = pytest.mark.timeout(60)

MAXP = 8
WRITER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path
    from streamer.state import KeyedStateBackend

    live, snap = Path(sys.argv[1]), Path(sys.argv[2])
    backend = KeyedStateBackend.open(live, max_parallelism=8, key_groups=range(8))
    counts = backend.value_state("count")
    entries = backend.map_state("entries")
    for i in range(20_000):  # small values: all of it stays in the memtable
        backend.set_current_key(f"k{i % 500}")
        counts.update(i)
        entries.put(i, {"i": i})
    meta = backend.snapshot(snap)
    print(json.dumps(meta), flush=True)
    i = 20_000
    while True:  # keeps writing until killed
        backend.set_current_key(f"k{i % 500}")
        counts.update(i)
        entries.put(i, {"i": i})
        i += 1
    """
)


def test_a_writer_killed_mid_write_restores_exactly_its_snapshot(tmp_path: Path) -> None:
    live, snap = tmp_path / "live", tmp_path / "snap"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(live), str(snap)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        meta = json.loads(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)  # in the middle of the writes after it
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # no write-ahead log was written
    logs = {p.name: p.stat().st_size for p in live.glob("*.log")}
    assert logs and all(size == 0 for size in logs.values()), logs

    restored = KeyedStateBackend.restore(
        tmp_path / "restored", [(snap, meta)], max_parallelism=MAXP, key_groups=range(MAXP)
    )
    try:
        counts = restored.value_state("count")
        entries = restored.map_state("entries")
        seen = 0
        for k in range(500):
            restored.set_current_key(f"k{k}")
            # the last write of key k before the snapshot: 19_500 + k
            assert counts.value() == 19_500 + k
            items = dict(entries.items())
            assert sorted(items) == list(range(k, 20_000, 500))
            assert all(v == {"i": i} for i, v in items.items())
            seen += len(items)
        assert seen == 20_000
    finally:
        restored.close()
