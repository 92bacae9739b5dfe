"""The sync barrier: a bitmap sync's clear of the dirty map waits until the VRA has consumed what was already
on its way, so an older write still in the ring cannot land on the replica after the sync's newer read."""

from __future__ import annotations

import threading

from tests.iofilter.conftest import held_vra
from vra_appliance.iofilter.control import FilterControl


def test_the_clear_waits_for_the_writes_still_in_the_ring(make_filter, sockdir):
    """The old version of block 0 waits in the ring (the VRA is stuck), the ring fills, the new version goes
    to the dirty map. The sync's clear must not return (and the sync read the source) before the VRA has
    the old version: else the VRA would put the old bytes after the sync's new ones."""
    with held_vra(sockdir, make_filter, "slow") as (gate, vra, filt, c):
        assert c.write(0, b"old!" * 1024) == 0
        i = 1
        while not filt.dirty.covers("vol-a", i * 4096 - 4096, 4096) or i == 1:  # fill the ring
            assert c.write(i * 4096, b"fill" * 1024) == 0
            i += 1
        assert c.write(0, b"new!" * 1024) == 0
        assert filt.dirty.covers("vol-a", 0, 4096)  # the ring is full: the new version is dirty
        replies: list = []

        def sync() -> None:
            with FilterControl(filt.control_path) as ctl:
                reply = ctl.dirty("vol-a", clear=True)
            with vra.cond:  # the sync would read the source now: note where the VRA's stream is
                vra.events.append(("sync-reads", reply))
            replies.append(reply)

        syncer = threading.Thread(target=sync)
        syncer.start()
        syncer.join(0.5)
        assert syncer.is_alive()  # the clear waits: the VRA has not consumed the old version yet
        gate.set()
        syncer.join(10)
        assert replies and replies[0]["barrier"] is True and [0, 4096] in replies[0]["extents"]
        kinds = [(e[0], e[2], bytes(e[3][:4])) if e[0] == "write" else (e[0],) for e in vra.events]
        assert kinds.index(("write", 0, b"old!")) < kinds.index(("sync-reads",))
        assert not filt.dirty.covers("vol-a", 0, 4096)  # taken by the sync


def test_a_clear_the_vra_cannot_pass_in_time_keeps_the_extents(make_filter, sockdir, monkeypatch):
    """A VRA that stays stuck: the clear gives up, returns nothing and keeps the extents in the map (the
    filter stays dirty, so the VPG needs another bitmap sync), instead of handing out a range to read early."""
    from vra_appliance.iofilter import split_fold

    monkeypatch.setattr(split_fold, "BARRIER_TIMEOUT_S", 0.2)
    monkeypatch.setattr(split_fold.DirtyFold.take_dirty, "__defaults__", (0.2,))
    with held_vra(sockdir, make_filter, "stuck") as (gate, vra, filt, c):
        i = 0
        while not filt.dirty.extents("vol-a"):
            assert c.write(i * 4096, b"fill" * 1024) == 0
            i += 1
        before = filt.dirty.extents("vol-a")
        with FilterControl(filt.control_path) as ctl:
            reply = ctl.dirty("vol-a", clear=True)
        assert reply["barrier"] is False and reply["extents"] == []
        assert filt.dirty.extents("vol-a") == before and filt.splitter.is_dirty(["vol-a"])
