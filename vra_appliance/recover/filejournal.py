"""The file journal: segment files of CRC32C-protected records, one directory per VPG (docs/FORMAT.md).

Appends are batched into one ``pwritev`` and one ``fdatasync``; nothing is acknowledged before that.
Opening the journal verifies every segment, cuts a torn tail and rebuilds the in-memory index; a VPG
whose journal fails verification anywhere else is marked corrupt and raises JournalCorruptError.
File I/O on the append path goes through ``SegmentIO``, the seam tests use to inject ENOSPC or EIO.
"""

from __future__ import annotations

import errno
import os
import shutil
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from vra_appliance.errors import JournalClosedError, JournalCorruptError, JournalFullError, RecordFormatError
from vra_appliance.fileio import fsync_dir, pread_exact

from .format import decode_records, encode_record, encode_segment_start
from .journal import Entry, batch_vpg, new_records
from .records import CheckpointInfo, CheckpointRecord, Record, WriteRecord
from .segments import (
    NO_VOLUME,
    Segment,
    VolumeTable,
    open_vpg,
    segment_name,
    vpg_dirname,
    vpg_from_dirname,
    write_trim,
)

_IOV_MAX = min(os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024, 1024)
_READ_CHUNK = 4 << 20
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class SegmentIO:
    """The system calls of the append path; tests subclass it to inject faults."""

    def pwritev(self, fd: int, buffers: list[bytes], offset: int) -> int:
        return os.pwritev(fd, buffers, offset)

    def fdatasync(self, fd: int) -> None:
        os.fdatasync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        os.ftruncate(fd, length)


