"""The protect role of one VPG on one VRA: the filters' writes -> a sequenced, batched, compressed stream.

Data path (the split listener's threads call ``on_write`` / ``on_mark``; one sender thread runs
``sync_once``):

1. ``on_write`` stamps the write (wall clock, ns) and queues it in the local ``Aligner`` (one input per IO
   filter), unless the VPG's buffer is full: then the extent goes to ``dropped`` and the VPG needs a bitmap
   sync. It never blocks: a slow link must not slow the VMs, and a filter serves several VPGs.
2. ``on_mark`` queues a filter's checkpoint marker; the aligner holds that filter's later writes until
   every local filter of the checkpoint reached its marker and the coordinator's decision arrived
   (``commit_checkpoint``); then one marker goes into the VRA's stream.
3. ``sync_once`` (the ``StreamSender`` of vra_appliance/protect/sender.py) connects when needed, takes what
   the aligner lets out, numbers it with the stream seq, seals, compresses and sends batches, keeps them
   until acknowledged and resends them after a reconnect; the receiver ignores what it already has, so
   nothing is applied twice and nothing is skipped.

This module owns steps 1 and 2 (the intake), the hooks for the syncs (``resync_write``, the bitmap / delta
needs, ``dropped``), the checkpoint hooks and the status; ``ProtectedVpg`` is the aggregate the rest of the
appliance talks to. The intake and the sender share one Condition, so their order is one lock's order.

Stream seqs are per (VPG, protect VRA); the recovery VRA gives the VPG-wide sequence (docs/FORMAT.md).
A fresh engine holds no seq until the first Welcome: it continues from the receiver's durable seq.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from vra_appliance.protect.compression import AdaptiveLevel
from vra_appliance.protect.dirty import ExtentMap
from vra_appliance.protect.sender import PendingMarker, PendingWrite, StreamSender
from vra_appliance.protect.settings import ProtectCounters, ProtectSettings
from vra_appliance.stream.aligner import Aligner, Checkpoint, Dropped, Item, Mark
from vra_appliance.stream.transport import Transport

__all__ = ["ProtectSettings", "ProtectedVpg"]

log = logging.getLogger(__name__)


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
        self._aligned_bytes = 0
        self.dropped = ExtentMap(self.settings.dropped_max_extents)
        self.needs_bitmap_sync = False
        # The recovery side lost records it had acknowledged (its journal was discarded): only a delta sync
        # makes the replica right. Set by the sender's connect, taken by the sync runner (``take_delta_need``).
        self.needs_delta_sync = False
        self._syncing = False
        self._filter_of: dict[str, str] = {}  # volume -> the filter (aligner input) that carries its writes
        self.counters = ProtectCounters()
        self.sender = StreamSender(
            vpg, vra_id, transport, cv=self._cv, settings=self.settings, level=self.level, counters=self.counters,
            drain=self._drain_aligner, on_reset=self._stream_reset, on_journal_lost=self._delta_sync_needed,
            align_blocked=lambda: bool(self._aligner.blocked_on()), clock=clock, wall_ns=wall_ns,
        )

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
        self._aligner.push(filter_id, PendingWrite(ts, volume, offset, data), self._clock())
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
        self.sender.set_paused(paused)

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
                if left <= 0 or self.sender.stopping:
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
            out = self.sender.held_write_extents()
            for input_id in list(self._aligner_ts):
                out += [(v.volume, v.offset, len(v.data)) for v in self._aligner.reset_input(input_id)
                        if isinstance(v, PendingWrite)]
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
            info = PendingMarker(
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
                self.sender.enqueue(info, 0)
            self._kick()

    def abort_checkpoint(self, checkpoint_id: str) -> None:
        with self._cv:
            self._aligner.abort(checkpoint_id)
            self._kick()

    def marker_seq(self, checkpoint_id: str) -> int | None:
        return self.sender.marker_seq(checkpoint_id)

    def wait_marker_durable(self, checkpoint_id: str, timeout: float) -> bool:
        """Wait until the VRA's marker of the checkpoint is acknowledged by the recovery VRA."""
        return self.sender.wait_marker_durable(checkpoint_id, timeout)

    # -- the sender (vra_appliance/protect/sender.py) ---------------------------------------------------------
    def sync_once(self) -> int:
        """One round of the sender: reconnect if due, collect acks, seal and send. Returns batches sent."""
        return self.sender.sync_once()

    def start(self) -> None:
        self.sender.start()

    def stop(self) -> None:
        self.sender.stop()

    @property
    def acked_seq(self) -> int:
        return self.sender.acked_seq

    @property
    def connected(self) -> bool:
        return self.sender.connected

    @property
    def state(self) -> str:
        return self.sender.state

    @property
    def error(self) -> str:
        return self.sender.error

    @property
    def paused(self) -> bool:
        return self.sender.paused

    def _kick(self) -> None:
        self.sender.kick()

    def _held_bytes(self) -> int:
        return self._aligned_bytes + self.sender.held_bytes()

    def _drain_aligner(self) -> None:
        """Move what the aligner lets out into the sender's queue."""
        with self._cv:
            now = self._clock()
            self._aligner.expire(now, self.settings.local_align_timeout)
            for out in self._aligner.pop(now):
                if isinstance(out, Item):
                    w: PendingWrite = out.value
                    self._aligner_ts[out.input_id].popleft()
                    self._aligned_bytes -= len(w.data)
                    self.sender.enqueue(w, len(w.data))
                elif isinstance(out, Checkpoint):
                    info: PendingMarker = out.info
                    self.sender.enqueue(info, 0)
                elif isinstance(out, Dropped):
                    pass

    def _stream_reset(self, extents) -> None:
        """The sender dropped its buffer (the receiver lacks what it no longer holds): to the dirty map."""
        for volume, offset, length in extents:
            self.dropped.add(volume, offset, length)
        self.needs_bitmap_sync = True

    def _delta_sync_needed(self) -> None:
        self.needs_delta_sync = True

    # -- status ----------------------------------------------------------------------------------------------------
    def rpo_seconds(self) -> float:
        """Age of the oldest write not yet durable on the recovery side (0 when everything is)."""
        with self._cv:
            oldest = [d[0] for d in self._aligner_ts.values() if d]
            oldest += self.sender.oldest_timestamps_ns()
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
                    "unacked_batches": self.sender.unacked_batches,
                    "acked_seq": self.acked_seq,
                    "next_seq": self.sender.next_seq or 0,
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

