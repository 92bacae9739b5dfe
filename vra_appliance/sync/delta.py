"""Delta sync: compare block checksums of both sides, send only the blocks that differ.

The recovery side (:class:`ReplicaChecksums`, one per recovery VPG) answers the protect side's questions
about its volumes; the protect side (:class:`DeltaSync`, one per volume and sync) walks its volume window by
window::

    protect                                             recovery
    open(DeltaOpen)                              ->     checks volume, size, parameters
    group_digests(volume, first, n)              ->     hashes the window, keeps its leaves
                                                 <-     GroupDigests
    compare with its own window's group digests
    leaf_digests(LeafRequest(groups that differ)) ->
                                                 <-     LeafDigests (from the kept leaves)
    compare leaves; yield (offset, length) of the differing blocks, coalesced

Both sides hash at the same time: the protect side asks for the recovery side's next windows before it
hashes its own (``prefetch``), so with a remote peer the two machines work in parallel, and in one process
two threads do (hashlib releases the GIL). Nothing here knows the transport: :class:`ChecksumPeer` is the
seam; :class:`ReplicaChecksums` is also the in-process peer.

What the protect side yields are ranges, not data: the caller reads them when it sends them. Wired into
replication, the read and the enqueueing into the VPG's stream must happen under the stream's sequencer
lock, so that a write completed after the read is always sequenced after the resent block (see
docs/SYNC.md, "Writes during a sync").
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from vra_appliance.errors import (
    BlockSizeMismatchError,
    ChecksumListError,
    UnknownVolumeError,
    VolumeSizeError,
)
from vra_appliance.sync.checksums import (
    DIGEST_SIZE,
    DeltaParams,
    Hasher,
    block_ranges,
    differing,
    split_digests,
)
from vra_appliance.sync.messages import (
    DeltaOpen,
    GroupDigests,
    GroupRequest,
    LeafDigests,
    LeafRequest,
    encoded_size,
)
from vra_appliance.sync.volume import Extent, VolumeReader, data_ranges, read, read_error, read_ranges

DEFAULT_WINDOW = 32 * 1024 * 1024
RANGE_HEADER = 16  # offset and length of a resent range, as counted in DeltaStats.wire_bytes


def hash_range(reader: VolumeReader, hasher: Hasher, offset: int, length: int, volume: str = "") -> bytes:
    """Leaf digests of ``[offset, offset + length)`` (block aligned); blocks wholly in a hole are not read."""
    bs = hasher.params.block_size
    end = min(offset + length, reader.size)
    if end <= offset:
        return b""
    nblocks = -(-(end - offset) // bs)
    ranges = data_ranges(reader, offset, end - offset)
    if ranges == [(offset, end - offset)]:
        return hasher.leaves(_read_window(reader, offset, end - offset, volume))
    zero = hasher.zero_leaf()
    out = bytearray(zero * nblocks)
    last_len = end - offset - (nblocks - 1) * bs
    if last_len != bs:  # the volume's short last block
        out[-DIGEST_SIZE:] = hasher.zero_leaf(last_len)
    for start, rlen in _block_align(ranges, offset, end, bs):
        digests = hasher.leaves(_read_window(reader, start, rlen, volume))
        i = (start - offset) // bs * DIGEST_SIZE
        out[i:i + len(digests)] = digests
    return bytes(out)


_buffers = threading.local()


def _read_window(reader: VolumeReader, offset: int, length: int, volume: str):
    """The bytes of a range to hash: into this thread's reused buffer when the reader can (``pread_into``)."""
    into = getattr(reader, "pread_into", None)
    if into is None:
        return read(reader, offset, length, volume)
    buf = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < length:
        buf = _buffers.buf = bytearray(length)
    try:
        n = into(offset, memoryview(buf)[:length])
    except OSError as exc:
        raise read_error(volume, offset, length, exc) from exc
    if n is not None and n != length:  # (an NBD FileBackend's pread_into returns None: it fills or raises)
        return read(reader, offset, length, volume)  # short: let read() say what went wrong
    return memoryview(buf)[:length]