class _Vpg:
    def __init__(self, vpg: str, directory: Path, hard_limit: int | None) -> None:
        self.vpg = vpg
        self.directory = directory
        self.lock = threading.Lock()
        self.segments: list[Segment] = []
        self.checkpoints: list[CheckpointInfo] = []
        self.trimmed = 0
        self.last_seq = 0
        self.size = 0
        self.hard_limit = hard_limit
        self.fd: int | None = None  # write fd of the last segment
        self.read_fds: dict[int, int] = {}  # first_seq -> read fd
        self.corrupt: JournalCorruptError | None = None
        self.closed_reason: str | None = None

    def check(self) -> None:
        if self.corrupt is not None:
            raise self.corrupt

    def close_fds(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        for fd in self.read_fds.values():
            os.close(fd)
        self.read_fds.clear()


class FileJournal:
    """Journal and IndexedJournal over segment files under ``root``.

    ``segment_bytes``: a new segment starts once the current one reaches it (trim frees whole segments).
    ``hard_limit_bytes``: default per-VPG hard limit (``set_hard_limit`` per VPG); None: only the disk.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        segment_bytes: int = 64 << 20,
        hard_limit_bytes: int | None = None,
        io: SegmentIO | None = None,
    ) -> None:
        self.root = Path(root)
        self.segment_bytes = segment_bytes
        self._default_limit = hard_limit_bytes
        self._io = io or SegmentIO()
        self._volumes = VolumeTable()
        self._vpgs: dict[str, _Vpg] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.truncated: list[tuple[Path, int]] = []  # torn tails cut on open: (segment file, new length)
        self.root.mkdir(parents=True, exist_ok=True)
        for directory in sorted(self.root.iterdir()):
            vpg = vpg_from_dirname(directory.name)
            if vpg is not None and directory.is_dir():
                self._vpgs[vpg] = self._open(vpg, directory)

    def _open(self, vpg: str, directory: Path) -> _Vpg:
        st = _Vpg(vpg, directory, self._default_limit)
        found = open_vpg(vpg, directory, self._volumes)
        st.corrupt = found.corrupt
        st.segments, st.checkpoints, st.trimmed = found.segments, found.checkpoints, found.trimmed
        st.size = sum(s.size for s in st.segments)
        st.last_seq = max([st.trimmed] + [s.last_seq for s in st.segments])
        self.truncated += found.truncated
        return st

    def _state(self, vpg: str, create: bool = False) -> _Vpg | None:
        st = self._vpgs.get(vpg)
        if st is None and create:
            with self._lock:
                st = self._vpgs.get(vpg)
                if st is None:
                    directory = self.root / vpg_dirname(vpg)
                    directory.mkdir(exist_ok=True)
                    fsync_dir(self.root)
                    st = self._vpgs[vpg] = _Vpg(vpg, directory, self._default_limit)
        return st

    # -- Journal ---------------------------------------------------------------------------------------

    def append(self, records: Sequence[WriteRecord | CheckpointRecord]) -> int:
        vpg = batch_vpg(records)
        if self._closed:
            raise JournalClosedError("journal is closed")
        st = self._state(vpg, create=True)
        assert st is not None
        with st.lock:
            st.check()
            if st.closed_reason is not None:
                raise JournalClosedError(f"journal of VPG {vpg!r} takes no writes: {st.closed_reason}")
            fresh = new_records(vpg, st.last_seq, records)
            if fresh:
                self._append(st, fresh)
            return st.last_seq

    def _append(self, st: _Vpg, fresh: list[Record]) -> None:
        new_segment = not st.segments or st.segments[-1].size >= self.segment_bytes
        first = fresh[0].seq
        buffers: list[bytes] = [encode_segment_start(st.vpg, first, time.time_ns())] if new_segment else []
        base = len(buffers[0]) if new_segment else st.segments[-1].size
        # (offset, ts, volume id, volume offset, data offset, length) of each record, for the index
        index: list[tuple[int, int, int, int, int, int]] = []
        pos = base
        for i, record in enumerate(fresh):
            parts = encode_record(record, i)
            size = sum(len(p) for p in parts)
            if isinstance(record, WriteRecord):
                n = len(record.data)
                data_pos = pos + len(parts[0]) if n else pos
                index.append((pos, record.timestamp_ns, self._volumes.id(record.volume), record.offset,
                              data_pos, n))
            else:
                index.append((pos, record.timestamp_ns, NO_VOLUME, 0, 0, 0))
            buffers += parts
            pos += size
        needed = pos - (0 if new_segment else base)
        if st.hard_limit is not None and st.size + needed > st.hard_limit:
            raise JournalFullError(st.vpg, needed, max(0, st.hard_limit - st.size))
        segment = Segment(first, st.directory / segment_name(first)) if new_segment else st.segments[-1]
        if new_segment:
            fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        else:
            if st.fd is None:  # first append after open or after a trim of older segments
                st.fd = os.open(segment.path, os.O_WRONLY | os.O_CLOEXEC)
            fd = st.fd
        start = 0 if new_segment else base
        try:
            self._write(fd, buffers, start)
        except OSError as exc:
            self._undo(st, fd, segment, start, new_segment)
            if exc.errno in _FULL_ERRNOS:
                raise JournalFullError(st.vpg, needed, None, reason=os.strerror(exc.errno)) from exc
            st.closed_reason = f"write failed: {exc}"
            raise JournalClosedError(f"journal of VPG {st.vpg!r} stopped taking writes: {exc}") from exc
        try:
            self._io.fdatasync(fd)
            if new_segment:
                fsync_dir(st.directory)
        except OSError as exc:
            # After a failed fsync the page cache cannot be trusted: take no more writes until reopened.
            self._undo(st, fd, segment, start, new_segment)
            st.closed_reason = f"fsync failed: {exc}"
            raise JournalClosedError(f"journal of VPG {st.vpg!r} stopped taking writes: {exc}") from exc
        if new_segment:
            if st.fd is not None:
                os.close(st.fd)
            st.fd = fd
            st.segments.append(segment)
        for entry in index:
            segment.add(*entry)
        segment.size = pos
        st.size += needed
        st.last_seq = fresh[-1].seq
        st.checkpoints += [CheckpointInfo.from_record(r) for r in fresh if isinstance(r, CheckpointRecord)]

    def _write(self, fd: int, buffers: list[bytes], offset: int) -> None:
        i = 0
        while i < len(buffers):
            chunk = buffers[i : i + _IOV_MAX]
            want = sum(len(b) for b in chunk)
            done = self._io.pwritev(fd, chunk, offset)
            if done < want:  # short write: finish this chunk byte-wise, then go on
                rest = b"".join(chunk)[done:]
                while rest:
                    n = self._io.pwritev(fd, [rest], offset + want - len(rest))
                    if n <= 0:
                        raise OSError(errno.EIO, "short write")
                    rest = rest[n:]
            offset += want
            i += _IOV_MAX

    def _undo(self, st: _Vpg, fd: int, segment: Segment, length: int, new_segment: bool) -> None:
        """Cut a failed batch off so nothing of it is stored (a new segment file is removed)."""
        if new_segment:
            os.close(fd)
            segment.path.unlink(missing_ok=True)
            return
        try:
            self._io.ftruncate(fd, length)
            self._io.fdatasync(fd)
        except OSError as exc:
            st.closed_reason = f"could not cut a failed batch off: {exc}"

    def last_seq(self, vpg: str) -> int:
        st = self._state(vpg)
        if st is None:
            return 0
        st.check()
        return st.last_seq

    def checkpoints(self, vpg: str) -> list[CheckpointInfo]:
        st = self._state(vpg)
        if st is None:
            return []
        with st.lock:
            st.check()
            return list(st.checkpoints)

    def read(self, vpg: str, from_seq: int, to_seq: int | None = None) -> Iterator[Record]:
        st = self._state(vpg)
        if st is None:
            return iter(())
        with st.lock:
            st.check()
            hi = st.last_seq if to_seq is None else min(to_seq, st.last_seq)
            lo = max(from_seq, st.trimmed + 1)
            spans = [(s, max(lo, s.first_seq), min(hi, s.last_seq)) for s in st.segments]
            spans = [(s, a - s.first_seq, b - s.first_seq + 1) for s, a, b in spans if a <= b]
            spans = [(s, i0, i1, s.record_end(i1 - 1)) for s, i0, i1 in spans]
        return self._read_spans(st, spans)

    def _read_spans(self, st: _Vpg, spans: list[tuple[Segment, int, int, int]]) -> Iterator[Record]:
        for segment, i0, i1, end in spans:
            try:
                fd = os.open(segment.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # trimmed meanwhile
            try:
                i = i0
                while i < i1:
                    j = i + 1
                    while j < i1 and segment.offsets[j] - segment.offsets[i] < _READ_CHUNK:
                        j += 1
                    start = segment.offsets[i]
                    stop = segment.offsets[j] if j < i1 else end
                    buf = pread_exact(fd, stop - start, start)
                    try:
                        records = decode_records(buf, start, st.vpg)
                    except RecordFormatError as exc:
                        st.corrupt = JournalCorruptError(st.vpg, f"{segment.path}:{exc.offset}", exc.detail)
                        raise st.corrupt from exc
                    for k, record in enumerate(records):
                        if record.seq != segment.first_seq + i + k:
                            st.corrupt = JournalCorruptError(
                                st.vpg, str(segment.path), f"seq {record.seq} out of place")
                            raise st.corrupt
                    yield from records
                    i = j
            finally:
                os.close(fd)

    def trim(self, vpg: str, upto_seq: int) -> None:
        st = self._state(vpg)
        if st is None:
            return
        with st.lock:
            st.check()
            upto = min(upto_seq, st.last_seq)
            if upto > st.trimmed:
                write_trim(st.directory, upto)
                st.trimmed = upto
                st.checkpoints = [c for c in st.checkpoints if c.seq > upto]
            doomed = [s for s in st.segments if s.last_seq <= st.trimmed]
            if not doomed:
                return
            for segment in doomed:
                if segment is st.segments[-1] and st.fd is not None:
                    os.close(st.fd)
                    st.fd = None
                fd = st.read_fds.pop(segment.first_seq, None)
                if fd is not None:
                    os.close(fd)
                segment.path.unlink(missing_ok=True)
                st.size -= segment.size
            st.segments = st.segments[len(doomed) :]
            fsync_dir(st.directory)

    # -- IndexedJournal --------------------------------------------------------------------------------

    def entries(self, vpg: str, after_seq: int, upto_seq: int) -> Iterator[Entry]:
        st = self._state(vpg)
        if st is None:
            return
        with st.lock:
            st.check()
            lo = max(after_seq, st.trimmed) + 1
            hi = min(upto_seq, st.last_seq)
            spans = [(s, max(lo, s.first_seq) - s.first_seq, min(hi, s.last_seq) - s.first_seq + 1)
                     for s in st.segments]
        names = self._volumes.names
        for segment, i0, i1 in spans:
            first = segment.first_seq
            for i in range(i0, i1):  # arrays only grow, so indices read under the lock stay valid
                vid = segment.vol[i]
                if vid == NO_VOLUME:
                    yield Entry(first + i, segment.ts[i], None, 0, 0, None)
                else:
                    yield Entry(first + i, segment.ts[i], names[vid], segment.vol_off[i], segment.lens[i],
                                (first, segment.data_pos[i]))

    def read_data(self, vpg: str, loc: object, skip: int, length: int) -> bytes:
        st = self._state(vpg)
        assert st is not None and isinstance(loc, tuple)
        first_seq, data_pos = loc
        fd = st.read_fds.get(first_seq)
        if fd is None:
            with st.lock:
                fd = st.read_fds.get(first_seq)
                if fd is None:
                    fd = os.open(st.directory / segment_name(first_seq), os.O_RDONLY | os.O_CLOEXEC)
                    st.read_fds[first_seq] = fd
        data = pread_exact(fd, length, data_pos + skip)
        if len(data) != length:
            raise JournalCorruptError(vpg, f"{segment_name(first_seq)}:{data_pos + skip}",
                                      "write data shorter than its index entry")
        return data

    def first_seq(self, vpg: str) -> int:
        st = self._state(vpg)
        if st is None:
            return 1
        with st.lock:
            st.check()
            if not st.segments or st.segments[-1].last_seq <= st.trimmed:
                return st.last_seq + 1
            return max(st.trimmed + 1, st.segments[0].first_seq)

    def size_bytes(self, vpg: str) -> int:
        st = self._state(vpg)
        return st.size if st else 0

    def trim_point(self, vpg: str, free_bytes: int) -> int:
        st = self._state(vpg)
        if st is None:
            return 0
        with st.lock:
            freed = 0
            for segment in st.segments:
                freed += segment.size
                if freed >= free_bytes:
                    return max(segment.last_seq, st.trimmed)
            return st.last_seq

    def set_hard_limit(self, vpg: str, limit_bytes: int | None) -> None:
        st = self._state(vpg, create=True)
        assert st is not None
        st.hard_limit = limit_bytes

    def hard_limit(self, vpg: str) -> int | None:
        st = self._state(vpg)
        return st.hard_limit if st else self._default_limit

    # -- lifecycle -------------------------------------------------------------------------------------

    def vpgs(self) -> list[str]:
        return sorted(self._vpgs)

    def corruption(self, vpg: str) -> JournalCorruptError | None:
        st = self._state(vpg)
        return st.corrupt if st else None

    def discard(self, vpg: str) -> None:
        """Delete everything of the VPG (to resync it, or when the VPG is removed): it becomes empty."""
        st = self._state(vpg)
        if st is None:
            return
        with self._lock, st.lock:
            st.close_fds()
            shutil.rmtree(st.directory, ignore_errors=True)
            fsync_dir(self.root)
            del self._vpgs[vpg]

    def close(self) -> None:
        self._closed = True
        for st in list(self._vpgs.values()):
            with st.lock:
                st.close_fds()
