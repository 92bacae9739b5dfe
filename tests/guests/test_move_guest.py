"""A guest moves there and back (two sites as the recovery tests build them: vcsims, both ZVMs, VRAs,
filters; tests/recovery_ops/world.py) and keeps every transaction it acknowledged: it runs on site A through
A's filter; a move to B (final checkpoint, commit, reverse protection); it boots on B from the committed
replica through B's filter and finds every transaction acknowledged on A; it commits more there; a move
back to A; the guest on A's volume checks out with every transaction acknowledged on B."""

from __future__ import annotations

from pathlib import Path

import pytest

from guests.image import DISK_MIB
from guests.runner import Guest
from tests.recovery_ops.world import build
from tests.replication.lab import run
from zvm.lab.vcsim import VcsimSpec
from zvm.vcenter.inventory import split_datastore_path

WORLD = "gmove"
PREFIX = 86


@pytest.fixture(scope="module")
def world(start_vcsim, tmp_path_factory):
    spec = VcsimSpec(hosts_per_cluster=2, vms_per_pool=3, datastores=1, portgroups=2, disk_mb=DISK_MIB)
    w = build(start_vcsim, WORLD, PREFIX, tmp_path_factory.mktemp(WORLD), spec=spec, vm_count=1, boot_delay=0,
              workload=False)
    yield w
    w.close()


def _local(sim, datastore_path: str) -> Path:
    name, rel = split_datastore_path(datastore_path)
    return Path(sim.datastores[name]) / rel


def test_a_guest_moves_there_and_back_keeping_every_acknowledged_transaction(world, guest_image, short_tmp):
    w = world
    ((volume, (sock, export)),) = w.nbd_of_volume.items()
    on_a = f"nbd+unix:///{export}?socket={sock}"
    run(["nbdcopy", str(guest_image.disk), on_a])  # the VM's disk now holds the guest (replicated)
    with Guest(guest_image, on_a, short_tmp, "on-a").start() as guest:
        guest.ready()
        acknowledged_a = guest.wait_commits(20)
    # powered off (the move's shutdown finds it off); then the move, ordered on B, committed at once
    task = w.b.move(w.vpg, force_shutdown=True, shutdown_timeout=5)
    w.run_b()
    moved = w.b.wait_for_task(task, timeout=300)
    w.run_b()
    w.b.wait_for_task(moved["Result"]["NextTaskIdentifier"], timeout=300)
    report = w.b.recovery_report(moved["Result"]["OperationIdentifier"])
    assert (report["State"], report["Result"]) == ("Committed", "Committed"), report
    replicas = {d["VolumeIdentifier"]: _local(w.rec, d["File"]) for v in report["Vms"] for d in v["Disks"]}

    # on B: the hypervisor's filter on the committed disk (reverse protection replicates it back to A)
    protect_vra = next(v for v, h in w.vra_host.items() if w.vra_site[v] == "b" and h == w.b_recovery_host)
    filt = w.lab.filter(f"{protect_vra}-filter", {v: str(p) for v, p in replicas.items()}, w.vras[protect_vra])
    w.wait_streaming(protect_vra)
    with Guest(guest_image, filt.uri(volume), short_tmp, "on-b").start() as guest:
        guest.ready()
        assert guest.app.text.count("ZVR-APP READY") == 1
        ready = [ln for ln in guest.app.text.splitlines() if ln.startswith("ZVR-APP READY")][0]
        assert int(ready.split("max=")[1]) >= acknowledged_a, ready  # nothing acknowledged on A was lost
        acknowledged_b = guest.wait_commits(20)
    w.checkpoint("after-b", on="b", hash_paths=replicas)

    # the move back, ordered on A (its ZVM runs its own tasks), committed at once
    back = w.a.wait_for_task(w.a.move(w.vpg, force_shutdown=True, shutdown_timeout=5), timeout=300)
    w.a.wait_for_task(back["Result"]["NextTaskIdentifier"], timeout=300)
    assert w.a.recovery_report(back["Result"]["OperationIdentifier"])["State"] == "Committed"

    # on A's own volume again (a copy: the check writes, the volume is protected): clean, and every
    # transaction acknowledged on B is there
    copy = short_tmp / "back-on-a.img"
    run(["cp", "--sparse=always", str(w.volumes[volume]), str(copy)])
    with Guest(guest_image, copy, short_tmp, "back-on-a", mode="check",
               expect=acknowledged_b).start() as check:
        result = check.check_result()
    assert result.passed, result.summary
    assert int(result.fields["present"]) == acknowledged_b > acknowledged_a
