"""The committed stubs must be what `make protos` makes from protos/ now."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cloudshelf.codegen import PROTO_ROOT, REPO_ROOT, generate, generated_package_dirs


def test_generated_stubs_are_not_stale(tmp_path: Path) -> None:
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in generate(tmp_path)}
    committed = {
        p.relative_to(REPO_ROOT): p.read_bytes()
        for d in generated_package_dirs(REPO_ROOT)
        for p in d.glob("*_pb2*")
    }
    assert sorted(fresh) == sorted(committed), "stub files differ: run `make protos`"
    stale = [str(name) for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code, run `make protos`: {stale}"


def test_protos_pass_buf_lint() -> None:
    buf = shutil.which("buf") or str(Path(REPO_ROOT, ".venv/bin/buf"))
    result = subprocess.run([buf, "lint"], cwd=PROTO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
