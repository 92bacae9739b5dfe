"""Regenerate the Python code of the .proto files: ``python -m vra_appliance.proto.generate``.

The generated ``*_pb2.py`` and ``*_pb2_grpc.py`` are committed next to the .proto files (so
the appliance needs no protoc at run time); tests/replication/test_proto.py checks that regenerating them
gives the same bytes, so a .proto edited without regenerating fails the suite.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

PROTO_DIR = Path(__file__).resolve().parent
# Generated imports are relative to the repository root ("from vra_appliance.proto.v1 import ...").
ROOT = PROTO_DIR.parent.parent


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out_dir: Path) -> list[Path]:
    """Run protoc on every .proto file into ``out_dir`` (mirroring the repository layout); return the files."""
    import grpc_tools
    from grpc_tools import protoc

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    rel = [str(p.relative_to(ROOT)) for p in proto_files()]
    args = [
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *rel,
    ]
    rc = protoc.main(args)
    if rc != 0:
        raise RuntimeError(f"protoc failed with exit code {rc}")
    return sorted(p for p in out_dir.rglob("*_pb2*.py"))


def main(argv: list[str] | None = None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            target = ROOT / path.relative_to(tmp)
            shutil.copyfile(path, target)
            print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
