"""The filter side of the split: a bounded queue (or shared ring) to the local VRA, and the dirty-map fallback.

The NBD connection thread calls `submit_write` after the local write succeeded. That call never blocks on
the VRA: it takes one short lock, and either appends the write to the queue or, when no VRA is attached or
the queue is over its byte budget, records the extent in the dirty map. The queue's budget counts every
byte not yet acknowledged by the VRA (queued and sent-but-unacknowledged), so a VRA that stops reading or
stops acknowledging fills it and further writes go to the dirty map.

A sender thread connects to the VRA (retrying with backoff), sends HELLO, then drains the queue in batches
with one ``sendall`` each; an ack thread reads the VRA's cumulative ACKs and releases acknowledged batches.
When the connection breaks (the VRA was killed, or `stop`), everything not acknowledged is folded into the
dirty map, a chunk at a time so a VM write never waits behind a long fold.

Locking: one lock guards the queue, the counters and the dirty map; no socket call is made while it is held.
One thread at a time has the right to write to the socket (``_sending``), which keeps frames in seq order:
a connection thread sends inline only when nothing is queued and nobody is sending.

With a unix socket the splitter offers the VRA a shared-memory ring (split_ring.py): the queue budget
split into a ring of frames and slabs, which the NBD connections receive into (`renew_slab`). Once the
VRA accepts it, ``submit_writes`` puts each write into the ring under the lock (so frames stay in seq
order): a REF frame when its data is in a slab of this ring (nothing copied), else a WRITE frame with the
data copied; then it publishes the batch and rings the VRA's doorbell only if it sleeps. The queue, the
sender's sends and the inline sends are not used. The room is what the VRA has not consumed; a write that
does not fit goes to the dirty map. When the connection breaks, every frame the VRA had not consumed is
folded into the dirty map. Until the VRA answers the offer, writes go to the ring; an older VRA that never
answers (or one that declines) gets the socket stream and those writes go to the dirty map.
"""

from __future__ import annotations

import array
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from vra_appliance.errors import RingCorrupt, SplitProtocolError
from vra_appliance.iofilter import split_protocol as sp
from vra_appliance.iofilter import split_ring
from vra_appliance.iofilter.dirty_map import DirtyMap
from vra_appliance.iofilter.split_ring import RingWriter

log = logging.getLogger(__name__)

_FRAME_COST = 64  # bytes charged per queued frame on top of its data (header, tuple)
_BATCH_BYTES = 1024 * 1024
_BATCH_FRAMES = 1024
_FOLD_CHUNK = 256
_IOV_MAX = 1024
_SNDBUF = 4 * 1024 * 1024


def _unsent(parts: list, sent: int) -> bytes:
    """The bytes of ``parts`` after the first ``sent``, copied once (the views die with the batch)."""
    for i, part in enumerate(parts):
        if sent < len(part):
            return b"".join([memoryview(part)[sent:], *parts[i + 1:]])
        sent -= len(part)
    return b""


def _sendmsg_all(sock: socket.socket, parts: list) -> int:
    """Send every buffer of ``parts`` (blocking, scatter-gather, no joining copy); returns the bytes sent."""
    total = 0
    views = [memoryview(p) for p in parts]
    i = 0
    while i < len(views):
        sent = sock.sendmsg(views[i:i + _IOV_MAX])
        total += sent
        while sent:
            n = len(views[i])
            if sent >= n:
                sent -= n
                i += 1
            else:
                views[i] = views[i][sent:]
                sent = 0
    return total


