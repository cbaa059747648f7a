"""`load_job`: load a job by reference (``"package.module:attribute"``).

Job code is never pickled: every process (CLI, coordinator, task) imports the
job module and re-runs its builder, which must therefore be deterministic.
The module is imported with `importlib` (so it runs once per process; a job
function runs on every call). Errors are `JobLoadError`s with a one-line message.

A reference is untrusted input (whoever reaches a coordinator can submit one),
so it can only load a job, never run other code:

- a standard-library module (``sys.stdlib_module_names``: ``os``,
  ``subprocess``, ...) or a dunder module (``pkg.__main__``) is refused before
  it is imported;
- the module is found on ``sys.path`` as the process has it: job modules come
  from ``PYTHONPATH`` or an installed package. Nothing adds the working
  directory (`drop_working_directory_from_path` even removes the entry
  ``python -m`` puts there, in the coordinator, workers and task processes);
- the attribute path is walked with `inspect.getattr_static`: no property,
  descriptor or ``__getattr__`` runs;
- what it names must be a `Job`, a `StreamEnvironment`, or a function marked
  with ``@streamer.job``; anything else is refused before it is called.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Callable, Mapping
from functools import partial
from types import BuiltinFunctionType, FunctionType, MethodType, ModuleType
from typing import Any, cast

from streamer.api.environment import StreamEnvironment
from streamer.api.job import Job, is_job_function, takes_params
from streamer.errors import StreamerError
from streamer.graph import GraphError

__all__ = [
    "JobLoadError",
    "check_job_module",
    "drop_working_directory_from_path",
    "load_job",
    "resolve_job",
]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<attr>{_IDENT}(?:\.{_IDENT})*)$")
_MODULE = re.compile(rf"^{_IDENT}(?:\.{_IDENT})*$")
_WHAT_TO_DO = "mark the function with @streamer.job, or point at a Job or StreamEnvironment"


class JobLoadError(StreamerError):
    """A job reference cannot be resolved to a `Job`; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def check_job_module(module_name: str, ref: str | None = None) -> None:
    """Raise `JobLoadError` unless ``module_name`` may hold jobs; imports nothing.

    Refused: names that are not dotted identifiers, standard-library modules
    (by their top-level name) and dunder parts such as ``pkg.__main__``.
    """
    what = f"job reference '{ref}'" if ref is not None else f"job module '{module_name}'"
    if not isinstance(module_name, str) or not _MODULE.match(module_name):
        raise JobLoadError(f"bad job module name {module_name!r}")
    parts = module_name.split(".")
    if parts[0] in sys.stdlib_module_names:
        raise JobLoadError(
            f"{what} is not a streamer job: '{parts[0]}' is a standard-library module; "
            "jobs live in your own modules (on PYTHONPATH or installed), marked with "
            "@streamer.job"
        )
    dunder = next((p for p in parts if p.startswith("__") and p.endswith("__")), None)
    if dunder is not None:
        raise JobLoadError(
            f"{what} is not a streamer job: '{dunder}' modules are not job modules; "
            "point at the module that defines the job"
        )


def drop_working_directory_from_path() -> None:
    """Remove the working directory that ``python -m``/``-c`` put first on ``sys.path``
    (and any ``''`` entry, e.g. from an empty ``PYTHONPATH`` component).

    Called at the start of the coordinator, a worker and a task process: they load
    job modules by reference, which must come from ``PYTHONPATH`` or an installed
    package, not from whatever directory the process was started in. Entries
    given explicitly (``PYTHONPATH=/srv/jobs``) stay. A no-op for that first
    entry under ``python -P`` (it is not there) and for a console script (its
    first entry is the script's directory).
    """
    if not sys.flags.safe_path and sys.path and sys.path[0] == os.getcwd():
        del sys.path[0]
    sys.path[:] = [p for p in sys.path if p != ""]


def load_job(ref: str, params: Mapping[str, Any] | None = None) -> Job:
    """The `Job` that ``ref`` (``"package.module:attr"``, attr may be dotted) names.

    The attribute may be a `Job`, a `StreamEnvironment` (built), or a function
    marked with ``@streamer.job`` returning either: called with no argument,
    or with ``params`` (the job's parameters, e.g. topic names given at
    submission) when it takes one. See the module docstring for what is
    refused, and when. Raises `JobLoadError` for a bad or refused reference, a
    module that fails to import, a missing attribute, a wrong type, a job
    function that raises, or a job that does not build.
    """
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise JobLoadError(
            f"bad job reference {ref!r}: expected 'package.module:attribute', "
            "e.g. 'my_jobs.orders:env'"
        )
    module_name, attr = match["module"], match["attr"]
    check_job_module(module_name, ref)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise JobLoadError(f"cannot import job module '{module_name}': {_describe(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = inspect.getattr_static(obj, part)
        except AttributeError:
            raise JobLoadError(f"job module '{module_name}' has no attribute '{attr}'") from None
    return resolve_job(obj, ref, params)


def resolve_job(obj: object, ref: str = "<object>", params: Mapping[str, Any] | None = None) -> Job:
    """Turn a `Job`, a `StreamEnvironment` or an ``@streamer.job`` function into a `Job`.

    Anything else (an unmarked callable too) is refused before it is called. A job
    function with one required positional parameter gets ``params`` (``{}`` if None).
    Types are checked with ``type(obj)``, so no code of ``obj`` runs to check it.
    """
    if is_job_function(obj):
        fn = cast(Callable[..., object], obj)
        try:
            obj = fn(dict(params or {})) if takes_params(fn) else fn()
        except GraphError as exc:
            raise JobLoadError(f"job '{ref}' is invalid: {exc}") from exc
        except Exception as exc:
            raise JobLoadError(f"calling '{ref}' failed: {_describe(exc)}") from exc
        if not issubclass(type(obj), Job | StreamEnvironment):
            raise JobLoadError(
                f"'{ref}' returned {type(obj).__name__}, expected a Job or a StreamEnvironment"
            )
    elif not issubclass(type(obj), Job | StreamEnvironment):
        raise JobLoadError(
            f"job reference '{ref}' is not a streamer job ({_kind(obj)}): {_WHAT_TO_DO}"
        )
    built = cast(Job | StreamEnvironment, obj)
    if isinstance(built, Job):
        return built
    try:
        return built.build()
    except GraphError as exc:
        raise JobLoadError(f"job '{ref}' is invalid: {exc}") from exc


def _kind(obj: object) -> str:
    """What ``obj`` is, for an error message; looks at ``type(obj)`` only."""
    kind = type(obj)
    if issubclass(kind, FunctionType | BuiltinFunctionType | MethodType | partial):
        return "an unmarked function"
    if issubclass(kind, type):
        return "a class"
    if issubclass(kind, ModuleType):
        return "a module"
    return f"a value of type {kind.__name__}"