def _block_align(ranges, lo: int, hi: int, bs: int) -> list[tuple[int, int]]:
    """Widen data ranges to whole blocks (relative to ``lo``) and merge the ones that then touch."""
    out: list[list[int]] = []
    for start, length in ranges:
        s = lo + (start - lo) // bs * bs
        e = min(hi, lo + -(-(start + length - lo) // bs) * bs)
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e - s) for s, e in out]


class ChecksumPeer(Protocol):
    """The recovery side as the protect side sees it during a delta sync.

    ``open`` is called once per volume and sync, before the others; it raises UnknownVolumeError,
    VolumeSizeError or SyncParamsError. ``group_digests`` and ``leaf_digests`` may be called from another
    thread than ``open`` (one call at a time per volume). ``close`` forgets the volume's kept leaves; it is
    idempotent. Transport errors are raised as sync TransientError.
    """

    def open(self, request: DeltaOpen) -> None: ...

    def group_digests(self, volume: str, first_group: int, count: int) -> GroupDigests: ...

    def leaf_digests(self, request: LeafRequest) -> LeafDigests: ...

    def close(self, volume: str) -> None: ...


@dataclass
class _Open:
    request: DeltaOpen
    hasher: Hasher
    reader: VolumeReader
    kept: OrderedDict = field(default_factory=OrderedDict)  # first_group -> leaves of those groups
    kept_bytes: int = 0


class ReplicaChecksums:
    """The recovery side of delta syncs for one VPG's volumes (implements ChecksumPeer in process).

    ``volumes`` maps a volume id to a reader of the volume's current state on the recovery side: the
    replica with every journaled write applied (a point-in-time image at the journal's tip), or the
    replica volume itself when the journal is empty. Leaves of recent windows are kept (``keep_bytes``) for
    the leaf requests that follow; an older window's groups are re-read and re-hashed when asked.
    """

    def __init__(self, volumes: Mapping[str, VolumeReader], *, keep_bytes: int = 64 * 1024 * 1024) -> None:
        self.volumes = volumes
        self.keep_bytes = keep_bytes
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()
        self.rehashed_groups = 0

    def _reader(self, volume: str) -> VolumeReader:
        reader = self.volumes.get(volume)
        if reader is None:
            raise UnknownVolumeError(volume, list(self.volumes), side="recovery")
        return reader

    def _session(self, volume: str) -> _Open:
        with self._lock:
            s = self._open.get(volume)
        if s is None:
            self._reader(volume)  # unknown volume: say so first
            raise ChecksumListError(volume, "checksums were asked before the delta sync was opened (open first)")
        return s

    def open(self, request: DeltaOpen) -> None:
        reader = self._reader(request.volume)
        if reader.size != request.size:
            raise VolumeSizeError(request.volume, request.size, reader.size)
        with self._lock:
            self._open[request.volume] = _Open(request, Hasher(request.params), reader)

    def group_digests(self, volume: str, first_group: int, count: int) -> GroupDigests:
        s = self._session(volume)
        p = s.request.params
        groups = p.groups(s.request.size)
        if first_group < 0 or count < 0 or first_group + count > groups:
            raise ChecksumListError(volume, f"groups {first_group}..{first_group + count} asked, volume has {groups}")
        leaves = hash_range(s.reader, s.hasher, first_group * p.group_size, count * p.group_size, volume)
        with self._lock:
            s.kept[first_group] = leaves
            s.kept_bytes += len(leaves)
            while s.kept_bytes > self.keep_bytes and len(s.kept) > 1:
                _, old = s.kept.popitem(last=False)
                s.kept_bytes -= len(old)
        return GroupDigests(volume, p.block_size, first_group, s.hasher.groups(leaves))

    def leaf_digests(self, request: LeafRequest) -> LeafDigests:
        s = self._session(request.volume)
        p = s.request.params
        ngroups = p.groups(s.request.size)
        per_group = p.fanout * DIGEST_SIZE
        out = bytearray()
        with self._lock:
            windows = sorted(s.kept.items())
        for g in request.groups:
            if not 0 <= g < ngroups:
                raise ChecksumListError(request.volume, f"group {g} asked, volume has {ngroups}")
            leaves = None
            for first, kept in windows:
                i = (g - first) * per_group
                if 0 <= i < len(kept):
                    leaves = kept[i:i + per_group]
                    break
            if leaves is None:
                self.rehashed_groups += 1
                leaves = hash_range(s.reader, s.hasher, g * p.group_size, p.group_size, request.volume)
            out += leaves
        return LeafDigests(request.volume, p.block_size, tuple(request.groups), bytes(out))

    def close(self, volume: str) -> None:
        with self._lock:
            self._open.pop(volume, None)


