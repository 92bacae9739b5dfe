"""The journal's on-disk record format (docs/FORMAT.md): encoding, decoding and segment scanning.

Pure functions over bytes: no file I/O here, so the torn-tail and corruption rules are tested directly.
All integers are little-endian. A segment file is ``MAGIC`` followed by 8-byte aligned records; the
first record is the segment header.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import NamedTuple

import crc32c

from vra_appliance.errors import RecordFormatError

from .records import CheckpointRecord, Record, WriteRecord

MAGIC = b"ZVRJSEG\x00"
FORMAT_VERSION = 1
ALIGN = 8

# crc32c, body_len, type, flags, reserved, batch_index, seq, timestamp_ns
FRAME = struct.Struct("<IIBBHIQQ")
FRAME_SIZE = FRAME.size  # 32
_CRC = struct.Struct("<I")

T_SEGMENT = 1
T_WRITE = 2
T_CHECKPOINT = 3
_RECORD_TYPES = (T_WRITE, T_CHECKPOINT)

WRITE_HEAD = struct.Struct("<QH")  # volume offset, volume id length; then volume id, then data
CKPT_HEAD = struct.Struct("<BBHH")  # consistent, has_tag, id length, tag length; then id, then tag
SEG_HEAD = struct.Struct("<HHIQH")  # format version, reserved, reserved, first_seq, vpg length; then vpg

_PAD = bytes(ALIGN)




def align(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


def encoded_size(record: Record) -> int:
    """Bytes the record takes in a segment, padding included (also the in-memory journal's accounting)."""
    if isinstance(record, WriteRecord):
        body = WRITE_HEAD.size + len(record.volume.encode()) + len(record.data)
    else:
        body = CKPT_HEAD.size + len(record.checkpoint_id.encode()) + len((record.tag or "").encode())
    return align(FRAME_SIZE + body)


def _frame(
    rtype: int, body_prefix: bytes, data: bytes, batch_index: int, seq: int, ts: int
) -> list[bytes]:
    body_len = len(body_prefix) + len(data)
    head = FRAME.pack(0, body_len, rtype, 0, 0, batch_index, seq, ts) + body_prefix
    crc = crc32c.crc32c(data, crc32c.crc32c(memoryview(head)[4:]))
    parts = [_CRC.pack(crc) + head[4:]]
    if data:
        parts.append(data)
    pad = align(FRAME_SIZE + body_len) - FRAME_SIZE - body_len
    if pad:
        parts.append(_PAD[:pad])
    return parts


def encode_record(record: Record, batch_index: int) -> list[bytes]:
    """The record as buffers for one ``writev`` (the data is not copied). ``batch_index`` is its position
    in the append batch (seq minus the batch's first seq), which recovery uses to tell a torn tail from
    corruption."""
    if isinstance(record, WriteRecord):
        volume = record.volume.encode()
        prefix = WRITE_HEAD.pack(record.offset, len(volume)) + volume
        return _frame(T_WRITE, prefix, bytes(record.data), batch_index, record.seq, record.timestamp_ns)
    cid = record.checkpoint_id.encode()
    tag = (record.tag or "").encode()
    prefix = CKPT_HEAD.pack(1 if record.consistent else 0, 0 if record.tag is None else 1, len(cid), len(tag))
    return _frame(T_CHECKPOINT, prefix + cid + tag, b"", batch_index, record.seq, record.timestamp_ns)


def encode_segment_start(vpg: str, first_seq: int, created_ns: int) -> bytes:
    """MAGIC and the segment header record: the first bytes of every segment file."""
    name = vpg.encode()
    prefix = SEG_HEAD.pack(FORMAT_VERSION, 0, 0, first_seq, len(name)) + name
    return MAGIC + b"".join(_frame(T_SEGMENT, prefix, b"", 0, 0, created_ns))


class Meta(NamedTuple):
    """What a scan learns about one write or checkpoint record without keeping its data."""

    offset: int  # file offset of the record
    end: int  # file offset after the record and its padding
    rtype: int
    seq: int
    timestamp_ns: int
    volume: str | None  # write records
    vol_offset: int
    data_pos: int  # file offset of the write's data
    data_len: int
    checkpoint: CheckpointRecord | None  # checkpoint records


@dataclass
class SegmentScan:
    """Result of scanning one segment file's bytes.

    ``valid_end`` is the offset after the last record that verified and continued the seq chain. When
    ``damage`` is set, something at ``damage`` failed; ``later_batch`` tells whether a verified record of a
    later append batch follows it (then the damage is inside acknowledged data: corruption, not a torn
    tail, because a batch is only written after the previous one was fsynced).
    """

    vpg: str | None = None
    first_seq: int = 0
    header_end: int = 0
    records: list[Meta] = field(default_factory=list)
    valid_end: int = 0
    damage: int | None = None
    reason: str = ""
    later_batch: bool = False


def _check_frame(buf: bytes, pos: int) -> tuple[int, int, int, int, int, int] | str:
    """Verify the frame at pos: (type, body_len, batch_index, seq, ts, end) or the reason it is bad."""
    size = len(buf)
    if pos + FRAME_SIZE > size:
        return "short frame header"
    crc, body_len, rtype, flags, reserved, batch_index, seq, ts = FRAME.unpack_from(buf, pos)
    if rtype not in (T_SEGMENT, T_WRITE, T_CHECKPOINT) or flags or reserved:
        return f"bad record type/flags ({rtype}/{flags}/{reserved})"
    end = pos + FRAME_SIZE + body_len
    if end > size:
        return "record runs past end of file"
    if crc32c.crc32c(memoryview(buf)[pos + 4 : end]) != crc:
        return "checksum mismatch"
    return rtype, body_len, batch_index, seq, ts, align(end)


def _decode_meta(buf: bytes, pos: int, vpg: str, frame: tuple[int, int, int, int, int, int]) -> Meta | str:
    rtype, body_len, _, seq, ts, end = frame
    body = pos + FRAME_SIZE
    if rtype == T_WRITE:
        if body_len < WRITE_HEAD.size:
            return "write record too short"
        vol_offset, vlen = WRITE_HEAD.unpack_from(buf, body)
        data_pos = body + WRITE_HEAD.size + vlen
        data_len = body_len - WRITE_HEAD.size - vlen
        if data_len < 0:
            return "write record volume id overruns body"
        volume = bytes(buf[body + WRITE_HEAD.size : data_pos]).decode()
        return Meta(pos, end, rtype, seq, ts, volume, vol_offset, data_pos, data_len, None)
    if rtype == T_CHECKPOINT:
        if body_len < CKPT_HEAD.size:
            return "checkpoint record too short"
        consistent, has_tag, id_len, tag_len = CKPT_HEAD.unpack_from(buf, body)
        if CKPT_HEAD.size + id_len + tag_len != body_len:
            return "checkpoint record lengths disagree"
        p = body + CKPT_HEAD.size
        cid = bytes(buf[p : p + id_len]).decode()
        tag = bytes(buf[p + id_len : p + id_len + tag_len]).decode() if has_tag else None
        ckpt = CheckpointRecord(vpg, seq, ts, cid, tag, bool(consistent))
        return Meta(pos, end, rtype, seq, ts, None, 0, 0, 0, ckpt)
    return "segment header in the middle of a segment"


def scan_segment(buf: bytes, expected_first_seq: int) -> SegmentScan:
    """Scan a whole segment file's bytes: header, then records until the end or the first damage."""
    scan = SegmentScan(first_seq=expected_first_seq)
    if bytes(buf[: len(MAGIC)]) != MAGIC:
        scan.damage, scan.reason = 0, "bad or missing segment magic"
        return scan
    frame = _check_frame(buf, len(MAGIC))
    if isinstance(frame, str) or frame[0] != T_SEGMENT:
        scan.damage, scan.reason = len(MAGIC), f"bad segment header ({frame if isinstance(frame, str) else 'type'})"
        _look_for_later_batch(buf, scan, len(MAGIC), expected_first_seq - 1)
        return scan
    body = len(MAGIC) + FRAME_SIZE
    version, _, _, first_seq, vlen = SEG_HEAD.unpack_from(buf, body)
    if version != FORMAT_VERSION:
        scan.damage, scan.reason = len(MAGIC), f"unsupported format version {version}"
        scan.later_batch = True  # never truncate what we cannot read
        return scan
    if first_seq != expected_first_seq:
        scan.damage, scan.reason = len(MAGIC), f"header first_seq {first_seq} != file name {expected_first_seq}"
        scan.later_batch = True
        return scan
    scan.vpg = bytes(buf[body + SEG_HEAD.size : body + SEG_HEAD.size + vlen]).decode()
    scan.header_end = scan.valid_end = pos = frame[5]
    expected = first_seq
    size = len(buf)
    while pos < size:
        frame = _check_frame(buf, pos)
        if isinstance(frame, str):
            scan.damage, scan.reason = pos, frame
            break
        if frame[3] != expected:
            scan.damage, scan.reason = pos, f"seq {frame[3]} where {expected} was expected"
            scan.later_batch = True  # a verified record out of order is never a torn write
            return scan
        meta = _decode_meta(buf, pos, scan.vpg, frame)
        if isinstance(meta, str):
            scan.damage, scan.reason = pos, meta
            scan.later_batch = True
            return scan
        scan.records.append(meta)
        expected += 1
        scan.valid_end = pos = frame[5]
    if scan.damage is not None:
        _look_for_later_batch(buf, scan, scan.damage, expected - 1)
    return scan


def _look_for_later_batch(buf: bytes, scan: SegmentScan, damage: int, last_good_seq: int) -> None:
    """After damage at ``damage``, search the rest of the file for a verified record of a later batch.

    The damaged record has seq last_good_seq + 1, so its batch started at or before that seq; a verified
    record whose batch started after it proves the damaged batch had been acknowledged.
    """
    pos = align(damage + 1)
    size = len(buf)
    while pos + FRAME_SIZE <= size:
        frame = _check_frame(buf, pos)
        if isinstance(frame, str) or frame[0] not in _RECORD_TYPES:
            pos += ALIGN
            continue
        _, _, batch_index, seq, _, end = frame
        if seq - batch_index > last_good_seq + 1:
            scan.later_batch = True
            return
        pos = end


def decode_records(buf: bytes, base: int, vpg: str) -> list[Record]:
    """Decode and verify consecutive records filling ``buf`` (which starts at file offset ``base``)."""
    out: list[Record] = []
    pos = 0
    while pos < len(buf):
        frame = _check_frame(buf, pos)
        if isinstance(frame, str):
            raise RecordFormatError(base + pos, frame)
        meta = _decode_meta(buf, pos, vpg, frame)
        if isinstance(meta, str):
            raise RecordFormatError(base + pos, meta)
        if meta.checkpoint is not None:
            out.append(meta.checkpoint)
        else:
            data = bytes(buf[meta.data_pos : meta.data_pos + meta.data_len])
            out.append(WriteRecord(vpg, meta.seq, meta.timestamp_ns, meta.volume or "", meta.vol_offset, data))
        pos = meta.end
    return out
