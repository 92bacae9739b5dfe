"""The rows a ZVM of the recovery site holds for GuestSite's VPG (tests/guests/site.py): what its settings'
commit writes, and the checkpoint table as a monitoring pass stores it from the recovery journal."""

from __future__ import annotations

from vra_appliance.proto.v1 import control_pb2 as cpb
from zvm import db as zdb
from zvm import models as m

from .site import VOL, VPG, GuestSite

VM = "web-db"


def register_vpg(site: GuestSite) -> m.Vpg:
    """The rows a paired ZVM of the recovery site holds for the VPG (as its settings commit writes them)."""
    with zdb.transaction():
        local = m.Site.get(m.Site.is_local == True)  # noqa: E712
        peer = m.Site.create(name="Site A")
        m.Vra.create(identifier="recover-r", site=local, host_moid="host-r", host_name="esx-r", name="Z-VRA-esx-r",
                     state="Installed", datastore_moid="ds", network_moid="net", control_address=site.r.address)
        vpg = m.Vpg.create(identifier=VPG, name="guests", protected_site=peer, recovery_site=local,
                           recovery_vra="recover-r")
        vm = m.VpgVm.create(vpg=vpg, vm_moid="vm-1", name=VM)
        m.VpgVolume.create(vm=vm, volume_id=VOL, disk_key=2000, file_name="[ds] web-db/web-db.vmdk",
                           capacity=site.image.disk_bytes)
    return vpg


def store_checkpoints(vpg: m.Vpg, site: GuestSite) -> None:
    """The checkpoint table = the journal's (what monitoring's pass stores)."""
    with zdb.transaction():
        for c in site.r.control.ListCheckpoints(cpb.ListCheckpointsRequest(vpg=VPG)).checkpoints:
            if not m.Checkpoint.get_or_none(m.Checkpoint.identifier == c.checkpoint_id):
                m.Checkpoint.create(identifier=c.checkpoint_id, vpg=vpg, timestamp=c.timestamp_ns / 1e9,
                                    tag=c.tag or None, consistent=c.consistent)
