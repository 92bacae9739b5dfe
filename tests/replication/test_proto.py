"""The generated gRPC code committed next to the .proto files is what protoc gives today."""

from __future__ import annotations

from pathlib import Path

from vra_appliance.proto import generate


def test_regenerating_gives_the_committed_files(tmp_path: Path) -> None:
    produced = generate.generate(tmp_path)
    names = sorted(str(p.relative_to(tmp_path)) for p in produced)
    committed = sorted(str(p.relative_to(generate.ROOT)) for p in generate.PROTO_DIR.rglob("*_pb2*.py"))
    assert names == committed
    for path in produced:
        target = generate.ROOT / path.relative_to(tmp_path)
        assert path.read_bytes() == target.read_bytes(), f"{target} is stale: run python -m vra_appliance.proto.generate"


def test_messages_round_trip() -> None:
    from vra_appliance.proto.v1 import replication_pb2 as pb

    msg = pb.ProtectMessage(batch=pb.Batch(first_seq=3, last_seq=9, codec=pb.CODEC_ZSTD, crc32c=0xFFFFFFFF))
    back = pb.ProtectMessage.FromString(msg.SerializeToString())
    assert back.WhichOneof("kind") == "batch"
    assert back.batch.crc32c == 0xFFFFFFFF
