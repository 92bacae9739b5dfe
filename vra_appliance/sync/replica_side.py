"""The recovery side of a VPG's delta syncs in ``vra serve``: checksums over each volume at the journal's tip.

A delta sync compares the protected volume with what the recovery side will hold once everything already
journaled is applied: the replica volume overlaid with every journaled write (a point-in-time image at the
last record, ``RecoveryVPG.tip_image``). :class:`JournalTipChecksums` opens such an image when the protect
side opens the volume's delta sync (``DeltaOpen``), moves it forward to the journal's newest record before
it hashes each window (``advance_tip``), and closes it with ``CloseRequest``.

Why that is right while the VMs write: the protect side asks for a window's digests before it hashes its
own copy of that window, so the recovery side's state of a block is read before the protect side's. A
write the protect side sees that the recovery side had not journaled yet differs, and is sent again (after
the write in the stream: harmless); a write the recovery side has journaled, the protect side sees too.
Moving the image forward per window keeps that first kind (writes streamed during the sync, resent for
nothing) to those of about one window's time instead of the whole sync's.

An open image pins the journal (the promoter stops at it), so an image whose sync went quiet (the protect
VRA died mid-sync) is closed after ``idle_s``; the protect side's next call then finds no open sync and its
delta sync fails and runs again from the start.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from vra_appliance.errors import TransientError
from vra_appliance.sync.delta import ReplicaChecksums
from vra_appliance.sync.messages import DeltaOpen, GroupDigests, LeafDigests, LeafRequest


class _NotOpen:
    """A volume of the VPG with no delta sync open (its size is known from the recover role)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def pread(self, offset: int, length: int) -> bytes:
        raise TransientError("the delta sync of this volume is not open on the recovery side; open it first")


class JournalTipChecksums(ReplicaChecksums):
    """ChecksumPeer of one recovery VPG. ``sizes``: volume -> size (its volumes, for "unknown volume"
    answers); ``open_tip(volume)``: a reader of the volume at the journal's tip, with ``close()``."""

    def __init__(self, sizes: Mapping[str, int], open_tip: Callable[[str], object], *,
                 advance_tip: Callable[[object], object] | None = None, idle_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, keep_bytes: int = 64 * 1024 * 1024) -> None:
        super().__init__({v: _NotOpen(n) for v, n in sizes.items()}, keep_bytes=keep_bytes)
        self._open_tip = open_tip
        self._advance_tip = advance_tip
        self._idle_s = idle_s
        self._clock = clock
        self._tips: dict[str, object] = {}
        self._used: dict[str, float] = {}
        self._tips_lock = threading.Lock()
        self.opened = 0

    def open(self, request: DeltaOpen) -> None:
        self._reader(request.volume)  # an unknown volume is refused before anything is opened
        self.expire()
        tip = self._open_tip(request.volume)
        with self._tips_lock:
            old = self._tips.pop(request.volume, None)
            self._tips[request.volume] = tip
            self._used[request.volume] = self._clock()
            self.volumes[request.volume] = tip
            self.opened += 1
        if old is not None:
            old.close()  # a new sync of the volume replaces one its protect side gave up on
        try:
            super().open(request)
        except Exception:
            self.close(request.volume)
            raise

    def group_digests(self, volume: str, first_group: int, count: int) -> GroupDigests:
        self._touch(volume)
        if self._advance_tip is not None:
            with self._tips_lock:
                tip = self._tips.get(volume)
            if tip is not None:
                self._advance_tip(tip)
        return super().group_digests(volume, first_group, count)

    def leaf_digests(self, request: LeafRequest) -> LeafDigests:
        self._touch(request.volume)
        return super().leaf_digests(request)

    def close(self, volume: str) -> None:
        super().close(volume)
        with self._tips_lock:
            tip = self._tips.pop(volume, None)
            self._used.pop(volume, None)
            if tip is not None:
                self.volumes[volume] = _NotOpen(tip.size)
        if tip is not None:
            tip.close()

    def _touch(self, volume: str) -> None:
        with self._tips_lock:
            if volume in self._used:
                self._used[volume] = self._clock()

    def expire(self) -> list[str]:
        """Close the images of syncs idle for longer than ``idle_s``; returns their volumes."""
        now = self._clock()
        with self._tips_lock:
            idle = [v for v, t in self._used.items() if now - t > self._idle_s]
        for v in idle:
            self.close(v)
        return idle

    def open_volumes(self) -> list[str]:
        with self._tips_lock:
            return sorted(self._tips)

    def close_all(self) -> None:
        for v in self.open_volumes():
            self.close(v)
