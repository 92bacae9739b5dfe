"""A guest (Debian, sqlite under a steady transaction load) runs on its protected volume through the IO
filter while checkpoints run; the image at a checkpoint, booted as a recovered VM with a scratch overlay,
checks out: its file system is clean, its database passes its own integrity check, no transaction is torn,
and every transaction the guest acknowledged before the checkpoint was asked for is there. The same after a
kill -9 of the protected VRA and after a WAN cut; and an image with a damaged block fails the check."""

from __future__ import annotations

import random
import subprocess

from guests.image import FS_BLOCK
from vra_appliance.proto.v1 import control_pb2 as cpb

from .site import VOL, VPG, GuestSite


def _protected_guest_under_load(site: GuestSite, commits: int = 15):
    site.protect()
    site.wait_streaming()
    guest = site.start_guest()
    guest.ready()
    guest.wait_commits(commits)
    return guest


def _assert_recovers(site: GuestSite, guest, tag: str) -> int:
    expect, cp = site.checkpoint(guest, tag)
    assert expect > 0
    guest.wait_commits(5)  # the guest goes on after the checkpoint: those must not matter
    result = site.check(cp.checkpoint_id, expect)
    assert result.passed, result.summary
    assert int(result.fields["present"]) == expect
    assert int(result.fields["max"]) >= expect
    return expect


def test_recovered_guest_checks_out_at_a_checkpoint_taken_under_load(short_tmp, guest_image) -> None:
    site = GuestSite(short_tmp, guest_image)
    try:
        guest = _protected_guest_under_load(site)
        assert site.filter.counters()["writes"] > 0  # the guest's IO went through the filter
        _assert_recovers(site, guest, "first")
        # a timed checkpoint (one a second) taken while the guest wrote: also a bootable, clean image,
        # holding at least the transactions acknowledged before the check above asked for it
        listed = site.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG)).checkpoints
        timed = [c for c in listed if c.consistent and not c.tag]
        assert timed, "no timed checkpoint was taken while the guest ran"
        result = site.check(timed[-1].checkpoint_id, 0, name="timed")
        assert result.passed, result.summary
    finally:
        site.close()


def test_recovered_guest_checks_out_after_kill9_of_the_protected_vra(short_tmp, guest_image) -> None:
    site = GuestSite(short_tmp, guest_image)
    try:
        guest = _protected_guest_under_load(site)
        site.p.kill()
        guest.wait_commits(10)  # the filter keeps serving the VM; what it misses goes to its dirty map
        site.p.restart()  # with its saved role: a delta sync, then streaming again
        site.wait_streaming()
        _assert_recovers(site, guest, "after-kill")
    finally:
        site.close()


def test_recovered_guest_checks_out_after_a_wan_cut(short_tmp, guest_image) -> None:
    site = GuestSite(short_tmp, guest_image)
    try:
        guest = _protected_guest_under_load(site)
        site.wan.cut(mode="reset")
        guest.wait_commits(15)
        site.wan.restore()
        site.wait_streaming()
        _assert_recovers(site, guest, "after-cut")
    finally:
        site.close()


def test_an_image_with_a_damaged_block_fails_the_check(short_tmp, guest_image) -> None:
    site = GuestSite(short_tmp, guest_image)
    try:
        guest = _protected_guest_under_load(site, commits=120)  # past a WAL checkpoint: rows in the file
        expect, cp = site.checkpoint(guest, "to-damage")
        guest.kill()
        # where the database file's blocks are, in a copy of the image at the checkpoint
        copy = short_tmp / "copy.img"
        export = site.r.control.OpenImage(cpb.OpenImageRequest(
            vpg=VPG, volume=VOL, checkpoint_id=cp.checkpoint_id)).export_name
        subprocess.run(["nbdcopy", f"nbd+unix:///{export}?socket={site.r.nbd}", str(copy)], check=True)
        site.r.control.CloseImage(cpb.CloseImageRequest(export_name=export))
        # the copy is crash consistent: replay its journal (as the guest's mount would) to see the file's blocks
        subprocess.run(["e2fsck", "-E", "journal_only", "-p", str(copy)], check=True, capture_output=True)
        out = subprocess.run(["debugfs", "-R", "blocks /data/app.db", str(copy)], capture_output=True,
                             text=True, check=True).stdout
        blocks = [int(b) for b in out.split()]
        assert len(blocks) > 20, out
        victim = blocks[len(blocks) // 2]  # a page of rows, not the header: only the database's check sees it
        result = site.check(cp.checkpoint_id, expect, corrupt=(victim * FS_BLOCK, random.Random(5).randbytes(4096)))
        assert not result.passed, result.summary
        assert result.fields["fsck"] == "0"  # the file system is fine: the damage is inside the database
        # and the same image without the damage passes (the scratch overlay kept the image itself intact)
        again = site.check(cp.checkpoint_id, expect, name="undamaged")
        assert again.passed, again.summary
    finally:
        site.close()
