"""`load_job`: import a job by reference (``"package.module:attribute"``).

Job code is never pickled: every process (CLI, coordinator, task) imports the
job module and re-runs its builder, which must therefore be deterministic.
The module is imported with `importlib` (so it runs once per process; a
zero-argument callable runs on every call). Errors are `JobLoadError`s with a
one-line message.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from streamer.api.environment import StreamEnvironment
from streamer.api.job import Job
from streamer.errors import StreamerError
from streamer.graph import GraphError

__all__ = ["JobLoadError", "load_job", "resolve_job"]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_REF = re.compile(rf"^(?P<module>{_IDENT}(?:\.{_IDENT})*):(?P<attr>{_IDENT}(?:\.{_IDENT})*)$")


class JobLoadError(StreamerError):
    """A job reference cannot be resolved to a `Job`; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_job(ref: str, params: Mapping[str, Any] | None = None) -> Job:
    """The `Job` that ``ref`` (``"package.module:attr"``, attr may be dotted) names.

    The attribute may be a `Job`, a `StreamEnvironment` (built), or a callable
    returning either: called with no argument, or with ``params`` (the job's
    parameters, e.g. topic names given at submission) when it takes one.
    Raises `JobLoadError` for a bad reference, a module that fails to import,
    a missing attribute, a wrong type, a callable that raises, or a job that
    does not build. The current directory is put on ``sys.path`` first (as
    ``python -m`` does), so job modules next to the command import as there.
    """
    match = _REF.match(ref) if isinstance(ref, str) else None
    if match is None:
        raise JobLoadError(
            f"bad job reference {ref!r}: expected 'package.module:attribute', "
            "e.g. 'my_jobs.orders:env'"
        )
    module_name, attr = match["module"], match["attr"]
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise JobLoadError(f"cannot import job module '{module_name}': {_describe(exc)}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise JobLoadError(f"job module '{module_name}' has no attribute '{attr}'") from None
    return resolve_job(obj, ref, params)


def _takes_params(fn: Any) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    positional = [
        p
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    return len(positional) == 1


def resolve_job(obj: object, ref: str = "<job>", params: Mapping[str, Any] | None = None) -> Job:
    """Turn a `Job`, a `StreamEnvironment` or a callable returning one into a `Job`.

    A callable with one required positional parameter gets ``params`` (``{}`` if None).
    """
    if callable(obj) and not isinstance(obj, Job | StreamEnvironment):
        try:
            obj = obj(dict(params or {})) if _takes_params(obj) else obj()
        except GraphError as exc:
            raise JobLoadError(f"job '{ref}' is invalid: {exc}") from exc
        except Exception as exc:
            raise JobLoadError(f"calling '{ref}' failed: {_describe(exc)}") from exc
        if not isinstance(obj, Job | StreamEnvironment):
            raise JobLoadError(
                f"'{ref}' returned {type(obj).__name__}, expected a Job or a StreamEnvironment"
            )
    if isinstance(obj, StreamEnvironment):
        try:
            obj = obj.build()
        except GraphError as exc:
            raise JobLoadError(f"job '{ref}' is invalid: {exc}") from exc
    if not isinstance(obj, Job):
        raise JobLoadError(
            f"'{ref}' is a {type(obj).__name__}, expected a Job, a StreamEnvironment "
            "or a callable returning one"
        )
    return obj
