"""The replication stream's records and batches, as both sides handle them (pure: no I/O).

records -> BatchPayload bytes (protobuf, vra_appliance/proto/v1/replication.proto) -> CRC32C -> zstd (or
none) -> Batch; and back, verified. docs/FORMAT.md, "Wire format (VRA to VRA)", describes the layout.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import crc32c
import zstandard

from vra_appliance.errors import PayloadError
from vra_appliance.proto.v1 import replication_pb2 as pb

CODEC_NONE = pb.CODEC_NONE
CODEC_ZSTD = pb.CODEC_ZSTD

@dataclass(frozen=True)
class StreamWrite:
    seq: int
    timestamp_ns: int
    volume: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class StreamMarker:
    seq: int
    timestamp_ns: int
    checkpoint_id: str
    tag: str = ""
    consistent: bool = True
    participants: tuple[str, ...] = ()


StreamRecord = StreamWrite | StreamMarker


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _signed(n: int) -> int:
    return n if n >= 0 else n + (1 << 64)  # int64 on the wire: two's complement, 10 bytes when negative


def encode_records(records: Iterable[StreamRecord]) -> bytes:
    """The BatchPayload message of ``records``, in protobuf's wire format.

    Written by hand because it is the protect side's hottest loop: protobuf's own serializer copies every
    write's data twice and costs about ten times more per MiB here. ``decode_records`` parses it with
    protobuf, and tests/replication check that both agree."""
    parts: list[bytes] = []
    append = parts.append
    for r in records:
        head = b"\x08" + _varint(r.seq) + b"\x10" + _varint(_signed(r.timestamp_ns))
        if isinstance(r, StreamWrite):
            vol = r.volume.encode()
            inner_head = b"\x0a" + _varint(len(vol)) + vol + b"\x10" + _varint(r.offset) + b"\x1a" + _varint(len(r.data))
            inner_len = len(inner_head) + len(r.data)
            rec_head = head + b"\x1a" + _varint(inner_len)
            append(b"\x0a" + _varint(len(rec_head) + inner_len) + rec_head + inner_head)
            append(r.data)
        else:
            marker = pb.CheckpointMarker(
                checkpoint_id=r.checkpoint_id, tag=r.tag, consistent=r.consistent, participants=r.participants
            ).SerializeToString()
            rec = head + b"\x22" + _varint(len(marker)) + marker
            append(b"\x0a" + _varint(len(rec)) + rec)
    return b"".join(parts)


def decode_records(payload: bytes) -> list[StreamRecord]:
    try:
        msg = pb.BatchPayload.FromString(payload)
    except Exception as exc:  # protobuf raises DecodeError (a bare Exception subclass)
        raise PayloadError(f"batch payload does not parse: {exc}") from exc
    out: list[StreamRecord] = []
    for rec in msg.records:
        kind = rec.WhichOneof("kind")
        if kind == "write":
            w = rec.write
            out.append(StreamWrite(rec.seq, rec.timestamp_ns, w.volume, w.offset, w.data))
        elif kind == "marker":
            m = rec.marker
            out.append(
                StreamMarker(rec.seq, rec.timestamp_ns, m.checkpoint_id, m.tag, m.consistent, tuple(m.participants))
            )
        else:
            raise PayloadError(f"record {rec.seq} has no write and no marker")
    return out


def compress(payload: bytes, codec: int, level: int = 1) -> bytes:
    if codec == CODEC_NONE:
        return payload
    return zstandard.ZstdCompressor(level=level).compress(payload)


def decompress(data: bytes, codec: int, size: int) -> bytes:
    if codec == CODEC_NONE:
        return data
    if codec != CODEC_ZSTD:
        raise PayloadError(f"unknown codec {codec}")
    try:
        out = zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    except zstandard.ZstdError as exc:
        raise PayloadError(f"batch payload does not decompress: {exc}") from exc
    if len(out) != size:
        raise PayloadError(f"batch payload is {len(out)} bytes, header says {size}")
    return out


def checksum(payload: bytes) -> int:
    return crc32c.crc32c(payload)


def verify(payload: bytes, expected: int) -> None:
    got = checksum(payload)
    if got != expected:
        raise PayloadError(f"CRC32C {got:#010x} != {expected:#010x}")


@dataclass
class Batch:
    """A sealed batch of one (VPG, protect VRA) stream, as sent; ``size`` counts uncompressed bytes."""

    vpg: str
    first_seq: int
    last_seq: int
    codec: int
    uncompressed_size: int
    crc32c: int
    payload: bytes
    oldest_timestamp_ns: int = 0
    write_extents: Sequence[tuple[str, int, int]] = ()  # (volume, offset, length), for the dirty fallback

    @property
    def wire_bytes(self) -> int:
        return len(self.payload)


def seal(
    vpg: str, records: Sequence[StreamRecord], *, codec: int = CODEC_ZSTD, level: int = 1
) -> Batch:
    """Serialize, checksum and compress contiguous records into a Batch."""
    raw = encode_records(records)
    payload = compress(raw, codec, level)
    writes = [r for r in records if isinstance(r, StreamWrite)]
    return Batch(
        vpg=vpg,
        first_seq=records[0].seq,
        last_seq=records[-1].seq,
        codec=codec,
        uncompressed_size=len(raw),
        crc32c=checksum(raw),
        payload=payload,
        oldest_timestamp_ns=min((r.timestamp_ns for r in records), default=0),
        write_extents=[(w.volume, w.offset, len(w.data)) for w in writes],
    )


def encode_batch_message(batch: Batch) -> bytes:
    """``ProtectMessage{batch: ...}`` in protobuf's wire format, written by hand for the same reason as
    ``encode_records`` (building a protobuf message around a large payload copies it slowly)."""
    body = (
        b"\x08" + _varint(batch.first_seq)
        + b"\x10" + _varint(batch.last_seq)
        + b"\x18" + _varint(batch.codec)
        + b"\x20" + _varint(batch.uncompressed_size)
        + b"\x2d" + struct.pack("<I", batch.crc32c)
        + b"\x32" + _varint(len(batch.payload))
    )
    return b"".join((b"\x12", _varint(len(body) + len(batch.payload)), body, batch.payload))


def open_batch(batch: Batch) -> list[StreamRecord]:
    """Decompress, verify and parse a batch; raises PayloadError on any mismatch."""
    raw = decompress(batch.payload, batch.codec, batch.uncompressed_size)
    verify(raw, batch.crc32c)
    records = decode_records(raw)
    if not records or records[0].seq != batch.first_seq or records[-1].seq != batch.last_seq:
        raise PayloadError(f"batch {batch.first_seq}..{batch.last_seq} does not hold those records")
    for a, b in zip(records, records[1:], strict=False):
        if b.seq != a.seq + 1:
            raise PayloadError(f"batch records {a.seq} and {b.seq} are not contiguous")
    return records
