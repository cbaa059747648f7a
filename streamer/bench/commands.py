"""``streamer bench``: the benchmark subcommands, each registered by its own module."""

from __future__ import annotations

from typing import Any


def add_parsers(sub: Any) -> None:
    from streamer.bench import failover, throughput

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench_command", required=True)
    failover.add_parser(bsub)
    throughput.add_parser(bsub)
