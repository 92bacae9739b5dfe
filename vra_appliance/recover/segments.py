"""One VPG's segment files on disk: the in-memory index of a segment, and recovery on open.

Recovery (docs/FORMAT.md section 4) verifies every segment, cuts a torn tail off the last one and
reports anything else as corruption; the index it rebuilds is what ``FileJournal`` serves from.
"""

from __future__ import annotations

import os
import struct
import threading
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import crc32c

from vra_appliance.errors import JournalCorruptError
from vra_appliance.fileio import fsync_dir, write_atomic

from .format import T_CHECKPOINT, Meta, scan_segment
from .records import CheckpointInfo

NO_VOLUME = 0xFFFFFFFF
SEGMENT_SUFFIX = ".seg"
TRIM_FILE = "trim"
TRIM_MAGIC = b"ZVRJTRM\x00"
_TRIM = struct.Struct("<8sQI")


def vpg_dirname(vpg: str) -> str:
    return "v_" + quote(vpg, safe="-_")


def vpg_from_dirname(name: str) -> str | None:
    return unquote(name[2:]) if name.startswith("v_") else None


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SEGMENT_SUFFIX}"


class VolumeTable:
    """Volume ids interned to small ints, so the index stores 4 bytes per record instead of a string."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()

    def id(self, name: str) -> int:
        vid = self._ids.get(name)
        if vid is None:
            with self._lock:
                vid = self._ids.get(name)
                if vid is None:
                    self.names.append(name)
                    vid = self._ids[name] = len(self.names) - 1
        return vid


class Segment:
    """The index of one segment file: per record its offsets, time and write extent, in ``array``s."""

    __slots__ = ("first_seq", "path", "size", "offsets", "data_pos", "ts", "vol", "vol_off", "lens")

    def __init__(self, first_seq: int, path: Path, size: int = 0) -> None:
        self.first_seq = first_seq
        self.path = path
        self.size = size  # bytes of the file that hold verified records (the file's length)
        self.offsets = array("Q")
        self.data_pos = array("Q")
        self.ts = array("Q")
        self.vol = array("I")
        self.vol_off = array("Q")
        self.lens = array("Q")

    @property
    def last_seq(self) -> int:
        return self.first_seq + len(self.offsets) - 1

    def add(self, offset: int, ts: int, vol: int, vol_off: int, data_pos: int, length: int) -> None:
        self.offsets.append(offset)
        self.ts.append(ts)
        self.vol.append(vol)
        self.vol_off.append(vol_off)
        self.data_pos.append(data_pos)
        self.lens.append(length)

    def record_end(self, i: int) -> int:
        return self.offsets[i + 1] if i + 1 < len(self.offsets) else self.size


@dataclass
class VpgFiles:
    """What opening a VPG directory found: its segments, checkpoints and trim watermark."""

    vpg: str
    directory: Path
    segments: list[Segment] = field(default_factory=list)
    checkpoints: list[CheckpointInfo] = field(default_factory=list)
    trimmed: int = 0
    corrupt: JournalCorruptError | None = None
    truncated: list[tuple[Path, int]] = field(default_factory=list)  # torn tails cut: (file, new length)


def read_trim(vpg: str, directory: Path) -> int:
    path = directory / TRIM_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    if len(raw) != _TRIM.size:
        raise JournalCorruptError(vpg, str(path), f"trim file has {len(raw)} bytes")
    magic, seq, crc = _TRIM.unpack(raw)
    if magic != TRIM_MAGIC or crc32c.crc32c(raw[:16]) != crc:
        raise JournalCorruptError(vpg, str(path), "trim file fails its magic or checksum")
    return seq


def write_trim(directory: Path, seq: int) -> None:
    head = struct.pack("<8sQ", TRIM_MAGIC, seq)
    write_atomic(directory / TRIM_FILE, head + struct.pack("<I", crc32c.crc32c(head)))


def open_vpg(vpg: str, directory: Path, volumes: VolumeTable) -> VpgFiles:
    """Verify a VPG's segments, finish an interrupted trim, cut a torn tail, rebuild the index."""
    files = VpgFiles(vpg, directory)
    try:
        files.trimmed = read_trim(vpg, directory)
        _open_segments(files, volumes)
    except JournalCorruptError as exc:
        files.corrupt = exc
        files.segments, files.checkpoints = [], []
    return files


def _segment_paths(directory: Path) -> list[tuple[int, Path]]:
    found = []
    for path in directory.iterdir():
        if path.suffix == SEGMENT_SUFFIX and path.stem.isdigit():
            found.append((int(path.stem), path))
    return sorted(found)


def _open_segments(files: VpgFiles, volumes: VolumeTable) -> None:
    vpg, trimmed = files.vpg, files.trimmed
    paths = _segment_paths(files.directory)
    # Segments wholly <= the watermark are left over from an interrupted trim: finish it.
    while len(paths) > 1 and paths[1][0] - 1 <= trimmed:
        paths.pop(0)[1].unlink()
    expected = None
    for i, (first_seq, path) in enumerate(paths):
        last = i == len(paths) - 1
        if expected is None:
            if first_seq > trimmed + 1:
                raise JournalCorruptError(vpg, str(path), f"segments before seq {first_seq} are missing")
        elif first_seq != expected:
            raise JournalCorruptError(vpg, str(path), f"starts at seq {first_seq}, expected {expected}")
        buf = path.read_bytes()
        scan = scan_segment(buf, first_seq)
        where = f"{path}:{scan.damage}"
        if scan.damage is not None and (not last or scan.later_batch):
            raise JournalCorruptError(vpg, where, scan.reason)
        if scan.vpg is not None and scan.vpg != vpg:
            raise JournalCorruptError(vpg, str(path), f"segment belongs to VPG {scan.vpg!r}")
        if scan.damage is not None and scan.vpg is None:
            path.unlink()  # the torn last segment holds not even its header
            fsync_dir(files.directory)
            break
        if scan.damage is not None or len(buf) != scan.valid_end:
            # a torn tail, or a tail torn inside the last record's padding (then the file is extended)
            _truncate(path, scan.valid_end)
            files.truncated.append((path, scan.valid_end))
        segment = Segment(first_seq, path, scan.valid_end)
        for meta in scan.records:
            _index(segment, meta, volumes, files)
        if segment.last_seq <= trimmed:
            path.unlink()  # wholly trimmed (an interrupted trim); last_seq then comes from the watermark
        else:
            files.segments.append(segment)
        expected = segment.last_seq + 1
    files.checkpoints = [c for c in files.checkpoints if c.seq > trimmed]


def _index(segment: Segment, meta: Meta, volumes: VolumeTable, files: VpgFiles) -> None:
    if meta.rtype == T_CHECKPOINT:
        assert meta.checkpoint is not None
        segment.add(meta.offset, meta.timestamp_ns, NO_VOLUME, 0, 0, 0)
        files.checkpoints.append(CheckpointInfo.from_record(meta.checkpoint))
    else:
        assert meta.volume is not None
        segment.add(meta.offset, meta.timestamp_ns, volumes.id(meta.volume), meta.vol_offset, meta.data_pos,
                    meta.data_len)


def _truncate(path: Path, length: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.ftruncate(fd, length)
        os.fsync(fd)
    finally:
        os.close(fd)
