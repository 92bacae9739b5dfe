"""The filter side of the split: writes in seq order to the local VRA (by shared ring or socket), or dirty.

The NBD connection thread calls `submit_writes` after the local write succeeded. That call never blocks on
the VRA: it takes one short lock, numbers the writes with the split stream's seq and hands them to the
connection's transport, or, when no VRA is attached or there is no room, records the extents in the dirty
map. ``mark`` and ``submit_zero`` take seqs in the same order.

``Splitter`` owns the sequence, the connection and its lifecycle: a sender thread connects to the VRA
(retrying with backoff), sends HELLO (offering a ring over a unix socket), then runs the transport; an ack
thread reads the VRA's cumulative ACKs and releases what they cover. When the connection breaks (the VRA
was killed, or `stop`), everything not acknowledged is folded into the dirty map. The rest is in its bases,
one module each, all on this class's state and lock:

- ``split_ring_path.RingPath``: the shared-memory ring (split_ring.py), its slabs and doorbell. Until the VRA
  answers the offer, writes go to the ring; an older VRA that never answers (or one that declines) gets the
  socket stream and those writes go to the dirty map.
- ``split_socket_path.SocketPath``: frames over the socket: the inline send, the queue and its budget, the
  sender's batches.
- ``split_fold.DirtyFold``: the dirty map: folding what the VRA missed, and the control socket's access.

Locking: one lock (``_lock``, with its Condition ``_cond``) guards the seq, the connection state, the queue,
the counters and the dirty map; no socket call is made while it is held. A ring has a lock of its own (a C
mutex shared with the compiled write path, native/zwrite.c, taken inside this one): its frames, its seq while
it is attached, and its doorbell.
"""

from __future__ import annotations

import array
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
from vra_appliance.iofilter.split_fold import DirtyFold
from vra_appliance.iofilter.split_ring import RingWriter
from vra_appliance.iofilter.split_ring_path import RingPath, ring_shape
from vra_appliance.iofilter.split_socket_path import FRAME_COST, SocketPath

log = logging.getLogger(__name__)

_SNDBUF = 4 * 1024 * 1024


class Splitter(RingPath, SocketPath, DirtyFold):
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
        with self._lock:
            ring = self._ring if self._connected else None
            if ring is not None:
                broken = self._ring_writes(ring, writes)
            else:
                inline = self._stream_writes(writes)
                if inline is None:
                    return
        if ring is not None:
            if broken:
                self._ring_broken(ring)
            else:
                self._ring_bell(ring, False)
            return
        self._send_inline(*inline)

    def submit_zero(self, volume: str, offset: int, length: int) -> None:
        """A range now reads as zeroes (WRITE_ZEROES or TRIM): queue a ZERO frame or mark it dirty."""
        vol = self._vol_bytes.get(volume) or volume.encode()
        if not self._ring_frame(lambda seq: sp.encode_zero(vol, seq, offset, length), False):
            self._queue_zero(volume, offset, length)  # no ring (socket stream), or no room in it (dirty map)

    def mark(self, checkpoint_id: str, volumes: list[str]) -> bool:
        """Queue a MARK behind every write submitted so far. False: no VRA attached, or the queue is full."""
        in_ring = self._ring_frame(lambda seq: sp.encode_mark(checkpoint_id, volumes, seq), True)
        if in_ring is not None:
            if in_ring:
                with self._lock:
                    self.stats["marks"] += 1
            return in_ring
        with self._lock:
            if not self._connected or self._ring is not None or self._charged + FRAME_COST > self.queue_bytes:
                return False
            seq = self._seq
            self._seq = seq + 1
            self._queue.append((sp.MARK, seq, None, 0, 0, sp.encode_mark(checkpoint_id, volumes, seq)))
            self._charged += FRAME_COST
            self.stats["marks"] += 1
            if self._sender_waiting:
                self._cond.notify()
            return True

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
            stats = dict(self.stats)
            if self._ring is not None:
                for name, value in self._ring.native_stats().items():
                    stats[name] += value
            return {**stats, "vra": state, "vra_address": self.address,
                    "next_seq": self._seq if self._ring is None else self._ring.seq,
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
                    ring = RingWriter(*ring_shape(self.queue_bytes))
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
                self._ring, self._ring_live = ring, False  # with a ring: writes go there
                if ring is not None:
                    ring.attach(first_seq)  # the ring numbers the writes from now on
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
                        if self._ring_live:
                            ring.set_bell(sock.fileno())
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
            if ring is not None:
                self._seq = ring.detach()  # no writer publishes into it any more; the stream goes on from here
                self._count_native(ring)
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
