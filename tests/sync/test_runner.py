"""The sync runner with fakes around it: what an interrupted sync hands back, what waits for a peer, that a
sync draws on the VPG's share of the site throttle, and the start/stop loop."""

from __future__ import annotations

import os
import threading

from tests.sync.conftest import MemVolume
from vra_appliance.protect.throttle import SiteThrottle
from vra_appliance.sync.runner import VpgSyncRunner
from vra_appliance.sync.state import Phase, Reason, VolumeSyncState, VpgSyncState
from vra_appliance.sync.throttle import VpgShare

SIZE = 1 << 20


class Link:
    def __init__(self) -> None:
        self.needs_bitmap_sync = False
        self.connected = True
        self.syncing: list[bool] = []

    def take_bitmap_need(self) -> bool:
        needed, self.needs_bitmap_sync = self.needs_bitmap_sync, False
        return needed

    def set_syncing(self, syncing: bool) -> None:
        self.syncing.append(syncing)


class Sink:
    """Applies pushes to a replica; refuses every push after ``refuse_after`` of them (a buffer that does not
    drain: no room within the timeout)."""

    def __init__(self, replica: MemVolume, refuse_after: int | None = None) -> None:
        self.replica, self.refuse_after, self.pushes = replica, refuse_after, 0

    def max_push(self) -> int:
        return 64 * 1024

    def push(self, volume, offset, length, read, timeout) -> bool:
        if self.refuse_after is not None and self.pushes >= self.refuse_after:
            return False
        self.pushes += 1
        self.replica.pwrite(offset, read(offset, length))
        return True


class Map:
    """A dirty source that can take extents back."""

    def __init__(self, extents) -> None:
        self.extents = list(extents)

    def take(self, volume):
        out, self.extents = self.extents, []
        return out

    def give_back(self, volume, extents):
        self.extents.extend(extents)


def streaming_state() -> VpgSyncState:
    state = VpgSyncState(["v"])
    state.volumes["v"] = VolumeSyncState("v", Phase.STREAMING)
    return state


def test_an_interrupted_bitmap_sync_gives_the_rest_back_and_the_next_one_finishes():
    source, replica = MemVolume(os.urandom(SIZE)), MemVolume(bytes(SIZE))
    dirty = Map([(0, 300_000), (500_000, 4096)])
    link, sink = Link(), Sink(replica, refuse_after=2)
    runner = VpgSyncRunner("vpg", link, sink, {"v": source}, dirty_sources=[dirty], state=streaming_state(),
                           max_io=64 * 1024, room_timeout=0.2)
    link.needs_bitmap_sync = True
    (report,) = runner.sync_once()
    assert not report.completed and "not moving" in report.error
    assert dirty.extents == [(131072, 300_000 - 131072), (500_000, 4096)]
    assert link.syncing and False not in link.syncing  # checkpoints stay not consistent
    sink.refuse_after = None
    (again,) = runner.sync_once()
    assert again.completed and again.bytes == 300_000 - 131072 + 4096
    for off, n in [(0, 300_000), (500_000, 4096)]:
        assert replica.buf[off:off + n] == source.buf[off:off + n]
    assert link.syncing[-1] is False


def test_a_delta_sync_waits_for_a_checksum_peer():
    runner = VpgSyncRunner("vpg", Link(), Sink(MemVolume(bytes(SIZE))), {"v": MemVolume(bytes(SIZE))},
                           state=streaming_state())
    runner.need(Reason.FORCED)
    assert runner.sync_once() == []
    assert runner.state["v"].phase is Phase.DELTA_SYNC and not runner.state.checkpoint_consistent


def test_nothing_runs_while_the_link_is_down_but_checkpoints_are_not_consistent_from_the_need_on():
    link = Link()
    link.connected = False
    runner = VpgSyncRunner("vpg", link, Sink(MemVolume(bytes(SIZE))), {"v": MemVolume(bytes(SIZE))})
    runner.need(Reason.NEW_VOLUME)
    assert link.syncing == [True]  # from the moment the need is known, not when the sync starts
    assert runner.sync_once() == [] and False not in link.syncing
    assert runner.status()["substatus"] == "InitialSync" and runner.status()["current"] is None


def test_a_sync_draws_on_the_vpg_share_of_the_site_throttle():
    now = [0.0]
    slept: list[float] = []
    site = SiteThrottle(1_000_000, clock=lambda: now[0], sleep=lambda s: (slept.append(s), now.__setitem__(0, now[0] + s)))
    site.register("vpg", 1)
    source = MemVolume(os.urandom(SIZE))
    runner = VpgSyncRunner("vpg", Link(), Sink(MemVolume(bytes(SIZE))), {"v": source},
                           throttle=VpgShare(site, "vpg"))
    runner.need(Reason.NEW_VOLUME)
    (report,) = runner.sync_once()
    assert report.completed and report.bytes == SIZE
    assert sum(slept) >= SIZE / 1_000_000 - 0.1  # 1 MiB at 1 MB/s, less the burst


def test_start_runs_the_syncs_in_the_background_and_stop_ends_it():
    source, replica = MemVolume(os.urandom(SIZE)), MemVolume(bytes(SIZE))
    finished = threading.Event()
    runner = VpgSyncRunner("vpg", Link(), Sink(replica), {"v": source}, interval=0.01,
                           on_report=lambda r: r.completed and finished.set())
    runner.need(Reason.NEW_VOLUME)
    runner.start()
    try:
        assert finished.wait(10)
    finally:
        runner.stop()
    assert runner.reports and runner.reports[0].completed
    assert replica.digest() == source.digest()


def test_status_shows_the_running_sync_with_its_progress_then_its_report():
    source = MemVolume(os.urandom(SIZE))
    seen: list[dict] = []

    class Watching(Sink):
        def push(self, volume, offset, length, read, timeout) -> bool:
            seen.append(runner.status())
            return super().push(volume, offset, length, read, timeout)

    link = Link()
    runner = VpgSyncRunner("vpg", link, Watching(MemVolume(bytes(SIZE))), {"v": source}, max_io=64 * 1024)
    runner.need(Reason.NEW_VOLUME)
    (report,) = runner.sync_once()
    assert [s["substatus"] for s in seen] == ["InitialSync"] * len(seen) and len(seen) == SIZE // (64 * 1024)
    percents = [s["current"]["percent"] for s in seen]
    assert percents == sorted(percents) and 0 < percents[-1] <= 100  # the scan runs ahead of the pushes
    assert all(s["current"]["kind"] == "InitialSync" and not s["current"]["completed"] for s in seen)
    st = runner.status()
    assert st["substatus"] == "" and st["current"] is None and st["consistent"]
    assert st["reports"][-1]["completed"] and st["reports"][-1]["bytes"] == SIZE
    assert st["streaming_since_ns"] >= report.finished_ns and link.syncing[-1] is False
