"""load_job: job modules by reference, and one-line JobLoadErrors."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamer.api import Job, JobLoadError, StreamEnvironment, load_job, resolve_job
from streamer.errors import StreamerError
from streamer.graph import JobGraph

JOB_MODULE = """
from streamer.api import StreamEnvironment


def amount(r):
    return r["amount"]


def build_env():
    env = StreamEnvironment("payments", default_parallelism=2)
    pays = env.from_kafka("payments", name="read").key_by(lambda r: r["user"])
    users = env.from_kafka("users").key_by(lambda u: u["id"])
    pays.interval_join(users, lower_ms=-100, upper_ms=100, name="enrich").map(amount).to_kafka(
        "out"
    )
    return env


env = build_env()
job = env.build()


def make_job():
    return build_env().build()


class Holder:
    env = env


not_a_job = 42


def returns_int():
    return 1


def raises():
    raise RuntimeError("boom")


def invalid():
    bad = StreamEnvironment("bad")
    bad.from_kafka("x", parallelism=2).forward().map(amount, parallelism=3)
    return bad
"""

_counter = itertools.count()


@pytest.fixture
def make_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], str]]:
    """Write a module with a fresh name into a tmp dir on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))
    names: list[str] = []

    def make(source: str) -> str:
        name = f"streamer_test_jobmod_{os.getpid()}_{next(_counter)}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield make
    for name in names:
        sys.modules.pop(name, None)


@pytest.fixture
def job_module(make_module: Callable[[str], str]) -> str:
    return make_module(JOB_MODULE)


@pytest.mark.parametrize("attr", ["env", "job", "make_job", "build_env", "Holder.env"])
def test_every_kind_of_attribute_gives_the_same_job(job_module: str, attr: str) -> None:
    job = load_job(f"{job_module}:{attr}")
    assert isinstance(job, Job)
    reference = load_job(f"{job_module}:job")
    assert job.job_graph == reference.job_graph
    assert set(job.functions) == {"enrich/key0", "enrich/key1", "map-0"}
    assert [v.vertex_id for v in job.job_graph.vertices] == ["read", "kafka_source-1", "enrich"]
    assert job.functions["map-0"]({"amount": 3}) == 3
    assert job.functions["enrich/key1"]({"id": "u1"}) == "u1"


def test_the_same_job_in_other_processes(job_module: str, tmp_path: Path) -> None:
    ref = f"{job_module}:make_job"
    script = (
        "import sys; from streamer.api import load_job; "
        "job = load_job(sys.argv[1]); "
        "sys.stdout.write(job.job_graph.to_json().decode() + '\\n' "
        "+ ','.join(sorted(job.functions)))"
    )
    expected = load_job(ref)
    root = Path(__file__).resolve().parents[2]
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=f"{tmp_path}{os.pathsep}{root}")
        out = subprocess.run(
            [sys.executable, "-c", script, ref],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        graph_json, functions = out.stdout.split("\n")
        assert JobGraph.from_json(graph_json) == expected.job_graph
        assert graph_json.encode() == expected.job_graph.to_json()
        assert functions.split(",") == sorted(expected.functions)


@pytest.mark.parametrize(
    "ref",
    ["", "module", "module:", ":attr", "a:b:c", "pkg..mod:x", "pkg.mod:x y", "1mod:x", "mod:x."],
)
def test_bad_reference_format(ref: str) -> None:
    with pytest.raises(JobLoadError) as info:
        load_job(ref)
    assert str(info.value) == (
        f"bad job reference {ref!r}: expected 'package.module:attribute', e.g. 'my_jobs.orders:env'"
    )


def test_module_that_does_not_exist() -> None:
    with pytest.raises(JobLoadError) as info:
        load_job("no_such_streamer_job_module:env")
    assert str(info.value) == (
        "cannot import job module 'no_such_streamer_job_module': "
        "ModuleNotFoundError: No module named 'no_such_streamer_job_module'"
    )


def test_module_that_fails_to_import(make_module: Callable[[str], str]) -> None:
    name = make_module("import json\nraise ValueError('bad config\\nsecond line')\n")
    with pytest.raises(JobLoadError) as info:
        load_job(f"{name}:env")
    assert str(info.value) == (
        f"cannot import job module '{name}': ValueError: bad config second line"
    )
    assert isinstance(info.value.__cause__, ValueError)


def test_module_with_a_syntax_error(make_module: Callable[[str], str]) -> None:
    name = make_module("def broken(:\n    pass\n")
    with pytest.raises(JobLoadError) as info:
        load_job(f"{name}:env")
    assert str(info.value).startswith(f"cannot import job module '{name}': SyntaxError: ")
    assert "\n" not in str(info.value)


def test_missing_attribute(job_module: str) -> None:
    with pytest.raises(JobLoadError) as info:
        load_job(f"{job_module}:nope")
    assert str(info.value) == f"job module '{job_module}' has no attribute 'nope'"
    with pytest.raises(JobLoadError) as info:
        load_job(f"{job_module}:Holder.nope")
    assert str(info.value) == f"job module '{job_module}' has no attribute 'Holder.nope'"


@pytest.mark.parametrize(
    ("attr", "expected"),
    [
        (
            "not_a_job",
            "'{ref}' is a int, expected a Job, a StreamEnvironment or a callable returning one",
        ),
        ("returns_int", "'{ref}' returned int, expected a Job or a StreamEnvironment"),
        ("raises", "calling '{ref}' failed: RuntimeError: boom"),
        (
            "amount",  # one parameter: called with the job params ({}), so it fails inside
            "calling '{ref}' failed: KeyError: 'amount'",
        ),
        (
            "invalid",
            "job '{ref}' is invalid: forward edge kafka_source-0 -> map-0 needs equal "
            "parallelism, got 2 and 3; use rebalance() or set_parallelism()",
        ),
    ],
)
def test_wrong_types_and_failures(job_module: str, attr: str, expected: str) -> None:
    ref = f"{job_module}:{attr}"
    with pytest.raises(JobLoadError) as info:
        load_job(ref)
    assert str(info.value) == expected.format(ref=ref)


def test_errors_are_streamer_errors() -> None:
    assert issubclass(JobLoadError, StreamerError)


def test_resolve_job_accepts_objects() -> None:
    env = StreamEnvironment("inline")
    env.from_kafka("x").to_kafka("y")
    job = env.build()
    assert resolve_job(job) is job
    assert resolve_job(env).job_graph == job.job_graph
    assert resolve_job(lambda: env).job_graph == job.job_graph
