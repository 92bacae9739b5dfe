"""Bitmap and delta syncs against a real `vra iofilter` process: the dirty extents come from its control
socket; after a kill -9 of the filter its map is gone, and the next sync of the volume is a delta sync that
sends only what changed (not a full one). The VRA side is the sync runner with a sink that applies to a
replica file in process; the replica is compared with the volume by hash."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.iofilter.conftest import MiB, make_volume, sha256
from tests.iofilter.nbdraw import RawNbd
from vra_appliance.iofilter.control import FilterControl
from vra_appliance.sync.delta import ReplicaChecksums
from vra_appliance.sync.protect_adapter import FilterDirtySource
from vra_appliance.sync.runner import VpgSyncRunner
from vra_appliance.sync.state import Phase, VolumeSyncState, VpgSyncState
from vra_appliance.sync.volume import FileVolume

SIZE = 4 * MiB


class FakeLink:
    """The VPG as the runner sees it: connected; a bitmap sync needed when the test says so."""

    def __init__(self) -> None:
        self.needs_bitmap_sync = True
        self.connected = True
        self.syncing: list[bool] = []

    def take_bitmap_need(self) -> bool:
        needed, self.needs_bitmap_sync = self.needs_bitmap_sync, False
        return needed

    def set_syncing(self, syncing: bool) -> None:
        self.syncing.append(syncing)


class ReplicaSink:
    """Applies what the sync pushes straight to the replica (the stream and journal are other tests')."""

    def __init__(self, replica: FileVolume) -> None:
        self.replica = replica

    def max_push(self) -> int:
        return MiB

    def push(self, volume, offset, length, read, timeout) -> bool:
        self.replica.pwrite(offset, read(offset, length))
        return True


class Filter:
    def __init__(self, vol: Path, sockdir: Path) -> None:
        self.vol, self.sockdir = vol, sockdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vra_appliance.cli", "iofilter", "--volume", f"vol-1={self.vol}",
             "--unix", str(self.sockdir / "f.sock"), "--control", str(self.sockdir / "f.ctl")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("vra iofilter: serving vol-1"), line

    def write(self, blocks: list[int], rng: random.Random) -> None:
        c = RawNbd(str(self.sockdir / "f.sock"))
        c.connect_export("vol-1")
        for b in blocks:
            assert c.write(b * 4096, rng.randbytes(4096)) == 0
        c.disconnect()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(sig)
        self.proc.wait(10)
        self.proc.stdout.close()
        self.proc.stderr.close()
        self.proc = None


@pytest.fixture
def sockdir():
    d = Path(tempfile.mkdtemp(prefix="zs-", dir="/tmp"))  # unix socket paths must stay short
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_filter_dirty_map_feeds_the_bitmap_sync_and_a_kill_9_leads_to_a_delta_sync(tmp_path, sockdir):
    vol = make_volume(tmp_path / "disk-flat.vmdk", SIZE, 1)
    replica_path = tmp_path / "replica.img"
    replica_path.write_bytes(vol.read_bytes())  # in sync to begin with
    flt = Filter(vol, sockdir)
    flt.start()
    ctl = FilterControl(sockdir / "f.ctl")
    rng = random.Random(2)
    try:
        with FileVolume(vol) as source, FileVolume(replica_path, writable=True) as replica:
            link = FakeLink()
            state = VpgSyncState(["vol-1"])
            state.volumes["vol-1"] = VolumeSyncState("vol-1", Phase.STREAMING)
            runner = VpgSyncRunner("vpg-1", link, ReplicaSink(replica), {"vol-1": source},
                                   dirty_sources=[FilterDirtySource(ctl.request, {"vol-1"})],
                                   peer=ReplicaChecksums({"vol-1": replica}), state=state)

            # No VRA is attached: every write lands in the filter's dirty map.
            blocks = sorted({rng.randrange(0, SIZE // 4096) for _ in range(60)})
            flt.write(blocks, rng)
            (report,) = runner.sync_once()
            assert report.kind == "BitmapSync" and report.completed
            assert report.bytes == report.dirty_bytes == len(blocks) * 4096
            assert sha256(replica_path) == sha256(vol)
            assert ctl.dirty("vol-1")["extents"] == []  # fetched and cleared

            # Writes, then the filter dies without saving its map: nobody knows what they touched.
            lost = sorted({rng.randrange(0, SIZE // 4096) for _ in range(25)})
            flt.write(lost, rng)
            ctl.close()
            flt.stop(signal.SIGKILL)
            flt.start()
            link.needs_bitmap_sync = True
            (first,) = runner.sync_once()
            assert first.kind == "BitmapSync" and not first.completed and "lost" in first.error
            assert state["vol-1"].phase is Phase.DELTA_SYNC
            (delta,) = runner.sync_once()
            assert delta.kind == "DeltaSync" and delta.completed
            assert delta.bytes == len(lost) * 4096  # only the changed blocks, not the volume
            assert sha256(replica_path) == sha256(vol)
            assert state.checkpoint_consistent and link.syncing[-1] is False
    finally:
        ctl.close()
        flt.stop()
    assert not os.path.exists(sockdir / "f.sock")
