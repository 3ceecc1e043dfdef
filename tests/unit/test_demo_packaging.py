"""The demo data stays out of the Docker image without breaking what the image runs."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from cloudshelf import cli
from cloudshelf.devstack.stack import REPO_ROOT

DEMO = "services.catalog.demo"


def _top_level_imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_docker_context_leaves_the_demo_package_out() -> None:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    assert "services/catalog/demo" in lines
    assert (REPO_ROOT / "services/catalog/demo/__init__.py").exists()


def test_only_the_demo_package_imports_it_at_module_level() -> None:
    # What the image runs (services, runtime, CLI) must import without it.
    demo_dir = REPO_ROOT / "services/catalog/demo"
    offenders = [
        str(path.relative_to(REPO_ROOT))
        for root in ("cloudshelf", "services")
        for path in (REPO_ROOT / root).rglob("*.py")
        if demo_dir not in path.parents
        and any(name == DEMO or name.startswith(DEMO + ".") for name in _top_level_imports(path))
    ]
    assert offenders == []


def test_seed_without_the_demo_package_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, DEMO, None)  # as in the image: the import fails
    assert cli.seed(10) == 2
    assert "no demo data in this installation" in capsys.readouterr().err
