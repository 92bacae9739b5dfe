"""Initial sync: copy a whole volume, skipping holes and all-zero blocks, with progress.

:class:`InitialSync` reads the volume in chunks (``chunk`` bytes) of its allocated ranges only (holes are
known zero on the replica, which starts empty) and drops every ``block``-sized block that is all zeros;
the remaining runs are yielded as :class:`Extent`\\ s in offset order. ``progress`` says how far the scan is,
in percent of the volume and in bytes scanned and sent.

A pre-seeded replica (restored from a backup) is not copied over: :func:`choose_initial` tells the caller
to run a delta sync instead. An interrupted initial sync leaves a partial copy, which is a pre-seed too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from vra_appliance.sync.state import SyncKind
from vra_appliance.sync.volume import Extent, VolumeReader, data_ranges, read

DEFAULT_CHUNK = 1024 * 1024
ZERO_BLOCK = 4096


@dataclass
class Progress:
    """How far a sync is: ``scanned_bytes`` of ``total_bytes`` looked at, ``sent_bytes`` yielded."""

    total_bytes: int
    scanned_bytes: int = 0
    sent_bytes: int = 0
    skipped_hole_bytes: int = 0
    skipped_zero_bytes: int = 0

    @property
    def percent(self) -> float:
        return 100.0 if not self.total_bytes else round(100.0 * self.scanned_bytes / self.total_bytes, 2)

    def as_dict(self) -> dict:
        return {"percent": self.percent, "total_bytes": self.total_bytes, "scanned_bytes": self.scanned_bytes,
                "sent_bytes": self.sent_bytes, "skipped_hole_bytes": self.skipped_hole_bytes,
                "skipped_zero_bytes": self.skipped_zero_bytes}


def nonzero_runs(buf: bytes, block: int = ZERO_BLOCK) -> list[tuple[int, int]]:
    """``(start, end)`` runs of ``buf`` made of blocks that are not all zero (the last block may be short)."""
    n = len(buf)
    if buf == bytes(n):
        return []
    zero = bytes(block)
    runs: list[tuple[int, int]] = []
    run_start = -1
    for i in range(0, n, block):
        j = min(i + block, n)
        # A block whose first byte is not zero is data; only then compare the whole block (memcmp).
        is_zero = not buf[i] and (buf[i:j] == zero if j - i == block else buf[i:j] == bytes(j - i))
        if is_zero:
            if run_start >= 0:
                runs.append((run_start, i))
                run_start = -1
        elif run_start < 0:
            run_start = i
    if run_start >= 0:
        runs.append((run_start, n))
    return runs


class InitialSync:
    """The protect side of one volume's initial sync: ``extents()`` yields what the replica needs.

    ``workers`` threads read and zero-check chunks ahead of the consumer (reads release the GIL), at most
    ``2 * workers`` chunks in flight; extents still come out in offset order.
    """

    def __init__(self, reader: VolumeReader, volume: str = "", *, chunk: int = DEFAULT_CHUNK,
                 zero_block: int = ZERO_BLOCK, start: int = 0, workers: int = 2) -> None:
        if chunk % zero_block:
            raise ValueError("chunk must be a multiple of zero_block")
        self.reader = reader
        self.volume = volume
        self.chunk = chunk
        self.zero_block = zero_block
        self.start = start
        self.workers = max(1, workers)
        self.progress = Progress(reader.size, scanned_bytes=start)

    def _chunks(self) -> Iterator[tuple[int, int, int]]:
        """``(offset, length, hole_bytes_before)`` of every chunk of allocated data, in order."""
        size = self.reader.size
        pos = covered = self.start
        while pos < size:
            # Look up allocation a few chunks at a time: SEEK_DATA is cheap but not free.
            span = min(size - pos, self.chunk * 64)
            for off, length in data_ranges(self.reader, pos, span):
                hole = off - covered
                end = off + length
                while off < end:
                    n = min(self.chunk, end - off)
                    yield off, n, hole
                    hole = 0
                    off += n
                covered = end
            pos += span
        if covered < size:
            yield size, 0, size - covered

    def _load(self, off: int, n: int) -> tuple[bytes, list[tuple[int, int]]]:
        if not n:
            return b"", []
        buf = read(self.reader, off, n, self.volume)
        return buf, nonzero_runs(buf, self.zero_block)

    def extents(self) -> Iterator[Extent]:
        with ThreadPoolExecutor(self.workers, thread_name_prefix=f"initial-{self.volume}") as pool:
            pending: deque = deque()
            chunks = self._chunks()
            try:
                for item in chunks:
                    pending.append((item, pool.submit(self._load, item[0], item[1])))
                    if len(pending) >= 2 * self.workers:
                        yield from self._emit(*pending.popleft())
                while pending:
                    yield from self._emit(*pending.popleft())
            finally:
                for _, fut in pending:
                    fut.cancel()

    def _emit(self, item: tuple[int, int, int], fut) -> Iterator[Extent]:
        off, n, hole = item
        prog = self.progress
        buf, runs = fut.result()
        prog.skipped_hole_bytes += hole
        prog.skipped_zero_bytes += n - sum(b - a for a, b in runs)
        prog.scanned_bytes = off + n
        for a, b in runs:
            prog.sent_bytes += b - a
            yield Extent(off + a, buf[a:b] if (a, b) != (0, n) else buf)


def choose_initial(replica_allocated_bytes: int, preseeded: bool = False) -> SyncKind:
    """Initial sync of a new volume: a full copy onto an empty replica, else a delta sync (pre-seed)."""
    return SyncKind.DELTA if preseeded or replica_allocated_bytes > 0 else SyncKind.INITIAL