class Splitter:
    """Hands completed writes to the VRA at ``address`` (None: no VRA; everything goes to the dirty map)."""

    def __init__(self, filter_id: str, volumes: list[str], address: str | None, dirty: DirtyMap,
                 queue_bytes: int = 64 * 1024 * 1024, retry_s: tuple[float, float] = (0.05, 2.0),
                 connect_timeout_s: float = 1.0, ring: bool = True, on_lost: Callable[[], None] | None = None):
        """``ring``: offer a shared-memory ring over a unix socket. ``on_lost`` is called if the splitter can
        no longer tell which writes the VRA missed (a VRA that corrupted the ring's counters): every volume
        then needs a delta sync."""
        self.filter_id = filter_id
        self.volumes = list(volumes)
        self.address = address
        self.dirty = dirty
        self.queue_bytes = queue_bytes
        self._retry_s = retry_s
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queue: deque = deque()  # (kind, seq, volume, offset, length, payload)
        self._inflight: deque = deque()  # (last seq, bytes charged, frames) sent, not yet acknowledged
        self._charged = 0
        self._seq = 1
        self._connected = False
        self._gen = 0
        self._sock: socket.socket | None = None
        self._sender_waiting = False
        self._sending = False  # a thread holds the right to write to the socket
        self._head: bytes | None = None  # the unsent rest of a frame a connection thread began to send
        self._folding = 0
        self._stopping = False
        self._stop_event = threading.Event()
        self._threads: list[threading.Thread] = []
        self._vol_bytes = {v: v.encode() for v in volumes}
        self.use_ring = ring
        self._on_lost = on_lost
        self._ring: RingWriter | None = None  # the connection's ring (frames go there, not to the socket)
        self._ring_live = False  # the VRA accepted the ring: it reads it and doorbells may be sent
        self._bell_lock = threading.Lock()  # doorbell sends vs. closing the ring and the socket
        self._rang = -1  # the VRA state word last rung for (one doorbell per sleep)
        self.stats = {"frames_sent": 0, "bytes_sent": 0, "acked_seq": 0, "diverted_writes": 0,
                      "diverted_bytes": 0, "connects": 0, "disconnects": 0, "marks": 0, "sends": 0, "acks": 0,
                      "frames_in_place": 0}

    # -- the IO path (NBD connection threads) -----------------------------------------------------------
    def submit_write(self, volume: str, offset: int, data) -> None:
        """A write of ``data`` at ``offset`` completed locally (see `submit_writes`)."""
        self.submit_writes([(volume, offset, data)])

    def submit_writes(self, writes: list) -> None:
        """Writes ``[(volume, offset, data), ...]`` completed locally, in completion order: send or queue them
        for the VRA, or mark them dirty. ``data`` may be a view that is valid only during this call.

        With a ring, the calling thread copies the writes into it (one copy) and rings the doorbell only if
        the VRA sleeps. On a socket stream that is idle (nothing queued, no send in progress) the calling
        thread sends the frames itself with one non-blocking ``sendmsg`` straight from the buffers: no copy,
        no thread handoff. Otherwise, or for what the socket did not take, the bytes are copied into the
        queue for the sender.
        """
        stream = []
        with self._lock:
            ring = self._ring if self._connected else None
            if ring is not None:
                broken = self._ring_writes(ring, writes)
            else:
                seq = self._seq
                self._seq = seq + len(writes)
                charged = 0
                for volume, offset, data, *_slab in writes:
                    n = len(data)
                    if not self._connected or self._charged + charged + n + _FRAME_COST > self.queue_bytes:
                        self.stats["diverted_writes"] += 1
                        self.stats["diverted_bytes"] += n
                        self.dirty.add(volume, offset, n)
                    else:
                        stream.append((sp.WRITE, seq, volume, offset, n, data))
                        charged += n + _FRAME_COST
                    seq += 1
                if not stream:
                    return
                self._charged += charged
                if self._sending or self._queue or self._head is not None:
                    self._queue.extend(f[:5] + (bytes(f[5]),) for f in stream)
                    if self._sender_waiting:
                        self._cond.notify()
                    return
                self._sending = True
                self._inflight.append((stream[-1][1], charged, [f[:5] + (None,) for f in stream]))
                sock, gen = self._sock, self._gen
        if ring is not None:
            if broken:
                self._ring_broken(ring)
            else:
                self._ring_bell(ring, False)
            return
        parts = []
        vol_bytes, write_prefix = self._vol_bytes, sp.write_prefix
        for _kind, fseq, volume, offset, n, data in stream:
            parts.append(write_prefix(vol_bytes.get(volume) or volume.encode(), fseq, offset, n))
            parts.append(data)
        try:
            sent = sock.sendmsg(parts, (), socket.MSG_DONTWAIT) if len(parts) <= _IOV_MAX else 0
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            with self._cond:
                self._sending = False
                self._cond.notify_all()
            self._disconnected(gen, f"send failed: {exc}")
            return
        total = sum(len(p) for p in parts)
        rest = _unsent(parts, sent) if sent < total else None
        with self._cond:
            self._sending = False
            if self._gen != gen:  # the connection broke meanwhile; the frames were folded into the dirty map
                self._cond.notify_all()
                return
            if rest is not None:  # the sender thread sends the rest before anything else
                self._head = rest
            self.stats["frames_sent"] += len(stream)
            self.stats["bytes_sent"] += total
            self.stats["sends"] += 1
            if (self._queue or self._head is not None) and self._sender_waiting:
                self._cond.notify()

    def _ring_writes(self, ring: RingWriter, writes: list) -> bool:
        """Put ``writes`` into the ring and publish them (lock held); True if the ring turned out corrupt.
        A write received into one of this ring's slabs (``(volume, offset, data, slab, start)``) becomes a
        REF frame; any other write is copied into the ring."""
        seq = self._seq
        self._seq = seq + len(writes)
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

    # -- receive buffers in the ring's slabs (NBD connection threads) --------------------------------------
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
            seq = self._seq
            try:
                if not ring.put_frame(frame_of_seq(seq)):
                    return False
            except RingCorrupt:
                broken = True
            else:
                broken = False
                self._seq = seq + 1
                ring.publish()
                self.stats["frames_sent"] += 1
                self.stats["sends"] += 1
        if broken:
            self._ring_broken(ring)
            return False
        self._ring_bell(ring, urgent)
        return True

    def _ring_bell(self, ring: RingWriter, urgent: bool) -> None:
        """Ring the VRA's doorbell if it sleeps (or naps and ``urgent`` or the ring is filling). Called after
        the publishing lock was released: that release is the fence between storing head and reading the
        VRA's state."""
        with self._bell_lock:
            if self._ring is not ring or not self._ring_live:
                return
            word = ring.bell_word()
            if word == self._rang or not ring.wants_bell(word, urgent):
                return
            self._rang = word
            sock = self._sock  # None once the connection broke (set under the other lock)
            if sock is None:
                return
            try:
                sock.send(b"\0", socket.MSG_DONTWAIT)
            except OSError:  # full: bells are pending anyway; broken: the ack thread sees it
                pass

    def _ring_broken(self, ring: RingWriter) -> None:
        with self._lock:
            gen = self._gen if self._ring is ring else -1
        self._disconnected(gen, "the VRA corrupted the split ring's counters")

    def submit_zero(self, volume: str, offset: int, length: int) -> None:
        """A range now reads as zeroes (WRITE_ZEROES or TRIM): queue a ZERO frame or mark it dirty."""
        vol = self._vol_bytes.get(volume) or volume.encode()
        if not self._ring_frame(lambda seq: sp.encode_zero(vol, seq, offset, length), False):
            self._queue_zero(volume, offset, length)  # no ring (socket stream), or no room in it (dirty map)

    def _queue_zero(self, volume: str, offset: int, length: int) -> None:
        with self._lock:
            if self._ring is not None and self._connected:  # the ring had no room (or was attached meanwhile)
                put = False
            else:
                put = self._connected and self._charged + _FRAME_COST <= self.queue_bytes
            seq = self._seq
            self._seq = seq + 1
            if put:
                self._queue.append((sp.ZERO, seq, volume, offset, length, None))
                self._charged += _FRAME_COST
                if self._sender_waiting:
                    self._cond.notify()
                return
            self.stats["diverted_writes"] += 1
            self.stats["diverted_bytes"] += length
            self.dirty.add(volume, offset, length)

    def mark_dirty(self, volume: str, offset: int, length: int) -> None:
        """A write failed part way: the range may have changed, so it must be resent by a bitmap sync."""
        with self._lock:
            self.dirty.add(volume, offset, length)

    def mark(self, checkpoint_id: str, volumes: list[str]) -> bool:
        """Queue a MARK behind every write submitted so far. False: no VRA attached, or the queue is full."""
        in_ring = self._ring_frame(lambda seq: sp.encode_mark(checkpoint_id, volumes, seq), True)
        if in_ring is not None:
            if in_ring:
                with self._lock:
                    self.stats["marks"] += 1
            return in_ring
        with self._lock:
            if not self._connected or self._ring is not None or self._charged + _FRAME_COST > self.queue_bytes:
                return False
            seq = self._seq
            self._seq = seq + 1
            self._queue.append((sp.MARK, seq, None, 0, 0, sp.encode_mark(checkpoint_id, volumes, seq)))
            self._charged += _FRAME_COST
            self.stats["marks"] += 1
            if self._sender_waiting:
                self._cond.notify()
            return True

    # -- dirty map access (control socket) ---------------------------------------------------------------
    def is_dirty(self, volumes: list[str] | None = None) -> bool:
        with self._lock:
            if self._folding:
                return True
            names = self.dirty.volumes()
            return bool(names) if volumes is None else any(v in names for v in volumes)

    def dirty_extents(self, volume: str, clear: bool = False) -> tuple[list[tuple[int, int]], int]:
        """(extents, over-coverage) of ``volume``; ``clear`` removes them in the same step."""
        with self._lock:
            over = self.dirty.volume_over_coverage(volume)
            return (self.dirty.take(volume) if clear else self.dirty.extents(volume)), over

    def dirty_summary(self, volume: str) -> tuple[int, int]:
        """(dirty bytes, over-coverage) of ``volume``."""
        with self._lock:
            return self.dirty.covered_bytes(volume), self.dirty.volume_over_coverage(volume)

    def snapshot(self) -> dict:
        """Counters and state, consistent with each other."""
        with self._lock:
            state = "connected" if self._connected else ("disconnected" if self.address else "none")
            frames, nbytes = len(self._queue) + sum(len(b[2]) for b in self._inflight), self._charged
            if self._ring is not None:
                try:
                    nbytes, frames = self._ring.refresh()
                except RingCorrupt:  # the next ACK or write drops the connection
                    pass
            transport = None if not self._connected else "socket" if self._ring is None else "ring"
            return {**self.stats, "vra": state, "vra_address": self.address, "next_seq": self._seq,
                    "transport": transport,
                    "queue_frames": frames, "queue_bytes": nbytes, "queue_budget": self.queue_bytes,
                    "dirty_bytes": self.dirty.covered_bytes(), "dirty_extents": self.dirty.extent_count,
                    "over_coverage": self.dirty.over_coverage, "dirty_memory_bytes": self.dirty.memory_bytes,
                    "folding": self._folding > 0}

    @property
    def connected(self) -> bool:
        return self._connected

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.address is None:
            return
        t = threading.Thread(target=self._run, name="split-sender", daemon=True)
        self._threads.append(t)
        t.start()

    def wait_connected(self, timeout: float) -> bool:
        """Wait until a VRA is attached and, if a ring was offered, has taken or declined it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connected or (self._ring is not None and not self._ring_live):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def wait_drained(self, timeout: float) -> bool:
        """Wait until everything queued was acknowledged (or the VRA went away); True if drained."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._connected and (self._queue or self._inflight or self._ring_pending()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05) if self._ring is not None else left)  # the ring's tail: polled
            return not (self._queue or self._inflight or self._folding or self._ring_pending())

    def _ring_pending(self) -> bool:
        """Frames in the ring the VRA has not consumed (lock held)."""
        if self._ring is None:
            return False
        try:
            return self._ring.refresh()[0] > 0
        except RingCorrupt:
            return True

    def stop(self, drain_timeout_s: float = 2.0) -> None:
        """Give the VRA ``drain_timeout_s`` to acknowledge what is queued, then disconnect; anything still
        unacknowledged goes to the dirty map (which the caller then saves)."""
        self.wait_drained(drain_timeout_s)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._stop_event.set()
        self._disconnected(self._gen, "filter stopping")
        for t in self._threads:
            t.join()
        self._threads.clear()

    # -- sender --------------------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = self._retry_s[0]
        while not self._stopping:
            attached = self._connect()
            if attached is None:
                if self._stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, self._retry_s[1])
                continue
            sock, gen, acks, ringed = attached
            began = time.monotonic()
            if ringed:
                self._wait_ring(gen)
            else:
                self._pump(sock, gen)
            self._disconnected(gen, "sender stopped")
            acks.join()
            sock.close()  # only now: no thread of this connection can touch the descriptor any more
            if time.monotonic() - began >= 1.0:
                backoff = self._retry_s[0]
            elif not self._stopping:  # a VRA that drops us at once (e.g. a protocol mismatch): no busy loop
                if self._stop_event.wait(backoff):
                    return
                backoff = min(backoff * 2, self._retry_s[1])

    def _connect(self) -> tuple[socket.socket, int, threading.Thread, bool] | None:
        family, sockaddr = sp.parse_address(self.address)
        sock = socket.socket(family, socket.SOCK_STREAM)
        ring, registered = None, False
        try:
            sock.settimeout(self._connect_timeout_s)
            sock.connect(sockaddr)
            sock.settimeout(None)
            # room for a whole NBD batch (e.g. 8 x 64 KiB), so the inline send rarely leaves a rest to copy
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            elif self.use_ring and split_ring.supported():
                try:
                    ring = RingWriter(*_ring_shape(self.queue_bytes))
                except OSError as exc:
                    log.warning("cannot create a split ring (%s); the split stream goes over the socket", exc)
            with self._cond:
                if self._stopping:
                    sock.close()
                    if ring is not None:
                        ring.close()
                    return None
                first_seq = self._seq
                self._gen += 1
                self._connected = True
                self._sending = True  # HELLO goes out before any frame: writes meanwhile are queued
                self._sock = sock
                self._ring, self._ring_live, self._rang = ring, False, -1  # with a ring: writes go there
                registered = True  # from now on the ring is closed by whoever takes it out of self._ring
                self.stats["connects"] += 1
                gen = self._gen
            try:
                hello = sp.encode_hello(self.filter_id, self.volumes, first_seq,
                                        *((ring.size, ring.data_size) if ring is not None else ()))
                if ring is not None:
                    sent = sock.sendmsg([hello], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [ring.fd]))])
                    sock.sendall(hello[sent:])
                    ring.close_fd()
                else:
                    sock.sendall(hello)
            finally:
                with self._cond:
                    self._sending = False
                    self._cond.notify_all()
            if ring is not None:
                if self._await_accept(sock):
                    with self._cond:
                        self._ring_live = self._ring is ring
                        self._cond.notify_all()
                else:
                    self._decline_ring(ring)
                    ring = None
        except OSError as exc:
            log.debug("VRA at %s not reachable: %s", self.address, exc)
            if self._sock is sock:
                self._disconnected(self._gen, f"HELLO failed: {exc}")
            elif ring is not None and not registered:
                ring.close()
            sock.close()
            return None
        log.info("split stream to VRA %s connected (first seq %d, %s)", self.address, first_seq,
                 "shared ring" if ring is not None else "socket")
        acks = threading.Thread(target=self._ack_loop, args=(sock, gen), name="split-acks", daemon=True)
        acks.start()
        return sock, gen, acks, ring is not None

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
            self._folding += 1
        with self._bell_lock:
            pass
        try:
            self._fold([f for f in ring.unconsumed() if f[0] != sp.MARK])
        finally:
            with self._cond:
                ring.close()
                self._folding -= 1
                self._cond.notify_all()

    def _wait_ring(self, gen: int) -> None:
        """With a ring, the sender has nothing to send: it waits for the connection's end."""
        with self._cond:
            while self._gen == gen and self._connected and not self._stopping:
                self._cond.wait()

    def _pump(self, sock: socket.socket, gen: int) -> None:
        vol_bytes = self._vol_bytes
        write_prefix, encode_zero = sp.write_prefix, sp.encode_zero
        while True:
            with self._cond:
                while ((self._sending or (not self._queue and self._head is None))
                       and self._gen == gen and self._connected and not self._stopping):
                    self._sender_waiting = True
                    self._cond.wait()
                    self._sender_waiting = False
                if self._gen != gen or not self._connected or self._sending or (
                        not self._queue and self._head is None):
                    return
                self._sending = True
                parts = []
                if self._head is not None:
                    parts.append(self._head)
                    self._head = None
                queue = self._queue
                batch = []
                size = charged = 0
                while queue and size < _BATCH_BYTES and len(batch) < _BATCH_FRAMES:
                    frame = queue.popleft()
                    batch.append(frame)
                    size += frame[4]
                    charged += frame[4] + _FRAME_COST if frame[0] == sp.WRITE else _FRAME_COST
                if batch:
                    self._inflight.append((batch[-1][1], charged, batch))
            for kind, seq, volume, offset, length, payload in batch:
                if kind == sp.WRITE:
                    parts.append(write_prefix(vol_bytes.get(volume) or volume.encode(), seq, offset, length))
                    parts.append(payload)
                elif kind == sp.ZERO:
                    parts.append(encode_zero(vol_bytes.get(volume) or volume.encode(), seq, offset, length))
                else:
                    parts.append(payload)
            try:
                total = _sendmsg_all(sock, parts)
            except OSError as exc:
                with self._cond:
                    self._sending = False
                self._disconnected(gen, f"send failed: {exc}")
                return
            with self._cond:
                self._sending = False
                self.stats["frames_sent"] += len(batch)
                self.stats["bytes_sent"] += total
                self.stats["sends"] += 1

    def _ack_loop(self, sock: socket.socket, gen: int) -> None:
        header = sp.HEADER
        pending = b""
        reason = "VRA closed the connection"
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                pending += chunk
                n = len(pending) - len(pending) % header.size
                last = None
                for pos in range(0, n, header.size):
                    magic, ftype, _f, _v, seq, length = header.unpack_from(pending, pos)
                    if magic != sp.MAGIC or ftype != sp.ACK or length:
                        raise SplitProtocolError(f"unexpected frame type {ftype} from the VRA")
                    last = seq
                pending = pending[n:]
                if last is not None:
                    self._acked(last)
        except (OSError, SplitProtocolError) as exc:
            reason = str(exc)
        self._disconnected(gen, reason)

    def _acked(self, seq: int) -> None:
        corrupt = None
        with self._cond:
            if self._ring is not None:
                try:
                    self._ring.refresh()
                except RingCorrupt:
                    corrupt = self._ring
            inflight = self._inflight
            while inflight and inflight[0][0] <= seq:
                self._charged -= inflight.popleft()[1]
            self.stats["acked_seq"] = seq
            self.stats["acks"] += 1
            if not inflight and not self._queue:
                self._cond.notify_all()
        if corrupt is not None:
            self._ring_broken(corrupt)

    def _disconnected(self, gen: int, reason: str) -> None:
        """Connection ``gen`` is gone: everything unacknowledged goes to the dirty map. Idempotent."""
        with self._cond:
            if gen != self._gen or not self._connected:
                return
            self._connected = False
            sock, self._sock = self._sock, None
            ring, self._ring, self._ring_live = self._ring, None, False
            lost = [f for _, _, batch in self._inflight for f in batch]
            lost.extend(self._queue)
            self._inflight.clear()
            self._queue = deque()
            self._head = None
            self._charged = 0
            self._folding += 1
            self.stats["disconnects"] += 1
            self._cond.notify_all()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        lost_track = False
        if ring is not None:
            with self._bell_lock:  # no doorbell decision is still reading the ring
                pass
            try:
                lost.extend(ring.unconsumed())
            except RingCorrupt as exc:
                lost_track = True
                reason = f"{reason}; {exc}"
            with self._lock:  # against give_back_slab: the ring unmaps when its last slab comes back
                ring.close()
        lost = [f for f in lost if f[0] != sp.MARK]
        log.log(logging.WARNING if lost or not self._stopping else logging.INFO,
                "split stream to VRA %s closed (%s): %d unacknowledged frames go to the dirty map",
                self.address, reason, len(lost))
        try:
            self._fold(lost)
        finally:
            with self._cond:
                self._folding -= 1
                self._cond.notify_all()
        if lost_track:
            log.error("the VRA at %s corrupted the split ring: which writes it missed is unknown, every volume "
                      "of this filter needs a delta sync", self.address)
            if self._on_lost is not None:
                self._on_lost()

    def _fold(self, frames: list) -> None:
        """Record WRITE and ZERO frames ``(kind, seq, volume, offset, length, ...)`` in the dirty map, a chunk
        at a time so a VM write never waits behind a long fold."""
        for i in range(0, len(frames), _FOLD_CHUNK):
            with self._lock:
                for frame in frames[i:i + _FOLD_CHUNK]:
                    self.dirty.add(frame[2], frame[3], frame[4])


def _ring_shape(queue_bytes: int) -> tuple[int, int]:
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
