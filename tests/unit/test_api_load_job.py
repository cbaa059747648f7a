"""load_job: job modules by reference, and one-line JobLoadErrors.

A reference is untrusted (anyone who reaches a coordinator submits one): it loads
a Job, a StreamEnvironment or an @streamer.job function, and nothing else is
imported from the standard library or called. Sentinel files prove that refused
code did not run."""

from __future__ import annotations

import functools
import itertools
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import streamer
from streamer.api import Job, JobLoadError, StreamEnvironment, load_job, resolve_job
from streamer.api.loader import drop_working_directory_from_path
from streamer.errors import StreamerError
from streamer.graph import JobGraph

JOB_MODULE = """
import subprocess
import json
from os import system

import streamer
from streamer.api import StreamEnvironment


def amount(r):
    return r["amount"]


@streamer.job
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


@streamer.job
def make_job():
    return build_env().build()


class Holder:
    env = env
    make = make_job


not_a_job = 42


@streamer.job
def needs_key(params):
    return params["key"]


@streamer.job
def returns_int():
    return 1


@streamer.job
def raises():
    raise RuntimeError("boom")


@streamer.job
def invalid():
    bad = StreamEnvironment("bad")
    bad.from_kafka("x", parallelism=2).forward().map(amount, parallelism=3)
    return bad
"""

_counter = itertools.count()
DO = "mark the function with @streamer.job, or point at a Job or StreamEnvironment"


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


@pytest.mark.parametrize(
    "attr", ["env", "job", "make_job", "build_env", "Holder.env", "Holder.make"]
)
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
        ("not_a_job", f"job reference '{{ref}}' is not a streamer job (a value of type int): {DO}"),
        ("amount", f"job reference '{{ref}}' is not a streamer job (an unmarked function): {DO}"),
        ("Holder", f"job reference '{{ref}}' is not a streamer job (a class): {DO}"),
        ("json", f"job reference '{{ref}}' is not a streamer job (a module): {DO}"),
        (
            "json.loads",
            f"job reference '{{ref}}' is not a streamer job (an unmarked function): {DO}",
        ),
        ("system", f"job reference '{{ref}}' is not a streamer job (an unmarked function): {DO}"),
        ("returns_int", "'{ref}' returned int, expected a Job or a StreamEnvironment"),
        ("raises", "calling '{ref}' failed: RuntimeError: boom"),
        (
            "needs_key",  # one parameter: called with the job params ({}), so it fails inside
            "calling '{ref}' failed: KeyError: 'key'",
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


def test_resolve_job_accepts_jobs_environments_and_marked_functions_only() -> None:
    env = StreamEnvironment("inline")
    env.from_kafka("x").to_kafka("y")
    job = env.build()
    assert resolve_job(job) is job
    assert resolve_job(env).job_graph == job.job_graph
    assert resolve_job(streamer.job(lambda: env)).job_graph == job.job_graph
    with pytest.raises(JobLoadError) as info:
        resolve_job(lambda: env)
    assert str(info.value) == (
        f"job reference '<object>' is not a streamer job (an unmarked function): {DO}"
    )


# ------------------------------------------------------------ refused references
# Each refused reference would leave a file behind if its code ran: it must not.

SENTINEL_MODULE = """
import os
import subprocess
from pathlib import Path

import streamer
from streamer.api import StreamEnvironment

TARGET = Path({target!r})


def touch(params=None):
    TARGET.write_text("ran")
    env = StreamEnvironment("touched")
    env.from_kafka("x").to_kafka("y")
    return env


class Touching:
    @property
    def env(self):
        return touch()


touching = Touching()


class AnyAttribute:
    def __getattr__(self, name):
        touch()
        return True

    def __call__(self, *args):
        return touch()


anything = AnyAttribute()


@streamer.job
def marked():
    env = StreamEnvironment("marked")
    env.from_kafka("x").to_kafka("y")
    return env
"""


@pytest.fixture
def target(tmp_path: Path) -> Path:
    return tmp_path / "sentinel"


@pytest.fixture
def sentinel_module(make_module: Callable[[str], str], target: Path) -> str:
    return make_module(SENTINEL_MODULE.format(target=str(target)))


def _refused(ref: str, params: dict[str, str] | None = None) -> str:
    with pytest.raises(JobLoadError) as info:
        load_job(ref, params)
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("ref", ["subprocess:getoutput", "os:system", "os:abort"])
def test_standard_library_callables_are_refused_before_they_are_called(
    ref: str, target: Path
) -> None:
    module = ref.partition(":")[0]
    message = _refused(ref, {f"touch {target}": ""})  # what `--param "touch X="` sends
    assert message == (
        f"job reference '{ref}' is not a streamer job: '{module}' is a standard-library "
        "module; jobs live in your own modules (on PYTHONPATH or installed), marked with "
        "@streamer.job"
    )
    assert not target.exists()


def test_a_standard_library_module_is_not_even_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "this", raising=False)  # prints the Zen when imported
    message = _refused("this:s")
    assert message.startswith("job reference 'this:s' is not a streamer job: 'this' is a ")
    assert "this" not in sys.modules
    assert _refused("xml.dom.minidom:parseString").startswith(
        "job reference 'xml.dom.minidom:parseString' is not a streamer job: 'xml' is a "
    )


