"""A guest (Debian, sqlite under a steady transaction load) runs on its protected volume through the IO
filter while checkpoints run; the image at a checkpoint, booted as a recovered VM with a scratch overlay,
checks out: its file system is clean, its database passes its own integrity check, no transaction is torn,
and every transaction the guest acknowledged before the checkpoint was asked for is there. The same after a
kill -9 of the protected VRA and after a WAN cut. (A damaged image: tests/guests/test_verify_checkpoint.py.)"""

from __future__ import annotations

from vra_appliance.proto.v1 import control_pb2 as cpb

from .site import VPG, GuestSite


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