@dataclass
class DeltaStats:
    """What a delta sync cost. ``wire_bytes``: everything both directions would carry."""

    volume: str
    size: int
    block_size: int
    fanout: int
    blocks: int = 0
    groups: int = 0
    differing_groups: int = 0
    differing_blocks: int = 0
    ranges: int = 0
    checksum_bytes: int = 0  # GroupDigests and LeafDigests, recovery -> protect
    request_bytes: int = 0  # DeltaOpen and LeafRequests (and group requests), protect -> recovery
    data_bytes: int = 0  # payload of the differing blocks, protect -> recovery
    scanned_bytes: int = 0

    @property
    def wire_bytes(self) -> int:
        return self.checksum_bytes + self.request_bytes + self.data_bytes + self.ranges * RANGE_HEADER

    @property
    def percent(self) -> float:
        return 100.0 if not self.size else 100.0 * self.scanned_bytes / self.size


class DeltaSync:
    """The protect side of one volume's delta sync against ``peer``.

    ``ranges()`` yields the ``(offset, length)`` ranges that differ, window by window (at most ``max_io``
    bytes each); ``extents()`` reads them from ``reader`` too. ``stats`` fills in as it goes.
    """

    def __init__(
        self,
        reader: VolumeReader,
        volume: str,
        peer: ChecksumPeer,
        params: DeltaParams | None = None,
        *,
        vpg: str = "",
        window_bytes: int = DEFAULT_WINDOW,
        prefetch: int = 2,
        max_io: int = 1024 * 1024,
    ) -> None:
        self.reader = reader
        self.volume = volume
        self.peer = peer
        self.params = params or DeltaParams(salt=os.urandom(16))
        self.vpg = vpg
        p = self.params
        self.window_groups = max(1, window_bytes // p.group_size)
        self.prefetch = max(1, prefetch)
        self.max_io = max_io
        self.hasher = Hasher(p)
        self.stats = DeltaStats(volume, reader.size, p.block_size, p.fanout,
                                blocks=p.blocks(reader.size), groups=p.groups(reader.size))

    def _check_groups(self, msg: GroupDigests, first: int, count: int) -> None:
        if msg.volume != self.volume:
            raise UnknownVolumeError(msg.volume, [self.volume], side="protected")
        if msg.block_size != self.params.block_size:
            raise BlockSizeMismatchError(self.volume, self.params.block_size, msg.block_size)
        if msg.first_group != first:
            raise ChecksumListError(self.volume, f"group digests start at group {msg.first_group}, asked {first}")
        split_digests(msg.digests, self.volume, count)

    def _check_leaves(self, msg: LeafDigests, groups: list[int], expected_leaves: int) -> None:
        if msg.volume != self.volume:
            raise UnknownVolumeError(msg.volume, [self.volume], side="protected")
        if msg.block_size != self.params.block_size:
            raise BlockSizeMismatchError(self.volume, self.params.block_size, msg.block_size)
        if list(msg.groups) != groups:
            raise ChecksumListError(self.volume, f"leaf digests for groups {list(msg.groups)[:8]}..., asked {groups[:8]}...")
        split_digests(msg.digests, self.volume, expected_leaves)

    def ranges(self) -> Iterator[tuple[int, int]]:
        p, st = self.params, self.stats
        request = DeltaOpen(self.vpg, self.volume, self.reader.size, p)
        st.request_bytes += encoded_size(request)
        self.peer.open(request)
        windows = [(g, min(self.window_groups, st.groups - g)) for g in range(0, st.groups, self.window_groups)]
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"delta-peer-{self.volume}")
        pending: OrderedDict[int, Future] = OrderedDict()
        try:
            for i, (first, count) in enumerate(windows):
                for j in range(i, min(i + self.prefetch, len(windows))):
                    if windows[j][0] not in pending:
                        f, n = windows[j]
                        pending[f] = pool.submit(self.peer.group_digests, self.volume, f, n)
                yield from self._window(first, count, pending.pop(first))
        finally:
            for fut in pending.values():
                fut.cancel()
            pool.shutdown(wait=True)
            self.peer.close(self.volume)

    def _window(self, first: int, count: int, theirs_future: Future) -> Iterator[tuple[int, int]]:
        p, st = self.params, self.stats
        start = first * p.group_size
        mine_leaves = hash_range(self.reader, self.hasher, start, count * p.group_size, self.volume)
        mine_groups = self.hasher.groups(mine_leaves)
        theirs = theirs_future.result()
        st.request_bytes += encoded_size(GroupRequest(self.volume, first, count))
        st.checksum_bytes += encoded_size(theirs)
        self._check_groups(theirs, first, count)
        diff_groups = [first + i for i in differing(mine_groups, theirs.digests)]
        st.scanned_bytes = min(self.reader.size, start + count * p.group_size)
        if not diff_groups:
            return
        st.differing_groups += len(diff_groups)
        request = LeafRequest(self.volume, tuple(diff_groups))
        st.request_bytes += encoded_size(request)
        leaves = self.peer.leaf_digests(request)
        st.checksum_bytes += encoded_size(leaves)
        per = p.fanout * DIGEST_SIZE
        expected = sum(len(mine_leaves[(g - first) * per:(g - first + 1) * per]) for g in diff_groups) // DIGEST_SIZE
        self._check_leaves(leaves, diff_groups, expected)
        blocks: list[int] = []
        pos = 0
        for g in diff_groups:
            mine = mine_leaves[(g - first) * per:(g - first + 1) * per]
            theirs_leaves = leaves.digests[pos:pos + len(mine)]
            pos += len(mine)
            blocks.extend(g * p.fanout + i for i in differing(mine, theirs_leaves, stride=p.fanout))
        st.differing_blocks += len(blocks)
        for off, length in block_ranges(blocks, p.block_size, self.reader.size, self.max_io):
            st.ranges += 1
            st.data_bytes += length
            yield off, length

    def extents(self) -> Iterator[Extent]:
        """The differing blocks with their data, read from ``reader`` as they are yielded."""
        return read_ranges(self.reader, self.ranges(), self.volume)


def apply(writer, extents) -> int:
    """Write extents to a VolumeWriter (the in-process recovery side); return the bytes written."""
    n = 0
    for ext in extents:
        writer.pwrite(ext.offset, ext.data)
        n += len(ext.data)
    return n


def delta_sync(reader: VolumeReader, volume: str, replica, params: DeltaParams | None = None, **kw) -> DeltaStats:
    """Delta-sync ``reader`` onto ``replica`` (reader and writer) in process; return the stats."""
    peer = ReplicaChecksums({volume: replica})
    sync = DeltaSync(reader, volume, peer, params, **kw)
    apply(replica, sync.extents())
    return sync.stats


__all__ = ["ChecksumPeer", "DeltaStats", "DeltaSync", "ReplicaChecksums", "apply", "delta_sync", "hash_range",
           "read"]
