"""Tiny end-to-end runs of `streamer bench throughput`: well-formed JSON, never timings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamer.cli import build_parser

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]


def run(bootstrap: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    args = build_parser().parse_args(
        ["bench", "throughput", "--runs", "1", "--bootstrap-servers", bootstrap,
         "--json", str(out), *extra]
    )  # fmt: skip
    assert args.func(args) == 0
    data: dict[str, Any] = orjson.loads(out.read_bytes())
    assert data["machine"]["cores"] and data["settings"]["runs"] == 1
    return data


def test_ceiling_keyed_count_latency_and_breakdown(
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(REPO)
    data = run(
        kafka_bootstrap, tmp_path,
        "--only", "ceiling,count,latency,breakdown", "--records", "4000", "--window", "2",
        "--processes", "2", "--ceiling-variants", "tuned",
    )  # fmt: skip
    # one uncounted warm-up run of the job before the latency runs, not one per part
    printed = capsys.readouterr().out
    assert printed.count("warm-up: the keyed count at_least_once") == 1
    assert printed.index("warm-up") < printed.index("run 1 latency")
    summary, runs = data["summary"], data["runs"]
    (ceiling,) = runs["ceiling"]["runs"]
    assert ceiling["records"] == 4000 and ceiling["rate"] > 0
    assert summary["ceiling"]["ceiling"]["variant"] == "tuned/2"
    for delivery in ("at_least_once", "exactly_once"):
        (count,) = runs["count"][delivery]
        assert count["rate"] > 0 and count["tasks"] == 8
        assert count["cpu_per_record_us"] is None or count["cpu_per_record_us"] >= 0
        assert summary["count"][delivery]["share_of_ceiling"] > 0
        (latency,) = runs["latency"][delivery]
        assert latency["rate"] == pytest.approx(summary["count"][delivery]["rate"] / 2)
        assert latency["missing"] == 0 and latency["repeated"] == 0
        assert 0 < latency["p50_ms"] <= latency["p99_ms"]
        (traced,) = runs["breakdown"][delivery]
        stages = {s["stage"]: s for s in traced["breakdown"]["stages"]}
        assert traced["breakdown"]["traced"] > 0
        assert stages["operator + state"]["samples"] > 0
        assert stages["broker ingress"]["samples"] == stages["source fetch"]["samples"] > 0
        assert traced["breakdown"]["job"]["samples"] > 0
        assert traced["broker_alone"]["missing"] == 0 and traced["broker_alone"]["p50_ms"] > 0
        assert [s["stage"] for s in summary["breakdown"][delivery]["stages"]] == list(stages)
    shown = {t["target"]: t for t in summary["targets"]}
    assert shown["keyed count at-least-once CPU per record <= 8 us"]["met"] in (True, False)
    assert shown["order join max sustained >= 5x the Faust peer's"]["met"] is None


def test_join_rate_search_and_plot(
    kafka_bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    data = run(
        kafka_bootstrap, tmp_path,
        "--only", "join", "--join-rates", "40", "--window", "3", "--no-faust",
    )  # fmt: skip
    join = data["runs"]["join"]
    (point,) = join["points"]["streamer"]
    assert point["rate"] == 40 and point["expected"] > 0 and "error" not in point
    assert 0 < point["delivered"] <= 1
    assert set(point) >= {"p50_ms", "p99_ms", "backlog_growth_per_s", "sustained", "cpu_s"}
    assert "streamer" in data["summary"]["join"]
    if point["sustained"]:  # then it ran again at half that rate, and there is a plot
        assert join["half_load"]["streamer"][0]["rate"] == 20
        assert (tmp_path / "bench.png").stat().st_size > 1000
