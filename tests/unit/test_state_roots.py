"""StateRoots: checkpoint and savepoint paths stay under the coordinator's state roots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from streamer.errors import ConfigError
from streamer.state.roots import STATE_ROOTS_ENV, StateRoots, default_root, local_cluster_args


@pytest.fixture
def roots(tmp_path: Path) -> StateRoots:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    return StateRoots.of([tmp_path / "a", tmp_path / "b"])


def test_relative_paths_go_under_the_first_root(roots: StateRoots, tmp_path: Path) -> None:
    assert roots.primary == tmp_path / "a"
    assert roots.resolve("job-1", "checkpoint_dir") == tmp_path / "a" / "job-1"
    assert roots.resolve("sp/./x//y", "savepoint directory") == tmp_path / "a" / "sp" / "x" / "y"


def test_absolute_paths_under_any_root_are_kept(roots: StateRoots, tmp_path: Path) -> None:
    assert roots.resolve(str(tmp_path / "b" / "sp-1"), "from_savepoint") == tmp_path / "b" / "sp-1"
    assert roots.resolve(tmp_path / "a", "checkpoint_dir") == tmp_path / "a"  # a root itself


def test_a_path_outside_the_roots_is_refused_naming_it_and_the_roots(
    roots: StateRoots, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as err:
        roots.resolve("/etc/cron.d", "savepoint directory")
    assert str(err.value) == (
        f"savepoint directory /etc/cron.d is outside the state roots ({tmp_path / 'a'}, "
        f"{tmp_path / 'b'}): use a path under one of them, or start the coordinator with "
        f"--state-root (${STATE_ROOTS_ENV})"
    )
    with pytest.raises(ConfigError, match="outside the state roots"):
        roots.resolve(str(tmp_path / "ab"), "checkpoint_dir")  # a prefix of no root


@pytest.mark.parametrize("path", ["../x", "sp/../../x", "a/..", "/{tmp}/a/../b/c", "/{tmp}/a/.."])
def test_dot_dot_is_refused(roots: StateRoots, tmp_path: Path, path: str) -> None:
    given = path.replace("/{tmp}", str(tmp_path))
    with pytest.raises(ConfigError) as err:
        roots.resolve(given, "checkpoint_dir")
    assert str(err.value) == (
        f"checkpoint_dir {given} contains '..': give a path under the state roots "
        f"({tmp_path / 'a'}, {tmp_path / 'b'}) without '..'"
    )


def test_a_symlink_out_of_a_root_is_refused(roots: StateRoots, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "a" / "link").symlink_to(outside)
    with pytest.raises(ConfigError) as err:
        roots.resolve("link/sp-1", "savepoint directory")
    assert str(err.value).startswith(
        f"savepoint directory link/sp-1 (resolves to {outside / 'sp-1'}) is outside the state roots"
    )
    with pytest.raises(ConfigError, match="resolves to"):
        roots.resolve(str(tmp_path / "a" / "link"), "from_savepoint")


def test_a_symlink_to_another_root_and_a_symlinked_root_are_fine(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    (tmp_path / "other").mkdir()
    (real / "to-other").symlink_to(tmp_path / "other")
    roots = StateRoots.of([tmp_path / "via", tmp_path / "other"])
    assert roots.resolve("sp", "x") == tmp_path / "via" / "sp"
    assert roots.resolve(str(real / "sp"), "x") == real / "sp"  # the root's real path
    assert roots.resolve("to-other/sp", "x") == tmp_path / "via" / "to-other" / "sp"


@pytest.mark.parametrize("bad", ["", "a\0b"])
def test_empty_and_nul_paths_are_refused(roots: StateRoots, bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a path"):
        roots.resolve(bad, "from_savepoint")


def test_roots_from_the_environment(tmp_path: Path) -> None:
    env = {STATE_ROOTS_ENV: f"{tmp_path / 'x'}{os.pathsep}{os.pathsep}{tmp_path / 'y'}"}
    assert StateRoots.from_env(env).roots == (tmp_path / "x", tmp_path / "y")
    home = {"STREAMER_HOME": str(tmp_path / "home")}
    assert StateRoots.from_env(home).roots == (tmp_path / "home" / "checkpoints",)
    assert default_root(home) == tmp_path / "home" / "checkpoints"
    with pytest.raises(ConfigError, match="no state root given"):
        StateRoots.of([])


def test_a_local_cluster_adds_its_work_directory(tmp_path: Path) -> None:
    env = {STATE_ROOTS_ENV: str(tmp_path / "x")}
    assert local_cluster_args(tmp_path / "c", env) == [
        "--state-root", str(tmp_path / "x"), "--state-root", str(tmp_path / "c"),
    ]  # fmt: skip


def test_a_manifest_names_its_directory_relative_to_the_innermost_root(tmp_path: Path) -> None:
    (tmp_path / "a" / "inner").mkdir(parents=True)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    roots = StateRoots.of([tmp_path / "a", tmp_path / "a" / "inner", tmp_path / "link"])
    assert roots.relative(tmp_path / "a" / "job-1" / "chk-7") == "job-1/chk-7"
    assert roots.relative(tmp_path / "a" / "inner" / "sp" / "x") == "sp/x"  # not "inner/sp/x"
    assert roots.relative(tmp_path / "link" / "job-2") == "job-2"
    assert roots.relative(tmp_path / "real" / "job-2") == "job-2"  # the root's real path
    assert roots.relative(tmp_path / "elsewhere" / "sp") == f"{tmp_path}/elsewhere/sp"
