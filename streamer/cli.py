"""The ``streamer`` command. Each subcommand lives next to the code it drives."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.errors import StreamerError


def build_parser() -> argparse.ArgumentParser:
    from streamer.bench import commands as bench_commands
    from streamer.coordinator import commands as coordinator_commands
    from streamer.local import commands as local_commands
    from streamer.local import logs as logs_commands
    from streamer.localkafka import commands as kafka_commands

    parser = argparse.ArgumentParser(
        prog="streamer", description="Stream processing on Apache Kafka with single-task recovery"
    )
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    kafka_commands.add_parser(sub)
    local_commands.add_parsers(sub)
    coordinator_commands.add_parsers(sub)
    logs_commands.add_parsers(sub)
    bench_commands.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except StreamerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
