"""Point-in-time images: a volume at a checkpoint, as an NBD export backend (docs/CONTRACTS.md section 1).

Reads come from the journal where a write up to the checkpoint covers the bytes (the extent map built at
open), else from the replica volume. Nothing is copied at open. With a scratch overlay the image is
writable: the first write to a block copies the block into the scratch file, and reads of that block
come from there; the replica and the journal are never written. Errors are ``OSError`` with an errno,
as the NBD server expects.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from pathlib import Path

from vra_appliance.errors import ApplianceError
from vra_appliance.fileio import pread_exact, pwrite_all, write_zeroes

from .extents import ExtentMap
from .journal import IndexedJournal
from .replica import Replica

SCRATCH_BLOCK = 64 << 10


class ScratchOverlay:
    """Copy-on-write blocks in a sparse file; the map of blocks written lives in memory."""

    def __init__(self, path: str | os.PathLike[str], size: int, block_size: int = SCRATCH_BLOCK) -> None:
        self.path = Path(path)
        self.block_size = block_size
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        os.ftruncate(self.fd, size)
        self.present = bytearray((size + block_size - 1) // block_size)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self.path.unlink(missing_ok=True)


class PointInTimeImage:
    """``volume`` of a VPG at a checkpoint; an ExportBackend. Close it to release the journal pin."""

    def __init__(
        self,
        *,
        name: str,
        vpg: str,
        volume: str,
        size: int,
        checkpoint_seq: int,
        base_seq: int,
        extents: ExtentMap,
        journal: IndexedJournal,
        replica: Replica,
        scratch_path: str | os.PathLike[str] | None = None,
        on_close: Callable[[PointInTimeImage], None] | None = None,
    ) -> None:
        self.name = name
        self.vpg = vpg
        self.volume = volume
        self.size = size
        self.checkpoint_seq = checkpoint_seq
        self.base_seq = base_seq  # the replica's promoted seq when the image was opened
        self.extents = extents
        self._journal = journal
        self._replica = replica
        self._on_close = on_close
        self._scratch = ScratchOverlay(scratch_path, size) if scratch_path is not None else None
        self.read_only = self._scratch is None
        self._lock = threading.Lock()
        self._closed = False

    def extend(self, entries, upto_seq: int) -> None:
        """Move a read-only image forward to ``upto_seq``: ``entries`` are the journal's records in
        (checkpoint_seq, upto_seq], in seq order (``RecoveryVPG.advance_tip``; the caller holds the VPG's
        lock, so no promotion step runs meanwhile, and reads no range of the image during the call)."""
        if not self.read_only:
            raise ValueError(f"image {self.name} has a scratch overlay: it cannot move forward")
        with self._lock:
            for entry in entries:
                if entry.volume == self.volume:
                    self.extents.add(entry.offset, entry.length, entry.loc)
            self.checkpoint_seq = max(self.checkpoint_seq, upto_seq)

    # -- reads -----------------------------------------------------------------------------------------

    def _check(self, offset: int, length: int) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"image {self.name} is closed")
        if offset < 0 or length < 0 or offset + length > self.size:
            raise OSError(errno.EINVAL, f"range {offset}+{length} outside image {self.name} of {self.size} bytes")

    def _base(self, offset: int, length: int) -> bytes:
        """The image without the scratch: journal writes up to the checkpoint over the replica."""
        parts = []
        try:
            for piece in self.extents.lookup(offset, length):
                n = piece.end - piece.start
                if piece.loc is None:
                    parts.append(self._replica.pread(self.volume, piece.start, n))
                else:
                    parts.append(self._journal.read_data(self.vpg, piece.loc, piece.skip, n))
        except ApplianceError as exc:
            raise OSError(errno.EIO, f"image {self.name}: {exc}") from exc
        return b"".join(parts)

    def pread(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        scratch = self._scratch
        if scratch is None or not length:
            return self._base(offset, length)
        bs = scratch.block_size
        parts = []
        pos, end = offset, offset + length
        with self._lock:  # a concurrent write may be copying a block into the scratch
            while pos < end:
                in_scratch = scratch.present[pos // bs]
                run_end = min(end, (pos // bs + 1) * bs)
                while run_end < end and scratch.present[run_end // bs] == in_scratch:
                    run_end = min(end, run_end + bs)
                if in_scratch:
                    parts.append(pread_exact(scratch.fd, run_end - pos, pos))
                else:
                    parts.append(self._base(pos, run_end - pos))
                pos = run_end
        return b"".join(parts)

    # -- writes (scratch only) -------------------------------------------------------------------------

    def _writable(self) -> ScratchOverlay:
        if self._scratch is None:
            raise OSError(errno.EPERM, f"image {self.name} is read-only")
        return self._scratch

    def pwrite(self, offset: int, data: bytes, fua: bool = False) -> None:
        scratch = self._writable()
        self._check(offset, len(data))
        if not data:
            return
        bs = scratch.block_size
        end = offset + len(data)
        first, last = offset // bs, (end - 1) // bs
        with self._lock:
            for block in {first, last}:  # edge blocks written in part: copy them first
                b_start, b_end = block * bs, min((block + 1) * bs, self.size)
                if not scratch.present[block] and (offset > b_start or end < b_end):
                    pwrite_all(scratch.fd, self._base(b_start, b_end - b_start), b_start)
            pwrite_all(scratch.fd, data, offset)
            scratch.present[first : last + 1] = b"\x01" * (last - first + 1)
        if fua:
            os.fsync(scratch.fd)

    def write_zeroes(self, offset: int, length: int, may_trim: bool = False) -> None:
        self._writable()
        self._check(offset, length)
        write_zeroes(self.pwrite, offset, length)

    def trim(self, offset: int, length: int) -> None:
        # NBD lets a trimmed range read back as anything; keeping the old content is the safe choice
        self._writable()
        self._check(offset, length)

    def flush(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, f"image {self.name} is closed")
        if self._scratch is not None:
            os.fsync(self._scratch.fd)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._scratch is not None:
                self._scratch.close()
        if self._on_close is not None:
            self._on_close(self)
