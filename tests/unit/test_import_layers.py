"""Layering (DESIGN.md §8): the runtime does not import the coordinator or the test
helpers, and the local cluster does not import the test helpers; function-local
imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

STREAMER = Path(__file__).resolve().parents[2] / "streamer"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-local imports included)."""
    package = list(path.relative_to(STREAMER.parent).with_suffix("").parts[:-1])
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("runtime", ("streamer.coordinator", "streamer.testing", "streamer.local")),
        ("local", ("streamer.testing",)),
    ],
)
def test_package_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    offending = {
        f"{path.relative_to(STREAMER.parent)}: {module}"
        for path in sorted((STREAMER / package).rglob("*.py"))
        for module in imported_modules(path)
        if any(module == f or module.startswith(f"{f}.") for f in forbidden)
    }
    assert not offending, sorted(offending)


def test_testing_cluster_still_exports_the_local_cluster() -> None:
    from streamer.local import cluster as local
    from streamer.testing import cluster as testing

    assert testing.LocalCluster is local.LocalCluster
    assert testing.all_running is local.all_running
