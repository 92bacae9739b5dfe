"""The shared-memory split ring: IO filter -> local VRA with one copy and no system call per batch.

Over a unix socket, the filter offers a ring in its HELLO (the memfd travels with it as SCM_RIGHTS); a
VRA that takes it answers ACCEPT ``{"ring": true}`` and from then on every frame of the split stream
(split_protocol: the same 20-byte header and payload) is written by the filter into the ring and read by
the VRA in place. The socket stays for what is not data: the VRA's ACKs, doorbells (single ``\\0`` bytes,
filter -> VRA, only while the VRA sleeps), and the end of the connection.

Layout of the memfd (sealed against shrinking and growing, so neither side can make the other fault)::

    page 0, read-write for both (u64, native byte order; each field has a single writer):
        0    magic "ZSPLRING", layout version, ring size, data size (ring + slabs)
        64   head           filter: bytes published (every frame before it is complete)
        72   frames_written filter
        80   rewound_at     filter: the VRA's tail at its last rewind; a tail equal to it skips to the next
                            multiple of ``size`` (no frame is read there)
        128  tail           VRA: bytes consumed (its handler returned from every frame before it)
        136  tail_seq       VRA: filter_seq of the last frame handled
        144  frames_read    VRA
        192  state          VRA: (epoch << 2) | AWAKE 0, NAP 1, SLEEP 2
    from 4096: ``size`` bytes of frames, then the slabs; the VRA maps all of it read-only.

Slabs: the NBD connections' receive buffers can live in the same memory (``slabs`` of SLAB_BYTES each).
A write received into a slab goes to the VRA as a REF frame (type 8: volume id, u64 offset, u64 data
position, u64 length), its data read in place where the kernel put it: the split then copies nothing. A
slab a connection has left stays pinned until the VRA's tail_seq passes the last REF into it. With no
free slab, a connection receives into private memory and its writes are copied into the ring (WRITE).

Head and tail count bytes from the start (positions are ``counter % size``). Frames start on 64-byte
boundaries and never wrap: a frame that does not fit before the end is preceded by a PAD frame up to the
end and starts at 0. A frame bigger than the ring never fits; the filter records it in its dirty map.

Doorbells: the VRA publishes its state before it waits on the socket. NAP is a short timed wait (it is
busy: the filter rings only if the ring is a quarter full, or for a MARK); SLEEP is the idle wait after
a quiet spell (the filter rings for any frame). One ring per sleep epoch is enough, so a burst of writes
costs the filter at most one ``send`` and the VRA one wakeup, and a steady load costs neither.

Memory ordering: x86-64 only (total store order). The producer stores the data, then head; the consumer
loads head, then the data; TSO keeps both orders. The filter's side of this (frames, head, the doorbell
decision) is in C (native/zwrite.c, shared with the compiled write path): head is stored with a release
store, and between storing head and loading the VRA's state there is a full fence; the VRA (Python) stores
its fields with one aligned 8-byte move (memoryview item assignment) and has a locked instruction (a
``threading.Lock`` round trip) between storing its state and loading head. Its sleep has a timeout anyway,
so a doorbell lost to a bug costs latency, never a hang. On other machines the filter does not offer a ring
and the split stream stays on the socket.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import platform
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from vra_appliance.errors import RingCorrupt
from vra_appliance.iofilter import native
from vra_appliance.iofilter import split_protocol as sp

RING_MAGIC = int.from_bytes(b"ZSPLRING", "little")
RING_LAYOUT = 1
CONTROL_BYTES = 4096
ALIGN = 64
PAD = 7  # a frame type found only in rings: skip to the end of the ring
REF = 8  # a frame type found only in rings: a write whose data is in a slab
REF_BODY = struct.Struct(">QQQ")  # offset on the volume, data position in the mapping, data length
SLAB_BYTES = 1024 * 1024 + 256 * 1024  # an NBD receive buffer (renewed after 1 MiB; larger writes: private)
REWIND_BYTES = 1024 * 1024  # an empty ring past this position starts over at 0 (see RingWriter.rewind)

# u64 indexes into the control page
_MAGIC, _LAYOUT, _SIZE, _DATA_SIZE = 0, 1, 2, 3
_HEAD, _FRAMES_WRITTEN, _REWOUND_AT = 8, 9, 10
_NEVER = 1 << 63
_TAIL, _TAIL_SEQ, _FRAMES_READ = 16, 17, 18
_STATE = 24

AWAKE, NAP, SLEEP = 0, 1, 2


def supported() -> bool:
    """True where the ring's memory ordering holds (x86-64) and memfds exist."""
    return platform.machine().lower() in ("x86_64", "amd64") and hasattr(os, "memfd_create")


