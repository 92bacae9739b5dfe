"""The volumes of a recovery session as NBD export backends (docs/CONTRACTS.md section 1), and their commit.

A ``SessionVolume`` is a point-in-time image of one volume (``vra_appliance.recover.PointInTimeImage``,
opened read-only: it pins the journal at the checkpoint) with a scratch overlay of its own in front:
the first write to a 64 KiB block copies the block into a sparse scratch file, and later reads of that
block come from there. The image, the journal and the replica volume are never written.

The scratch's blocks are exactly the allocated ranges of its file (a block is written whole, or not at
all), so what a session wrote survives in the file alone: ``apply_scratch`` copies those ranges into the
replica volume file at commit — only what the recovered VMs wrote, never the rest of the volume — and
can be done again after a crash (the same bytes land in the same places).

Every volume of a session draws on one ``ScratchBudget``: past its limit a write that needs new scratch
blocks fails with ENOSPC (the VM sees a full disk, the VRA and the ZVM go on) and the budget says it was
exceeded, which the ZVM turns into an alert and the end of the failover test.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

from vra_appliance.fileio import data_ranges, pread_exact, pwrite_all, write_zeroes

SCRATCH_BLOCK = 64 << 10


class ScratchBudget:
    """Scratch bytes a session may take, shared by its volumes (``limit`` 0: no limit)."""

    def __init__(self, limit: int = 0) -> None:
        self.limit = limit
        self.used = 0
        self.exceeded = False
        self._lock = threading.Lock()

    def take(self, n: int) -> bool:
        with self._lock:
            if self.limit and self.used + n > self.limit:
                self.exceeded = True
                return False
            self.used += n
            return True


def apply_scratch(scratch_path: str | os.PathLike, replica_path: str | os.PathLike, size: int,
                  piece: int = 1 << 20) -> int:
    """Copy the allocated ranges of a scratch file into the replica volume file at the same offsets, then
    fsync the replica. Returns the bytes copied. Idempotent."""
    copied = 0
    src = os.open(scratch_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        dst = os.open(replica_path, os.O_RDWR | os.O_CLOEXEC)
        try:
            for start, length in data_ranges(src, size):
                pos, end = start, start + length
                while pos < end:
                    n = min(piece, end - pos)
                    pwrite_all(dst, pread_exact(src, n, pos, pad=True), pos)
                    pos += n
                    copied += n
            os.fsync(dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return copied


class SessionVolume:
    """One volume of a recovery session: ``base`` (a read-only point-in-time image) under a scratch overlay
    kept in ``scratch_path``. An ExportBackend; errors are OSError with an errno."""

    def __init__(self, name: str, volume: str, base, scratch_path: str | os.PathLike, budget: ScratchBudget,
                 block_size: int = SCRATCH_BLOCK) -> None:
        self.name = name
        self.volume = volume
        self.size = base.size
        self.read_only = False
        self.scratch_path = Path(scratch_path)
        self.block_size = block_size
        self._base = base
        self._budget = budget
        self._fd = os.open(self.scratch_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(self._fd, self.size)
        self._present = bytearray((self.size + block_size - 1) // block_size)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def scratch_bytes(self) -> int:
        return sum(self._present) * self.block_size

    def _check(self, offset: int, length: int) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"export {self.name} is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OSError(errno.EINVAL, f"range {offset}+{length} outside {self.name} of {self.size} bytes")

    def pread(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        bs, end = self.block_size, offset + length
        parts, pos = [], offset
        with self._lock:  # a write may be copying a block into the scratch
            while pos < end:
                mine = self._present[pos // bs]
                run_end = min(end, (pos // bs + 1) * bs)
                while run_end < end and self._present[run_end // bs] == mine:
                    run_end = min(end, run_end + bs)
                n = run_end - pos
                parts.append(pread_exact(self._fd, n, pos, pad=True) if mine else self._base.pread(pos, n))
                pos = run_end
        return b"".join(parts)

    def pwrite(self, offset: int, data, fua: bool = False) -> None:
        self._check(offset, len(data))
        if not len(data):
            return
        bs, end = self.block_size, offset + len(data)
        first, last = offset // bs, (end - 1) // bs
        with self._lock:
            new = [b for b in range(first, last + 1) if not self._present[b]]
            if new and not self._budget.take(len(new) * bs):
                raise OSError(errno.ENOSPC, f"the scratch of {self.name} is at its limit "
                                            f"({self._budget.limit} bytes for the session)")
            for block in {first, last}:  # edge blocks written in part: copy them from the image first
                b_start, b_end = block * bs, min((block + 1) * bs, self.size)
                if not self._present[block] and (offset > b_start or end < b_end):
                    pwrite_all(self._fd, self._base.pread(b_start, b_end - b_start), b_start)
            pwrite_all(self._fd, data, offset)
            for block in new:
                self._present[block] = 1
        if fua:
            os.fsync(self._fd)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None:
        self._check(offset, length)
        write_zeroes(self.pwrite, offset, length)

    def trim(self, offset: int, length: int) -> None:
        # a trimmed range may read back as anything (NBD); keeping the old content is the safe choice
        self._check(offset, length)

    def flush(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"export {self.name} is closed")
        os.fsync(self._fd)

    def close(self, discard: bool = True) -> None:
        """Release the image (and its journal pin); ``discard`` also deletes the scratch file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            os.fsync(self._fd)
            os.close(self._fd)
            self._base.close()
        if discard:
            self.scratch_path.unlink(missing_ok=True)
