"""The split stream's shared-memory ring (one of ``Splitter``'s bases): the filter's side of split_ring.py.

With a unix socket the splitter offers the VRA a shared-memory ring: the queue budget split into a ring of
frames and slabs, which the NBD connections receive into (``renew_slab``). Once the VRA accepts it
(``_await_accept``), ``submit_writes`` puts each write into the ring under the lock (so frames stay in seq
order): a REF frame when its data is in a slab of this ring (nothing copied), else a WRITE frame with the data
copied; then it publishes the batch and rings the VRA's doorbell only if it sleeps (``_ring_bell``). The room is what the
VRA has not consumed; a write that does not fit goes to the dirty map. A VRA that declines the ring
(``_decline_ring``) leaves the socket path; what went into the ring meanwhile is folded into the dirty map.

State and locking are the ``Splitter``'s (vra_appliance/iofilter/splitter.py): this class is one of its
bases, holds no state of its own and takes no lock of its own; every method runs under, or takes, the
splitter's one lock (``_lock`` / ``_cond``) exactly where the splitter did before the split.
"""

from __future__ import annotations

import json
import logging
import socket

from vra_appliance.errors import RingCorrupt
from vra_appliance.iofilter import split_protocol as sp
from vra_appliance.iofilter import split_ring
from vra_appliance.iofilter.split_ring import RingWriter

log = logging.getLogger(__name__)