def ring_bytes(queue_bytes: int) -> int:
    """The data size of a ring for a queue budget: whole pages, at least 64 KiB."""
    page = mmap.ALLOCATIONGRANULARITY
    return max(64 * 1024, -(-queue_bytes // page) * page)


def _aligned(n: int) -> int:
    return (n + ALIGN - 1) & ~(ALIGN - 1)


class Slab:
    """One receive buffer in the shared memory (see the module docstring)."""

    __slots__ = ("ring", "index", "pos", "view", "addr")

    def __init__(self, ring: RingWriter, index: int, pos: int, view: memoryview):
        self.ring = ring
        self.index = index
        self.pos = pos  # of its first byte in the data mapping
        self.view = view
        self.addr = ring.data_addr + pos  # for the compiled write path

    @property
    def last_seq(self) -> int:
        """filter_seq of the last REF frame into it (written by whoever published it, C or Python)."""
        return self.ring.slab_seq[self.index]


class RingWriter:
    """The filter's side: creates the memfd, writes frames, publishes head, reads what the VRA consumed.

    The writer's state (head, seq, ...) lives in a ``native.ZRing`` that the compiled write path
    (native/zwrite.c) publishes into as well: every frame is written with the ring's lock held
    (``with ring.locked():``), and ``seq`` (the next filter_seq) belongs to the ring while it is attached.
    """

    def __init__(self, size: int, slabs: int = 0, slab_bytes: int = SLAB_BYTES):
        self._lib = native.lib()
        self.size = size
        self.data_size = size + slabs * slab_bytes
        fd = os.memfd_create("zvr-split-ring", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, CONTROL_BYTES + self.data_size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._cmap = mmap.mmap(fd, CONTROL_BYTES)
            self._dmap = mmap.mmap(fd, self.data_size, offset=CONTROL_BYTES)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._ctl = memoryview(self._cmap).cast("Q")
        self._data = memoryview(self._dmap)
        ctl = self._ctl
        ctl[_MAGIC], ctl[_LAYOUT], ctl[_SIZE], ctl[_DATA_SIZE] = RING_MAGIC, RING_LAYOUT, size, self.data_size
        self._ctl[_REWOUND_AT] = _NEVER
        self.data_addr = native.address(self._dmap)
        self.slab_seq = (ctypes.c_uint64 * max(1, slabs))()
        z = self.z = native.ZRing(size=size, data_size=self.data_size, ctl_addr=native.address(self._cmap),
                                  data_addr=self.data_addr, slab_seq_addr=ctypes.addressof(self.slab_seq),
                                  nslabs=slabs, slab_bytes=slab_bytes, rewound_at=_NEVER, live=0, bell_fd=-1,
                                  rang=-1, seq=1)
        self._zp = ctypes.pointer(z)
        if self._lib.zring_init(self._zp):
            raise OSError("pthread_mutex_init failed for the split ring")
        self._prefixes: dict[bytes, struct.Struct] = {}
        self._free = [Slab(self, i, size + i * slab_bytes, self._data[size + i * slab_bytes:size + (i + 1) * slab_bytes])
                      for i in reversed(range(slabs))]  # pop() takes the lowest: few slabs stay in the caches
        self._pinned: list[Slab] = []
        self._out = 0  # slabs held by connections
        self._closing = False

    # -- the writer's state, shared with the compiled write path ----------------------------------------
    @property
    def _head(self) -> int:
        return self.z.head

    @property
    def frames(self) -> int:
        return self.z.frames

    @property
    def seq(self) -> int:
        """The next filter_seq (read and advanced with the lock held)."""
        return self.z.seq

    @seq.setter
    def seq(self, value: int) -> None:
        self.z.seq = value

    @contextmanager
    def locked(self) -> Iterator[None]:
        """The ring's lock (a C mutex; waiting for it releases the GIL): around writing frames."""
        self._lib.zring_lock(self._zp)
        try:
            yield
        finally:
            self._lib.zring_unlock(self._zp)

    def attach(self, seq: int) -> None:
        """Writes may go into the ring from now on, numbered from ``seq`` (before any other thread sees it)."""
        self.z.seq = seq
        self.z.live = 1

    def set_bell(self, fd: int) -> None:
        """The VRA took the ring: doorbells go to ``fd`` (the split stream's socket)."""
        with self.locked():
            self.z.bell_fd = fd

    def detach(self) -> int:
        """Nothing goes into the ring any more (the compiled path stops publishing, no doorbell is sent):
        returns the next filter_seq, which the splitter's stream continues from."""
        with self.locked():
            self.z.live = 0
            self.z.bell_fd = -1
            return self.z.seq

    def bell(self, urgent: bool) -> None:
        """Ring the VRA's doorbell if it sleeps (or naps and ``urgent`` or the ring is filling); once per sleep."""
        with self.locked():
            self._lib.zring_bell(self._zp, int(urgent))

    def native_stats(self) -> dict[str, int]:
        """What the compiled write path published into this ring."""
        z = self.z
        return {"frames_sent": z.frames_sent, "bytes_sent": z.bytes_sent, "frames_in_place": z.in_place,
                "sends": z.sends}

    def close_fd(self) -> None:
        """The VRA has its own copy of the descriptor (or will never get one)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def close(self) -> None:
        """Unmap, once no connection holds a slab any more (until then the last `give_back` does it)."""
        self.close_fd()
        self._closing = True
        if self._out == 0:
            self._unmap()

    def _unmap(self) -> None:
        for slab in self._free + self._pinned:
            slab.view.release()
        self._free, self._pinned = [], []
        self._ctl.release()
        self._data.release()
        for m in (self._cmap, self._dmap):
            try:
                m.close()
            except BufferError:  # a view still exported (a frame being folded); the GC closes it later
                pass

    # -- slabs ------------------------------------------------------------------------------------------
    def take_slab(self) -> Slab | None:
        """A free slab (the lowest, so the same few stay warm), or None: all are held or still pinned."""
        if self._closing:
            return None
        if self._pinned:
            done = self._ctl[_TAIL_SEQ]
            freed = [s for s in self._pinned if s.last_seq <= done]
            if freed:
                self._pinned = [s for s in self._pinned if s.last_seq > done]
                self._free.extend(freed)
                self._free.sort(key=lambda s: -s.index)
        if not self._free:
            return None
        self._out += 1
        return self._free.pop()

    @property
    def slabs_low(self) -> bool:
        """Fewer than a quarter of the slabs are free (the VRA should catch up soon)."""
        return len(self._free) * 4 < len(self._free) + len(self._pinned) + self._out

    def consumed_through(self, slab: Slab) -> bool:
        """True if the VRA has consumed every REF into ``slab`` (it may be filled again)."""
        return slab.last_seq <= self._ctl[_TAIL_SEQ]

    def give_back(self, slab: Slab) -> None:
        """A connection left ``slab``: free once the VRA consumed the REFs into it."""
        self._out -= 1
        if self._closing:
            if self._out == 0:
                self._unmap()
            return
        (self._pinned if slab.last_seq > self._ctl[_TAIL_SEQ] else self._free).append(slab)
        self._free.sort(key=lambda s: -s.index)

    # -- writing frames (the ring's lock held, or a single thread) --------------------------------------
    def _check(self, rc: int) -> bool:
        if rc == -2:
            raise RingCorrupt(f"consumer tail {self._ctl[_TAIL]} outside [{self.z.tail}, {self.z.head}] or unaligned")
        return rc >= 0

    def _reserve(self, length: int) -> int:
        """The position for a frame of ``length`` bytes (a PAD is written first if it must wrap); -1: no room."""
        pos = self._lib.zring_reserve(self._zp, length)
        self._check(pos)
        return pos

    def rewind(self) -> None:
        """Start the next frame at 0 if the VRA has consumed everything and the ring is past REWIND_BYTES.

        A consumer that keeps up leaves the ring empty between batches; without this, frames would still
        walk through the whole ring (64 MiB by default), always into memory that has left the CPU caches:
        a 64 KiB copy into a cold ring costs three times one into a warm one. The VRA learns of the jump
        from ``rewound_at`` (published with head), so the whole ring is room at once."""
        self._check(self._lib.zring_rewind(self._zp))

    def put_write(self, volume: bytes, seq: int, offset: int, data) -> bool:
        """A WRITE frame; False (nothing written) when the ring has no room for it."""
        n = len(data)
        vlen = len(volume)
        length = sp.HEADER.size + vlen + 8 + n
        pos = self._reserve(length)
        if pos < 0:
            return False
        prefix = self._prefixes.get(volume)
        if prefix is None:
            prefix = self._prefixes[volume] = struct.Struct(f">IBBHQI{vlen}sQ")
        prefix.pack_into(self._dmap, pos, sp.MAGIC, sp.WRITE, 0, vlen, seq, vlen + 8 + n, volume, offset)
        start = pos + length - n
        self._data[start:start + n] = data
        return True

    def put_ref(self, volume: bytes, seq: int, offset: int, slab: Slab, start: int, n: int) -> bool:
        """A REF frame for the ``n`` bytes at ``start`` in ``slab``; False when the ring has no room."""
        return self._check(self._lib.zring_put_ref(self._zp, volume, len(volume), seq, offset, slab.pos + start,
                                                   n, slab.index))

    def put_frame(self, frame: bytes) -> bool:
        """A complete small frame (ZERO, MARK); False when the ring has no room for it."""
        return self._check(self._lib.zring_put_frame(self._zp, frame, len(frame)))

    def publish(self) -> None:
        """Make every frame written so far visible to the VRA (data first, then head: TSO keeps the order)."""
        self._lib.zring_publish(self._zp)

    # -- what the VRA did ------------------------------------------------------------------------------
    def consumed(self) -> int:
        """The VRA's tail, checked: aligned, not behind what it said before, not past head."""
        tail = self._lib.zring_consumed(self._zp)
        self._check(-2 if tail < 0 else 0)
        return tail

    @property
    def used(self) -> int:
        """Bytes published and not yet consumed (as last read)."""
        return self.z.head - self.z.tail

    def refresh(self) -> tuple[int, int]:
        """Re-read the VRA's progress: (bytes still in the ring, frames still in the ring)."""
        tail = self.z.tail = self.consumed()
        return self.z.head - tail, max(0, self.z.frames - self._ctl[_FRAMES_READ])

    @property
    def tail_seq(self) -> int:
        return self._ctl[_TAIL_SEQ]

    def bell_word(self) -> int:
        """The VRA's state word."""
        return self._ctl[_STATE]

    def unconsumed(self) -> list[tuple[int, int, str, int, int]]:
        """Every frame the VRA has not consumed: (type, seq, volume, offset, length) for WRITE and ZERO,
        (MARK, seq, "", 0, 0) for marks. The writer must be done writing (the connection is gone)."""
        tail = self.consumed()
        size, data, out = self.size, self._dmap, []
        header, offset_s, zero_s = sp.HEADER, sp.OFFSET, sp.ZERO_BODY
        while tail < self._head:
            pos = tail % size
            magic, ftype, _flags, vlen, seq, length = header.unpack_from(data, pos)
            if magic != sp.MAGIC:
                raise RingCorrupt(f"no frame at ring position {pos}")
            if ftype == PAD:
                tail += size - pos
                continue
            body = pos + header.size
            volume = bytes(data[body:body + vlen]).decode()
            if ftype == sp.WRITE:
                out.append((ftype, seq, volume, offset_s.unpack_from(data, body + vlen)[0], length - vlen - 8))
            elif ftype == REF:
                offset, _pos, n = REF_BODY.unpack_from(data, body + vlen)
                out.append((sp.WRITE, seq, volume, offset, n))
            elif ftype == sp.ZERO:
                out.append((ftype, seq, volume, *zero_s.unpack_from(data, body + vlen)))
            else:
                out.append((ftype, seq, "", 0, 0))
            tail += _aligned(header.size + length)
        return out


class RingReader:
    """The VRA's side of a ring received as a descriptor; owns the descriptor from the call on."""

    def __init__(self, fd: int, offered_size: int, offered_data: int | None = None):
        offered_data = offered_size if offered_data is None else offered_data
        try:
            total = os.fstat(fd).st_size - CONTROL_BYTES
            page = mmap.ALLOCATIONGRANULARITY
            if total != offered_data or not 0 < offered_size <= total or offered_size % page or total % page:
                raise RingCorrupt(f"ring memfd of {total} data bytes does not match the offered {offered_size} "
                                  f"(+ slabs: {offered_data}) and a control page")
            seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
            if not seals & fcntl.F_SEAL_SHRINK:
                raise RingCorrupt("ring memfd is not sealed against shrinking")
            self._cmap = mmap.mmap(fd, CONTROL_BYTES)
            self._dmap = mmap.mmap(fd, total, offset=CONTROL_BYTES, access=mmap.ACCESS_READ)
        finally:
            os.close(fd)
        self.ctl = memoryview(self._cmap).cast("Q")
        ctl = self.ctl
        if (ctl[_MAGIC], ctl[_LAYOUT], ctl[_SIZE], ctl[_DATA_SIZE]) != (RING_MAGIC, RING_LAYOUT, offered_size, total):
            self.close()
            raise RingCorrupt("not a split ring of this layout")
        self.size = offered_size
        self.data_size = total
        self.data = self._dmap  # unpack_from reads it; views are made per frame
        self.view = memoryview(self._dmap)
        self.epoch = 0

    def head(self) -> tuple[int, int, int]:
        """(head, rewound_at, the tail a rewind skips to): read head first, the rest belongs to it."""
        ctl = self.ctl
        head = ctl[_HEAD]
        rewound_at = ctl[_REWOUND_AT]
        return head, rewound_at, rewound_at + self.size - rewound_at % self.size

    def consumed(self, tail: int, seq: int, frames: int) -> None:
        """Publish progress: the handler returned from every frame before ``tail``."""
        ctl = self.ctl
        ctl[_TAIL_SEQ] = seq
        ctl[_FRAMES_READ] = frames
        ctl[_TAIL] = tail

    def set_state(self, mode: int) -> None:
        if mode != AWAKE:
            self.epoch += 1
        self.ctl[_STATE] = (self.epoch << 2) | mode

    def close(self) -> None:
        self.ctl.release()
        if hasattr(self, "view"):
            self.view.release()
        for m in (self._cmap, self._dmap):
            try:
                m.close()
            except BufferError:  # a handler kept a view against the contract; the GC unmaps later
                pass
