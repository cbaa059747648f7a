"""State roots: the directories checkpoints and savepoints may live in.

A coordinator writes checkpoints, writes savepoints and restores from them in
directories its clients name (``checkpoint_dir``, ``streamer savepoint --dir``,
``from_savepoint``). Each such path must lie under one of the coordinator's
state roots, so a client cannot make it write a job's state, or read a
savepoint, anywhere else on the host.

Where the roots come from, first match wins:

1. ``streamer coordinator --state-root DIR`` (repeatable), which sets
2. ``$STREAMER_STATE_ROOTS``: directories separated by ``os.pathsep`` (``:``);
3. ``$STREAMER_HOME/checkpoints`` (``~/.cache/streamer/checkpoints``).

`StateRoots.resolve` is the policy: a relative path is taken under the first
root; a path with a ``..`` component is refused; the path must lie under a
root both as written and after resolving symbolic links (`os.path.realpath`),
so a symlink inside a root cannot lead out of it. The local cluster adds its
own work directory as a root (`local_cluster_args`).

Frozen values and pure functions (the file system is only read, to resolve
links): safe from any thread. A path checked here may still be swapped for a
symlink later by someone who can write under the root: roots keep clients out,
not users of the host.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Final

from streamer.errors import ConfigError

__all__ = ["STATE_ROOTS_ENV", "StateRoots", "default_root", "local_cluster_args"]

STATE_ROOTS_ENV: Final = "STREAMER_STATE_ROOTS"


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """``$STREAMER_HOME/checkpoints`` (``~/.cache/streamer/checkpoints``)."""
    env = os.environ if environ is None else environ
    home = env.get("STREAMER_HOME")
    base = Path(home).expanduser() if home else Path.home() / ".cache" / "streamer"
    return base / "checkpoints"


def _under(path: PurePath, roots: Iterable[PurePath]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


@dataclass(frozen=True)
class StateRoots:
    """The directories state may live in: absolute, normalized, in order (the first is
    where relative paths and defaults go). Build with `of` or `from_env`."""

    roots: tuple[Path, ...]
    real: tuple[Path, ...]
    """The same directories with symbolic links resolved."""

    @classmethod
    def of(cls, paths: Iterable[str | os.PathLike[str]]) -> StateRoots:
        """Roots from ``paths`` (``~`` expanded; relative ones from the current directory)."""
        roots: list[Path] = []
        for raw in paths:
            text = os.fspath(raw)
            if not text or "\0" in text:
                raise ConfigError(f"bad state root {text!r}: give an absolute directory")
            root = Path(os.path.abspath(Path(text).expanduser()))
            if root not in roots:
                roots.append(root)
        if not roots:
            raise ConfigError(
                f"no state root given: pass --state-root DIR or set ${STATE_ROOTS_ENV}"
            )
        return cls(tuple(roots), tuple(Path(os.path.realpath(r)) for r in roots))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StateRoots:
        """``$STREAMER_STATE_ROOTS`` (``os.pathsep``-separated), else `default_root`."""
        env = os.environ if environ is None else environ
        listed = [p for p in env.get(STATE_ROOTS_ENV, "").split(os.pathsep) if p]
        return cls.of(listed or [default_root(env)])

    @property
    def primary(self) -> Path:
        """The first root: relative paths and defaults are taken under it."""
        return self.roots[0]

    def describe(self) -> str:
        """The roots as one string, for messages and logs."""
        return ", ".join(str(r) for r in self.roots)

    def relative(self, path: str | os.PathLike[str]) -> str:
        """``path`` (absolute, normalized) relative to the innermost root holding it, as
        written or once links are resolved: how a signed manifest names its directory
        (``"job-1a2b/chk-7"``). A path under no root stays absolute."""
        candidate = Path(os.path.normpath(os.path.abspath(path)))
        holding = [r for r in (*self.roots, *self.real) if _under(candidate, (r,))]
        if not holding:
            return candidate.as_posix()
        return candidate.relative_to(max(holding, key=lambda r: len(r.parts))).as_posix()

    def resolve(self, path: str | os.PathLike[str], what: str) -> Path:
        """``path`` (relative: under `primary`) as an absolute, normalized path under a root.

        `ConfigError` naming ``what`` (e.g. ``"checkpoint_dir"``), the path and the roots
        when it is empty, has a ``..`` component, or lies outside every root as written
        or once symbolic links are resolved. The path need not exist.
        """
        text = os.fspath(path) if isinstance(path, str | os.PathLike) else None
        if not text or "\0" in text:
            raise ConfigError(f"{what} {text!r} is not a path: give a directory under a state root")
        given = Path(text)
        if ".." in given.parts:
            raise ConfigError(
                f"{what} {text} contains '..': give a path under the state roots "
                f"({self.describe()}) without '..'"
            )
        candidate = Path(os.path.normpath(given if given.is_absolute() else self.primary / given))
        real = Path(os.path.realpath(candidate))
        if not _under(candidate, (*self.roots, *self.real)) or not _under(real, self.real):
            shown = text if real == candidate else f"{text} (resolves to {real})"
            raise ConfigError(
                f"{what} {shown} is outside the state roots ({self.describe()}): use a path "
                f"under one of them, or start the coordinator with --state-root "
                f"(${STATE_ROOTS_ENV})"
            )
        return candidate


def local_cluster_args(work_dir: str | os.PathLike[str], environ: Mapping[str, str]) -> list[str]:
    """The coordinator arguments of a local cluster: the roots of ``environ`` (see
    `StateRoots.from_env`), then the cluster's own ``work_dir``."""
    roots = StateRoots.from_env(environ)
    args: list[str] = []
    for root in (*roots.roots, Path(os.path.abspath(work_dir))):
        args += ["--state-root", str(root)]
    return args
