"""The protect role of one VPG on one VRA: the filters' writes -> a sequenced, batched, compressed stream.

Data path (the split listener's threads call ``on_write`` / ``on_mark``; one sender thread runs
``sync_once``):

1. ``on_write`` stamps the write (wall clock, ns) and queues it in the local ``Aligner`` (one input per IO
   filter), unless the VPG's buffer is full: then the extent goes to ``dropped`` and the VPG needs a bitmap
   sync. It never blocks: a slow link must not slow the VMs, and a filter serves several VPGs.
2. ``on_mark`` queues a filter's checkpoint marker; the aligner holds that filter's later writes until
   every local filter of the checkpoint reached its marker and the coordinator's decision arrived
   (``commit_checkpoint``); then one marker goes into the VRA's stream.
3. ``sync_once`` connects when needed (Hello; the receiver's Welcome says where to resume), takes what the
   aligner lets out, numbers it with the stream seq, seals batches of about ``batch_bytes`` or after
   ``batch_delay`` (a marker seals at once), compresses at the adaptive level (or not at all), keeps each
   batch in the resend buffer and sends it. Acks drop batches from the buffer. After a lost connection or a
   refusal it reconnects with back-off and resends everything unacknowledged, in order; the receiver
   ignores what it already has, so nothing is applied twice and nothing is skipped.

Stream seqs are per (VPG, protect VRA); the recovery VRA gives the VPG-wide sequence (docs/FORMAT.md).
A fresh engine holds no seq until the first Welcome: it continues from the receiver's durable seq.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from vra_appliance.errors import ApplianceError, TransientError
from vra_appliance.protect.compression import AdaptiveLevel
from vra_appliance.protect.dirty import ExtentMap
from vra_appliance.stream.aligner import Aligner, Checkpoint, Dropped, Item, Mark
from vra_appliance.stream.transport import (
    GAP,
    Ack,
    Hello,
    Refused,
    Transport,
)
from vra_appliance.stream.wire import CODEC_NONE, CODEC_ZSTD, Batch, StreamMarker, StreamWrite, seal
from zvr_common.loop import Loop

log = logging.getLogger(__name__)

_MARKER_COST = 64  # bytes a marker counts for in the buffer


@dataclass
class _Write:
    timestamp_ns: int
    volume: str
    offset: int
    data: bytes


@dataclass
class _Marker:
    timestamp_ns: int
    checkpoint_id: str
    tag: str
    consistent: bool
    participants: tuple[str, ...]


@dataclass
class _Sent:
    batch: Batch
    future: Future | None = None  # None: not sent on the current connection


@dataclass
class ProtectSettings:
    compression: bool = True
    buffer_bytes: int = 256 << 20
    batch_bytes: int = 1 << 20
    batch_delay: float = 0.005
    max_inflight_bytes: int = 32 << 20
    backoff_min: float = 0.05
    backoff_max: float = 2.0
    permanent_backoff: float = 5.0
    local_align_timeout: float = 10.0
    # Extents of writes let go (buffer full, stream reset) kept per volume; past it neighbours merge.
    dropped_max_extents: int = 4096
    # A sync's pushes may fill the buffer only up to this share of it: the rest is for the VMs' writes, so
    # a sync does not push them into the dirty map.
    sync_buffer_share: float = 0.5


@dataclass
class _Counters:
    writes: int = 0
    bytes: int = 0
    batches: int = 0
    resent_batches: int = 0
    raw_bytes_sent: int = 0
    wire_bytes_sent: int = 0
    dropped_writes: int = 0
    dropped_bytes: int = 0
    resync_writes: int = 0
    resync_bytes: int = 0
    reconnects: int = 0
    recovery_journal_lost: int = 0  # Welcomes that said the recovery side lost acknowledged records
    refusals: dict = field(default_factory=dict)
    compress_s: float = 0.0
    send_wait_s: float = 0.0


class ProtectedVpg:
    """See the module docstring. ``transport`` is already wrapped (throttle, metrics) by the caller."""

    def __init__(
        self,
        vpg: str,
        vra_id: str,
        transport: Transport,
        *,
        volumes: set[str] | frozenset[str],
        settings: ProtectSettings | None = None,
        level: AdaptiveLevel | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.vpg = vpg
        self.vra_id = vra_id
        self.transport = transport
        self.volumes = frozenset(volumes)
        self.settings = settings or ProtectSettings()
        self.level = level or AdaptiveLevel()
        self._clock, self._wall_ns = clock, wall_ns
        self._cv = threading.Condition()
        self._aligner = Aligner()
        self._aligner_ts: dict[str, deque[int]] = {}  # per filter: timestamps of writes in the aligner
        self._unsealed: deque[_Write | _Marker] = deque()
        self._unsealed_bytes = 0
        self._unsealed_since: float | None = None
        self._aligned_bytes = 0
        self._buffer: deque[_Sent] = deque()  # sealed, not acknowledged, in seq order
        self._buffer_bytes = 0
        self._next_seq: int | None = None
        self.acked_seq = 0
        self.connected = False
        self.state = "connecting"
        self.error = ""
        self._retry_at = 0.0
        self._backoff = self.settings.backoff_min
        self.dropped = ExtentMap(self.settings.dropped_max_extents)
        self.needs_bitmap_sync = False
        # The recovery side lost records it had acknowledged (its journal was discarded): only a delta sync
        # makes the replica right. Set by ``_connect``, taken by the sync runner (``take_delta_need``).
        self.needs_delta_sync = False
        self._journal_epoch = ""  # the recovery journal's epoch of the last Welcome ("" = unknown)
        # Wall time of the last stream reset (GAP): a marker decided before it but sent after it follows a
        # journal that lacks the writes the reset dropped, so it goes out as not consistent.
        self._reset_ns = 0
        self.paused = False  # the user's pause: behave as if the link were down
        self._syncing = False
        self._filter_of: dict[str, str] = {}  # volume -> the filter (aligner input) that carries its writes
        self._marker_seqs: dict[str, int] = {}
        self.counters = _Counters()
        # The sender: woken by a kick (a write queued, an ack, a reconnect due); otherwise at the next
        # deadline it computes (a batch falls due, a retry), at most a second apart.
        self._loop = Loop(f"protect-{vpg}", 1.0, target=self._send_pass, delay=self._next_wakeup_locked,
                          max_backoff=1.0, logger=log)

    # -- from the split listener (any filter thread) -------------------------------------------------------
    def on_write(self, filter_id: str, volume: str, offset: int, data: bytes) -> None:
        with self._cv:
            self._queue_write(filter_id, volume, offset, data)

    def _queue_write(self, filter_id: str, volume: str, offset: int, data: bytes) -> None:
        """Queue a write in the filter's aligner input, or (buffer full) record its extent in ``dropped``."""
        if self._held_bytes() + len(data) > self.settings.buffer_bytes:
            self.dropped.add(volume, offset, len(data))
            if not self.needs_bitmap_sync:
                log.warning("VPG %s: replication buffer full; writes go to the dirty map, bitmap sync needed",
                            self.vpg)
            self.needs_bitmap_sync = True
            self.counters.dropped_writes += 1
            self.counters.dropped_bytes += len(data)
            return
        ts = self._wall_ns()
        self._aligner.push(filter_id, _Write(ts, volume, offset, data), self._clock())
        self._aligner_ts.setdefault(filter_id, deque()).append(ts)
        self._aligned_bytes += len(data)
        self.counters.writes += 1
        self.counters.bytes += len(data)
        self._kick()

    def on_mark(self, filter_id: str, checkpoint_id: str) -> None:
        with self._cv:
            self._aligner.push(filter_id, Mark(checkpoint_id), self._clock())
            self._kick()

    def on_filter_gap(self, filter_id: str) -> None:
        """The filter skipped writes (they went to its dirty map): the VPG needs a bitmap sync."""
        with self._cv:
            if not self.needs_bitmap_sync:
                log.warning("VPG %s: filter %s recorded writes in its dirty map; bitmap sync needed",
                            self.vpg, filter_id)
            self.needs_bitmap_sync = True

    def attach_filter(self, filter_id: str, volumes) -> None:
        """``filter_id`` serves these volumes (from its split stream's hello)."""
        with self._cv:
            for v in volumes:
                if v in self.volumes:
                    self._filter_of[v] = filter_id

    # -- hooks for the syncs (vra_appliance/sync) ----------------------------------------------------------------
    def set_syncing(self, syncing: bool) -> None:
        """A sync (initial, bitmap, delta) is running or pending: checkpoints meanwhile are not consistent.
        False: they are again, unless a bitmap sync is needed (``needs_bitmap_sync``, or extents in
        ``dropped``)."""
        with self._cv:
            self._syncing = syncing

    @property
    def not_consistent(self) -> bool:
        """A checkpoint now would not be consistent: a sync is needed or running, writes were let go, or
        replication is paused."""
        with self._cv:
            return (self.needs_bitmap_sync or self.needs_delta_sync or self._syncing or bool(self.dropped)
                    or self.paused)

    def set_paused(self, paused: bool) -> None:
        """The user's pause: the sender closes the stream and sends nothing until resumed; writes are kept
        as during a link cut (the buffer, then the dirty map when it is full). Resume reconnects at once;
        what was kept is resent, the dirty extents by a bitmap sync."""
        with self._cv:
            if paused == self.paused:
                return
            self.paused = paused
            if paused:
                self.state, self.error = "paused", ""
            else:
                self.state, self.error = "connecting", ""
                self._retry_at = 0.0
                self._backoff = self.settings.backoff_min
            self._kick()
        log.info("VPG %s: replication %s", self.vpg, "paused" if paused else "resumed")

    def take_bitmap_need(self) -> bool:
        """Whether writes went to a dirty map since the last call (buffer full, stream reset, a filter's gap).
        Taking it clears it and marks the VPG syncing in the same step, so no checkpoint in between is
        recorded as consistent; the caller now owns running the bitmap sync."""
        with self._cv:
            needed = self.needs_bitmap_sync or bool(self.dropped)
            if needed:
                self.needs_bitmap_sync = False
                self._syncing = True
            return needed

    def take_delta_need(self) -> bool:
        """Whether the recovery side lost what it had acknowledged since the last call (its journal was
        discarded). Taking it clears it and marks the VPG syncing in the same step; the caller now owns
        running a delta sync of every volume."""
        with self._cv:
            needed = self.needs_delta_sync
            if needed:
                self.needs_delta_sync = False
                self._syncing = True
            return needed

    def mark_needs_bitmap_sync(self, why: str) -> None:
        """Something outside the stream went to a dirty map (a filter answered a freeze with ``dirty``)."""
        with self._cv:
            if not self.needs_bitmap_sync:
                log.info("VPG %s: %s; bitmap sync needed", self.vpg, why)
            self.needs_bitmap_sync = True
            self._kick()

    def wait_room(self, nbytes: int, timeout: float) -> bool:
        """Wait until ``nbytes`` more fit in the sync's share of the buffer; False after ``timeout`` (or if
        they never can)."""
        limit = self._sync_limit()
        if nbytes > limit:
            return False
        deadline = self._clock() + timeout
        with self._cv:
            while self._held_bytes() + nbytes > limit:
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.1))
            return True

    def _sync_limit(self) -> int:
        return max(1, int(self.settings.buffer_bytes * self.settings.sync_buffer_share))

    def resync_write(self, volume: str, offset: int, length: int, read: Callable[[int, int], bytes],
                     timeout: float = 0.0) -> bool:
        """Read ``length`` bytes at ``offset`` of the source volume and queue them as a write, atomically
        with respect to the filters' writes (no write of the volume's filter is queued in between, so the
        newer of the two always lands last). Waits up to ``timeout`` for room in the sync's share of the
        buffer, checked under the same lock as the queueing (a VM write cannot take the room in between).
        False: no room in time; nothing was read or queued, and the caller still owns the range."""
        if length > self._sync_limit():
            return False
        deadline = self._clock() + timeout
        with self._cv:
            while self._held_bytes() + length > self._sync_limit():
                left = deadline - self._clock()
                if left <= 0 or self._loop.stopping:
                    return False
                self._cv.wait(min(left, 0.1))
            data = read(offset, length)
            self._queue_write(self._filter_of.get(volume, f"sync:{volume}"), volume, offset, data)
            self.counters.resync_writes += 1
            self.counters.resync_bytes += len(data)
            return True

    def take_dropped(self, volume: str) -> list[tuple[int, int]]:
        """The extents let go for ``volume``, removed from the map (a bitmap sync sends them)."""
        with self._cv:
            extents = self.dropped.extents(volume)
            self.dropped.clear(volume)
            return extents

    def add_dropped(self, volume: str, extents) -> None:
        """Give extents back (a sync that could not send them); the VPG needs a bitmap sync."""
        with self._cv:
            for off, length in extents:
                self.dropped.add(volume, off, length)
            self.needs_bitmap_sync = True

    def held_extents(self) -> list[tuple[str, int, int]]:
        """Every write this engine holds that the recovery VRA has not acknowledged (for a stopped engine
        whose role is replaced: the new engine takes them as dropped extents, a bitmap sync sends them)."""
        with self._cv:
            out = [x for e in self._buffer for x in e.batch.write_extents]
            out += [(r.volume, r.offset, len(r.data)) for r in self._unsealed if isinstance(r, _Write)]
            for input_id in list(self._aligner_ts):
                out += [(v.volume, v.offset, len(v.data)) for v in self._aligner.reset_input(input_id)
                        if isinstance(v, _Write)]
            for volume in self.dropped.volumes():
                out += [(volume, o, n) for o, n in self.dropped.extents(volume)]
            return out

    # -- checkpoints (from the control service) --------------------------------------------------------------
    def commit_checkpoint(
        self,
        checkpoint_id: str,
        filters: set[str],
        *,
        tag: str = "",
        consistent: bool = True,
        participants: tuple[str, ...] = (),
    ) -> None:
        """The coordinator's decision: once ``filters`` all reached their MARK, place the VRA's marker."""
        with self._cv:
            info = _Marker(
                self._wall_ns(), checkpoint_id, tag,
                consistent and not self.needs_bitmap_sync and not self._syncing and not self.dropped,
                tuple(participants) or (self.vra_id,),
            )
            if filters:
                self._aligner.decide(checkpoint_id, filters, info)
            else:
                # No local filter marked: the marker still goes in, after what already arrived (the
                # coordinator then records the checkpoint as not consistent).
                self._aligner.abort(checkpoint_id)
                self._drain_aligner()
                self._unsealed_append(info, 0)
            self._kick()

    def abort_checkpoint(self, checkpoint_id: str) -> None:
        with self._cv:
            self._aligner.abort(checkpoint_id)
            self._kick()

    def marker_seq(self, checkpoint_id: str) -> int | None:
        with self._cv:
            return self._marker_seqs.get(checkpoint_id)

    def wait_marker_durable(self, checkpoint_id: str, timeout: float) -> bool:
        """Wait until the VRA's marker of the checkpoint is acknowledged by the recovery VRA."""
        deadline = self._clock() + timeout
        with self._cv:
            while True:
                seq = self._marker_seqs.get(checkpoint_id)
                if seq is not None and self.acked_seq >= seq:
                    return True
                left = deadline - self._clock()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))

    # -- the sender ----------------------------------------------------------------------------------------------
    def sync_once(self) -> int:
        """One round of the sender: reconnect if due, collect acks, seal and send. Returns batches sent."""
        if self.paused:
            if self.connected:
                self._disconnect(TransientError("replication paused by the user"))
            with self._cv:
                if self.paused:
                    self.state, self.error = "paused", ""
            return 0
        self._collect()
        if not self.connected:
            if self._clock() < self._retry_at:
                return 0
            self._connect()
            if not self.connected:
                return 0
        self._drain_aligner()
        sent = self._resend()
        while not self._loop.stopping:
            records = self._take_batch()
            if records is None:
                break
            if not self._seal_and_send(records):
                break
            sent += 1
        self._collect()
        return sent

    def _kick(self) -> None:
        self._cv.notify_all()
        self._loop.wake()

    def _window_full(self) -> bool:
        inflight = sum(e.batch.wire_bytes for e in self._buffer if e.future is not None)
        return inflight >= self.settings.max_inflight_bytes

    def _held_bytes(self) -> int:
        return self._aligned_bytes + self._unsealed_bytes + self._buffer_bytes

    def _unsealed_append(self, rec: _Write | _Marker, nbytes: int) -> None:
        if not self._unsealed:
            self._unsealed_since = self._clock()
        self._unsealed.append(rec)
        self._unsealed_bytes += nbytes

    def _drain_aligner(self) -> None:
        with self._cv:
            now = self._clock()
            self._aligner.expire(now, self.settings.local_align_timeout)
            for out in self._aligner.pop(now):
                if isinstance(out, Item):
                    w: _Write = out.value
                    self._aligner_ts[out.input_id].popleft()
                    self._aligned_bytes -= len(w.data)
                    self._unsealed_append(w, len(w.data))
                elif isinstance(out, Checkpoint):
                    info: _Marker = out.info
                    self._unsealed_append(info, 0)
                elif isinstance(out, Dropped):
                    pass

    def _take_batch(self) -> list | None:
        """Number and take the records of the next batch, if one is due (under the byte/time limits)."""
        with self._cv:
            if not self._unsealed or self._next_seq is None or not self.connected:
                return None
            if self._window_full():
                return None
            has_marker = any(isinstance(r, _Marker) for r in self._unsealed)
            age = self._clock() - (self._unsealed_since or 0.0)
            if self._unsealed_bytes < self.settings.batch_bytes and age < self.settings.batch_delay and not has_marker:
                return None
            out = []
            size = 0
            while self._unsealed and (not out or size + _size(self._unsealed[0]) <= self.settings.batch_bytes):
                rec = self._unsealed.popleft()
                seq = self._next_seq
                self._next_seq += 1
                if isinstance(rec, _Write):
                    out.append(StreamWrite(seq, rec.timestamp_ns, rec.volume, rec.offset, rec.data))
                    size += len(rec.data)
                    self._unsealed_bytes -= len(rec.data)
                else:
                    consistent = rec.consistent and rec.timestamp_ns > self._reset_ns
                    out.append(
                        StreamMarker(seq, rec.timestamp_ns, rec.checkpoint_id, rec.tag, consistent, rec.participants)
                    )
                    self._marker_seqs[rec.checkpoint_id] = seq
                    size += _MARKER_COST
            self._unsealed_since = self._clock() if self._unsealed else None
            return out

    def _seal_and_send(self, records: list) -> bool:
        t0 = time.perf_counter()
        codec = CODEC_ZSTD if self.settings.compression else CODEC_NONE
        batch = seal(self.vpg, records, codec=codec, level=self.level.level)
        t1 = time.perf_counter()
        entry = _Sent(batch)
        with self._cv:
            self._buffer.append(entry)
            self._buffer_bytes += batch.wire_bytes
            self.counters.batches += 1
            self.counters.raw_bytes_sent += batch.uncompressed_size
            self.counters.wire_bytes_sent += batch.wire_bytes
        ok = self._send(entry)
        t2 = time.perf_counter()
        self.counters.compress_s += t1 - t0
        self.counters.send_wait_s += t2 - t1
        if self.settings.compression:
            self.level.observe(t1 - t0, t2 - t1, t2 - t0)
        return ok

    def _send(self, entry: _Sent) -> bool:
        try:
            fut = self.transport.send(entry.batch)
        except ApplianceError as exc:
            self._disconnect(exc)
            return False
        with self._cv:
            entry.future = fut
        fut.add_done_callback(lambda _f: self._wake())
        return True

    def _wake(self) -> None:
        with self._cv:
            self._kick()

    def _resend(self) -> int:
        """Send the buffered batches not sent on this connection (after a reconnect), in order."""
        n = 0
        while True:
            with self._cv:
                entry = next((e for e in self._buffer if e.future is None), None)
            if entry is None or not self.connected:
                return n
            if not self._send(entry):
                return n
            n += 1
            self.counters.resent_batches += 1

    def _collect(self) -> None:
        """Drop acknowledged batches; on a failed future, disconnect."""
        failure: BaseException | None = None
        with self._cv:
            while self._buffer and self._buffer[0].future is not None and self._buffer[0].future.done():
                fut = self._buffer[0].future
                exc = fut.exception()
                if exc is not None:
                    failure = exc
                    break
                ack: Ack = fut.result()
                self._ack(ack.durable_seq)
        if failure is not None:
            self._disconnect(failure)

    def _ack(self, durable: int) -> None:
        if durable > self.acked_seq:
            self.acked_seq = durable
        while self._buffer and self._buffer[0].batch.last_seq <= self.acked_seq:
            done = self._buffer.popleft()
            self._buffer_bytes -= done.batch.wire_bytes
        self._cv.notify_all()

    def _connect(self) -> None:
        with self._cv:
            if self._next_seq is None:
                resume = 0
            elif self._buffer:
                resume = self._buffer[0].batch.first_seq
            else:
                resume = self._next_seq
        try:
            welcome = self.transport.open(Hello(self.vpg, self.vra_id, resume))
        except Refused as exc:
            if exc.reason == GAP:
                self._reset_stream(exc)
            self._disconnect(exc)
            return
        except ApplianceError as exc:
            self._disconnect(exc)
            return
        with self._cv:
            lost = self._journal_lost(welcome)
            if lost:
                log.warning("VPG %s: the recovery VRA lost records it had acknowledged (%s); delta sync needed",
                            self.vpg, lost)
                self.needs_delta_sync = True
                self.counters.recovery_journal_lost += 1
                self._reset_ns = self._wall_ns()
                # Its positions restarted: what this engine counted as acknowledged no longer is.
                self.acked_seq = welcome.durable_seq
                if self._next_seq is not None and self._next_seq <= welcome.durable_seq:
                    self._next_seq = welcome.durable_seq + 1
            if welcome.journal_epoch:
                self._journal_epoch = welcome.journal_epoch
            if self._next_seq is None:
                self._next_seq = welcome.durable_seq + 1
            self._ack(welcome.durable_seq)
            for e in self._buffer:
                e.future = None
            self.connected = True
            self.state, self.error = "ok", ""
            self._backoff = self.settings.backoff_min
            self.counters.reconnects += 1
            self._kick()

    def _journal_lost(self, welcome) -> str:
        """Why the Welcome says the recovery side lost acknowledged records, or "" (under ``_cv``).

        The epoch is explicit: it changes only when the journal is created or discarded. Without one (an older
        recovery VRA) a durable position below what was acknowledged says the same; a restart with the journal
        intact never goes below it, because a torn tail only cuts records that were never acknowledged."""
        epoch = welcome.journal_epoch
        if epoch and self._journal_epoch and epoch != self._journal_epoch:
            return f"journal epoch {self._journal_epoch} -> {epoch}"
        if welcome.durable_seq < self.acked_seq:
            return f"durable stream seq {welcome.durable_seq}, below the acknowledged {self.acked_seq}"
        return ""

    def _reset_stream(self, exc: Refused) -> None:
        """The receiver lacks records this engine no longer holds: start over from its position; what was
        buffered goes to the dirty map, and the VPG needs a sync."""
        with self._cv:
            log.warning("VPG %s: %s; restarting the stream, bitmap sync needed", self.vpg, exc)
            for e in self._buffer:
                for volume, offset, length in e.batch.write_extents:
                    self.dropped.add(volume, offset, length)
            self._buffer.clear()
            self._buffer_bytes = 0
            self._next_seq = None
            self.needs_bitmap_sync = True
            self._reset_ns = self._wall_ns()

    def _disconnect(self, exc: BaseException) -> None:
        try:
            self.transport.close()
        except ApplianceError:
            pass
        with self._cv:
            was = self.connected
            self.connected = False
            for e in self._buffer:
                e.future = None
            now = self._clock()
            if isinstance(exc, Refused):
                name = exc.reason_name
                self.counters.refusals[name] = self.counters.refusals.get(name, 0) + 1
                if exc.kind == "resend":
                    delay = 0.0
                elif exc.kind == "backoff":
                    delay = self._backoff
                    self._backoff = min(self._backoff * 2, self.settings.backoff_max)
                    self.state = "peer-journal-full"
                else:
                    delay = self.settings.permanent_backoff
                    self.state = "error"
                self.error = str(exc)
            else:
                delay = self._backoff
                self._backoff = min(self._backoff * 2, self.settings.backoff_max)
                self.state = "connecting"
                self.error = str(exc) if not isinstance(exc, TransientError) or was else self.error or str(exc)
            self._retry_at = now + delay
            self._kick()
        if was:
            log.info("VPG %s: stream to the recovery VRA ended: %s", self.vpg, exc)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop.start()

    def _send_pass(self) -> None:
        try:
            self.sync_once()
        except Exception:
            self._disconnect(TransientError("sender failed"))
            raise  # the loop logs it

    def _next_wakeup_locked(self) -> float:
        with self._cv:
            return self._next_wakeup()

    def _next_wakeup(self) -> float:
        now = self._clock()
        waits = [1.0]
        if not self.connected and not self.paused:
            waits.append(max(0.0, self._retry_at - now))
        # A batch falls due after batch_delay; while disconnected or with a full window, a reconnect or an
        # ack wakes the sender instead (no polling).
        if self.connected and self._unsealed and self._unsealed_since is not None and not self._window_full():
            waits.append(max(0.0005, self._unsealed_since + self.settings.batch_delay - now))
        if self._aligner.blocked_on():
            waits.append(0.25)
        return min(waits)

    def stop(self) -> None:
        self._loop.stop(timeout=None)
        with self._cv:  # waiters for room or acks see the loop stopping
            self._cv.notify_all()
        getattr(self.transport, "shutdown", self.transport.close)()

    # -- status ----------------------------------------------------------------------------------------------------
    def rpo_seconds(self) -> float:
        """Age of the oldest write not yet durable on the recovery side (0 when everything is)."""
        with self._cv:
            oldest = [d[0] for d in self._aligner_ts.values() if d]
            if self._buffer:
                oldest.append(self._buffer[0].batch.oldest_timestamp_ns or self._wall_ns())
            first = next((r.timestamp_ns for r in self._unsealed if isinstance(r, _Write)), None)
            if first is not None:
                oldest.append(first)
            if not oldest:
                return 0.0
            return max(0.0, (self._wall_ns() - min(oldest)) / 1e9)

    def status(self) -> dict:
        rpo = self.rpo_seconds()
        with self._cv:
            c = self.counters
            ratio = (c.raw_bytes_sent / c.wire_bytes_sent) if c.wire_bytes_sent else 1.0
            state = self.state
            if state == "ok" and self._syncing:
                state = "syncing"
            elif state == "ok" and (self.needs_bitmap_sync or self.dropped):
                state = "bitmap-sync-needed"
            return {
                "vpg": self.vpg,
                "role": "protect",
                "state": state,
                "error": self.error,
                "needs_bitmap_sync": self.needs_bitmap_sync or bool(self.dropped),
                "needs_delta_sync": self.needs_delta_sync,
                "syncing": self._syncing,
                "paused": self.paused,
                "counters": {
                    "writes": c.writes,
                    "bytes": c.bytes,
                    "batches": c.batches,
                    "resent_batches": c.resent_batches,
                    "raw_bytes_sent": c.raw_bytes_sent,
                    "wire_bytes_sent": c.wire_bytes_sent,
                    "compression_ratio": ratio,
                    "zstd_level": self.level.level if self.settings.compression else 0,
                    "buffered_bytes": self._held_bytes(),
                    "unacked_batches": len(self._buffer),
                    "acked_seq": self.acked_seq,
                    "next_seq": self._next_seq or 0,
                    "rpo_ms": rpo * 1000.0,
                    "dropped_writes": c.dropped_writes,
                    "dropped_bytes": c.dropped_bytes,
                    "dirty_bytes": self.dropped.total_bytes(),
                "dirty_extents": self.dropped.extent_count(),
                "dirty_budget_extents": self.dropped.max_extents,
                "dirty_over_coverage": self.dropped.over_coverage,
                "resync_writes": c.resync_writes,
                "resync_bytes": c.resync_bytes,
                    "reconnects": c.reconnects,
                    "recovery_journal_lost": c.recovery_journal_lost,
                    "compress_s": c.compress_s,
                    "send_wait_s": c.send_wait_s,
                    **{f"refused_{k.lower()}": v for k, v in c.refusals.items()},
                },
            }


def _size(rec: _Write | _Marker) -> int:
    return len(rec.data) if isinstance(rec, _Write) else _MARKER_COST