class RingPath:
    """The ring half of ``Splitter`` (see the module docstring)."""

    def _ring_writes(self, ring: RingWriter, writes: list) -> bool:
        """Put ``writes`` into the ring and publish them (lock held); True if the ring turned out corrupt.
        A write received into one of this ring's slabs (``(volume, offset, data, slab, start)``) becomes a
        REF frame; any other write is copied into the ring."""
        with ring.locked():
            return self._ring_writes_locked(ring, writes)

    def _ring_writes_locked(self, ring: RingWriter, writes: list) -> bool:
        seq = ring.seq
        ring.seq = seq + len(writes)
        vol_bytes, stats, placed, nbytes, i = self._vol_bytes, self.stats, 0, 0, 0
        try:
            ring.rewind()
            for i, write in enumerate(writes):  # noqa: B007 (i also tells the except clause where it stopped)
                volume, offset, data = write[0], write[1], write[2]
                vol = vol_bytes.get(volume) or volume.encode()
                if len(write) > 3 and write[3].ring is ring:
                    ok = ring.put_ref(vol, seq + i, offset, write[3], write[4], len(data))
                    stats["frames_in_place"] += ok
                else:
                    ok = ring.put_write(vol, seq + i, offset, data)
                if ok:
                    placed += 1
                    nbytes += len(data)
                else:
                    stats["diverted_writes"] += 1
                    stats["diverted_bytes"] += len(data)
                    self.dirty.add(volume, offset, len(data))
        except RingCorrupt:
            for write in writes[i:]:
                self.dirty.add(write[0], write[1], len(write[2]))
            return True
        if placed:
            ring.publish()
            stats["frames_sent"] += placed
            stats["bytes_sent"] += nbytes
            stats["sends"] += 1
        return False

    def renew_slab(self, old):
        """A receive buffer for an NBD connection that is leaving ``old`` (a slab or None): ``old`` itself if
        the VRA has consumed every write in it, else a free slab of the live ring, else None (the
        connection uses private memory; its writes are copied into the ring). Never waits."""
        with self._lock:
            ring = self._ring if self._ring_live else None
            if ring is None:
                return None
            if old is not None and old.ring is ring and ring.consumed_through(old):
                return old
            slab = ring.take_slab()
            low = ring.slabs_low
        if low:  # wake a napping VRA before the connections run out of slabs and fall back to copying
            self._ring_bell(ring, True)
        return slab

    def give_back_slab(self, slab) -> None:
        """A connection no longer receives into ``slab`` (its writes were handed over)."""
        with self._lock:
            slab.ring.give_back(slab)

    def _ring_frame(self, frame_of_seq, urgent: bool) -> bool | None:
        """Put one small frame (built by ``frame_of_seq(seq)``) into the ring. None: no ring in use;
        False: no room (the seq is not used)."""
        with self._lock:
            ring = self._ring
            if ring is None or not self._connected:
                return None
            with ring.locked():
                seq = ring.seq
                try:
                    if not ring.put_frame(frame_of_seq(seq)):
                        return False
                except RingCorrupt:
                    broken = True
                else:
                    broken = False
                    ring.seq = seq + 1
                    ring.publish()
                    self.stats["frames_sent"] += 1
                    self.stats["sends"] += 1
        if broken:
            self._ring_broken(ring)
            return False
        self._ring_bell(ring, urgent)
        return True

    def _ring_bell(self, ring: RingWriter, urgent: bool) -> None:
        """Ring the VRA's doorbell if it sleeps (or naps and ``urgent`` or the ring is filling): the ring
        decides under its lock, after the frames were published (see split_ring.py), and sends nothing once
        it was detached (the socket may be closing)."""
        if self._ring_live:
            ring.bell(urgent)

    def _ring_broken(self, ring: RingWriter) -> None:
        with self._lock:
            gen = self._gen if self._ring is ring else -1
        self._disconnected(gen, "the VRA corrupted the split ring's counters")

    def _ring_pending(self) -> bool:
        """Frames in the ring the VRA has not consumed (lock held)."""
        if self._ring is None:
            return False
        try:
            return self._ring.refresh()[0] > 0
        except RingCorrupt:
            return True

    def _await_accept(self, sock: socket.socket) -> bool:
        """The VRA's answer to the ring offer: True if it reads the ring. An older VRA does not answer."""
        sock.settimeout(self._connect_timeout_s)
        try:
            head = _recv_exact(sock, sp.HEADER.size)
        except TimeoutError:
            log.info("VRA %s did not answer the ring offer (an older VRA): split stream over the socket",
                     self.address)
            return False
        finally:
            sock.settimeout(None)
        magic, ftype, _flags, _vlen, _seq, length = sp.HEADER.unpack(head)
        if magic != sp.MAGIC or ftype != sp.ACCEPT or length > 4096:
            raise ConnectionError(f"unexpected frame type {ftype} from the VRA in answer to HELLO")
        sock.settimeout(self._connect_timeout_s)
        try:
            accepted = bool(json.loads(_recv_exact(sock, length)).get("ring"))
        except ValueError as exc:
            raise ConnectionError(f"the VRA's ACCEPT is not JSON: {exc}") from exc
        finally:
            sock.settimeout(None)
        if not accepted:
            log.info("VRA %s declined the ring: split stream over the socket", self.address)
        return accepted

    def _decline_ring(self, ring: RingWriter) -> None:
        """The VRA will not read ``ring``: what went into it goes to the dirty map; the socket carries on."""
        with self._cond:
            if self._ring is not ring:
                return  # disconnected meanwhile: already folded
            self._ring = None
            self._seq = ring.detach()
            self._count_native(ring)
            self._folding += 1
        try:
            self._fold([f for f in ring.unconsumed() if f[0] != sp.MARK])
        finally:
            with self._cond:
                ring.close()
                self._folding -= 1
                self._cond.notify_all()

    def _count_native(self, ring: RingWriter) -> None:
        """Add what the compiled write path published into ``ring`` to the counters (lock held, detached)."""
        for name, value in ring.native_stats().items():
            self.stats[name] += value

    def _wait_ring(self, gen: int) -> None:
        """With a ring, the sender has nothing to send: it waits for the connection's end."""
        with self._cond:
            while self._gen == gen and self._connected and not self._stopping:
                self._cond.wait()


def ring_shape(queue_bytes: int) -> tuple[int, int]:
    """(ring bytes, slabs) for a queue budget: three quarters in slabs if that makes at least two, else
    all of it ring (small budgets: every write is copied into the ring)."""
    slabs = queue_bytes * 3 // 4 // split_ring.SLAB_BYTES
    if slabs < 2:
        return split_ring.ring_bytes(queue_bytes), 0
    return split_ring.ring_bytes(queue_bytes - slabs * split_ring.SLAB_BYTES), slabs


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the VRA closed the connection")
        data += chunk
    return data