def test_a_dunder_module_is_refused_before_it_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: Path
) -> None:
    package = f"streamer_test_pkg_{os.getpid()}_{next(_counter)}"
    (tmp_path / package).mkdir()
    (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / package / "__main__.py").write_text(
        f"from pathlib import Path\nPath({str(target)!r}).write_text('ran')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _refused(f"{package}.__main__:x") == (
        f"job reference '{package}.__main__:x' is not a streamer job: '__main__' modules are "
        "not job modules; point at the module that defines the job"
    )
    assert not target.exists()
    assert f"{package}.__main__" not in sys.modules


@pytest.mark.parametrize(
    ("attr", "kind"),
    [
        ("touch", "an unmarked function"),
        ("subprocess.getoutput", "an unmarked function"),  # via a module the job module imports
        ("os.system", "an unmarked function"),
        ("Touching", "a class"),
        ("anything", "a value of type AnyAttribute"),  # __getattr__ and __call__ do not run
        ("touching.env", "a value of type property"),  # the property is not evaluated
    ],
)
def test_unmarked_code_in_a_job_module_is_refused_before_it_runs(
    sentinel_module: str, target: Path, attr: str, kind: str
) -> None:
    ref = f"{sentinel_module}:{attr}"
    message = _refused(ref, {f"touch {target}": ""})
    assert message == f"job reference '{ref}' is not a streamer job ({kind}): {DO}"
    assert not target.exists()


def test_walking_the_attribute_path_runs_no_code(sentinel_module: str, target: Path) -> None:
    assert _refused(f"{sentinel_module}:anything.env") == (
        f"job module '{sentinel_module}' has no attribute 'anything.env'"
    )
    assert not target.exists()


def test_a_module_getattr_is_not_consulted(make_module: Callable[[str], str], target: Path) -> None:
    name = make_module(
        "from pathlib import Path\n"
        "def __getattr__(attr):\n"
        f"    Path({str(target)!r}).write_text(attr)\n"
        "    raise AttributeError(attr)\n"
    )
    assert _refused(f"{name}:job") == f"job module '{name}' has no attribute 'job'"
    assert not target.exists()


def test_a_marked_function_in_the_same_module_loads(sentinel_module: str, target: Path) -> None:
    job = load_job(f"{sentinel_module}:marked")
    assert job.name == "marked"
    assert not target.exists()


def test_load_job_does_not_put_the_working_directory_on_the_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: Path
) -> None:
    name = f"streamer_test_cwdjob_{os.getpid()}_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(
        "import streamer\nfrom pathlib import Path\n"
        f"Path({str(target)!r}).write_text('imported')\n"
        "@streamer.job\ndef job():\n    raise RuntimeError('ran')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    before = list(sys.path)
    assert _refused(f"{name}:job") == (
        f"cannot import job module '{name}': ModuleNotFoundError: No module named '{name}'"
    )
    assert sys.path == before
    assert not target.exists()


def test_drop_working_directory_from_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cwd = os.getcwd()
    monkeypatch.setattr(sys, "path", [cwd, "/srv/jobs", "", cwd, "/lib"])
    drop_working_directory_from_path()
    # the first entry is `python -m`'s (under -P there is none: then it is an explicit
    # one and stays); the later cwd was given explicitly; '' always goes
    kept = [cwd] if sys.flags.safe_path else []
    assert sys.path == [*kept, "/srv/jobs", cwd, "/lib"]
    monkeypatch.setattr(sys, "path", ["/venv/bin", "/srv/jobs"])  # a console script
    drop_working_directory_from_path()
    assert sys.path == ["/venv/bin", "/srv/jobs"]


def test_a_task_process_does_not_preload_a_refused_module(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.runtime.task_process import _preload

    monkeypatch.delitem(sys.modules, "this", raising=False)
    _preload("this")
    assert "this" not in sys.modules
    assert capsys.readouterr().err.startswith(
        "preload of this failed: job module 'this' is not a streamer job: 'this' is a "
        "standard-library module"
    )


# ------------------------------------------------------------------- @streamer.job


def test_the_decorator_marks_and_returns_the_function() -> None:
    from streamer.api.job import is_job_function, job

    def build(params: dict[str, str]) -> StreamEnvironment:
        env = StreamEnvironment(params["name"])
        env.from_kafka("x").to_kafka("y")
        return env

    assert streamer.job is job
    assert not is_job_function(build)
    assert streamer.job(build) is build  # unchanged, still callable as before
    assert is_job_function(build)
    assert build({"name": "direct"}).build().name == "direct"
    assert resolve_job(build, params={"name": "loaded"}).name == "loaded"


class _Mark:
    def __getattr__(self, name: str) -> bool:
        return True


@pytest.mark.parametrize(
    "obj", [_Mark(), _Mark, print, len, Job, functools.partial(print), object()]
)
def test_only_marked_plain_functions_count_as_jobs(obj: object) -> None:
    from streamer.api.job import is_job_function

    assert not is_job_function(obj)


async def _coroutine() -> None:
    return None


def _two(a: object, b: object) -> None:
    return None


def _keyword_only(*, params: object) -> None:
    return None


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        (StreamEnvironment, "@streamer.job marks a function, got type"),
        (print, "@streamer.job marks a function, got builtin_function_or_method"),
        (functools.partial(_two, 1), "@streamer.job marks a function, got partial"),
        (_coroutine, "@streamer.job: _coroutine must be a plain function"),
        (_two, "@streamer.job: _two must take no argument or one (the job params)"),
        (
            _keyword_only,
            "@streamer.job: _keyword_only must take no argument or one (the job params)",
        ),
    ],
)
def test_the_decorator_refuses_what_cannot_be_a_job_function(obj: Any, message: str) -> None:
    with pytest.raises(TypeError) as info:
        streamer.job(obj)
    assert str(info.value) == message
