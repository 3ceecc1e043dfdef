"""Generates the Python stubs (messages, gRPC, and their .pyi) from protos/.

`make protos` writes them into the repository; the test suite regenerates them into a
temporary folder and fails when the committed copies differ (stale stubs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc_tools

REPO_ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO_ROOT / "protos"
# grpc_tools ships the well-known types (timestamp, field_mask, ...).
WELL_KNOWN_PROTOS = Path(grpc_tools.__file__).parent / "_proto"


def proto_files() -> list[Path]:
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generated_package_dirs(out_dir: Path) -> list[Path]:
    """The folders of generated code under out_dir, one per proto package."""
    return sorted({(out_dir / p.relative_to(PROTO_ROOT)).parent for p in proto_files()})


def generate(out_dir: Path = REPO_ROOT) -> list[Path]:
    """Runs protoc for every proto file; returns the files written."""
    plugin_dir = Path(sys.executable).parent
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    for package_dir in generated_package_dirs(out_dir):
        if package_dir.exists():
            for old in package_dir.glob("*_pb2*"):
                old.unlink()
    out = str(out_dir)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{WELL_KNOWN_PROTOS}",
            f"--plugin=protoc-gen-mypy={plugin_dir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={plugin_dir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            f"--mypy_grpc_out={out}",
            *files,
        ],
        check=True,
        cwd=PROTO_ROOT,
    )
    written: list[Path] = []
    for package_dir in generated_package_dirs(out_dir):
        # Make every level a regular package so tools (setuptools, mypy) see it.
        level = package_dir
        while level != out_dir and level != out_dir.parent:
            init = level / "__init__.py"
            if not init.exists():
                init.touch()
            level = level.parent
        written.extend(sorted(package_dir.glob("*_pb2*")))
    return written


def main() -> None:
    for path in generate():
        print(path.relative_to(REPO_ROOT))


if __name__ == "__main__":
    main()
