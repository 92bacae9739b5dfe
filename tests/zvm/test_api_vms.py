"""GET /v1/vms: the exact answer (built from the driver's rows, not peewee's), on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import pytest

from tests.zvm.test_api import create_vpg, local_site_id
from zvm import models as m
from zvm.enums import VpgPriority, VpgStatus, VpgSubStatus


@pytest.fixture
def app(app_on_both_engines):
    return app_on_both_engines


def _volume(vm: m.VpgVm, disk_key: int) -> str:
    return m.VpgVolume.get(m.VpgVolume.vm == vm, m.VpgVolume.disk_key == disk_key).volume_id


def test_protected_vms_answer_exactly(api):
    web = create_vpg(api, "web", ["vm-1", "vm-0"])
    db = create_vpg(api, "db", ["vm-2"])
    m.Vpg.update(actual_rpo_seconds=7, status="MeetingSLA", substatus="None").where(m.Vpg.identifier == web).execute()
    site = {"SiteIdentifier": local_site_id(api), "SiteName": "Site zvm"}
    vm1 = m.VpgVm.get(m.VpgVm.vm_moid == "vm-1")

    def volume(vm, key, size):
        return {"VolumeIdentifier": _volume(vm, key), "DiskKey": key, "FileName": f"[DS-1] {vm.name}/{vm.name}_"
                f"{key - 2000}.vmdk", "ProvisionedSizeInBytes": size, "RecoveryDatastoreIdentifier": "datastore-2"}

    expected_vm1 = {
        "VmIdentifier": "vm-1", "VmName": "vm1", "VpgIdentifier": web, "VpgName": "web", "Status": VpgStatus.MeetingSLA,
        "SubStatus": VpgSubStatus.NONE, "Priority": VpgPriority.High, "ActualRPO": 7, "ProtectedSite": site, "RecoverySite": site,
        "BootGroupName": "", "ProvisionedStorageInMB": 3072,
        "Volumes": [volume(vm1, 2000, 1 << 30), volume(vm1, 2001, 2 << 30)]}
    vms = api.get("/vms").json
    assert [(v["VmName"], v["VpgName"], v["ActualRPO"]) for v in vms] == [
        ("vm0", "web", 7), ("vm1", "web", 7), ("vm2", "db", None)]
    assert vms[1] == expected_vm1
    # the same values, and types, in JSON as before: integers stay integers
    assert json.dumps(vms[1], sort_keys=True) == json.dumps(expected_vm1, sort_keys=True)
    assert api.get("/vms/vm-1").json == expected_vm1
    assert api.get("/vms", query_string={"vpgIdentifier": db}).json == [vms[2]]
    assert api.get("/vms", query_string={"vmName": "vm1", "status": "MeetingSLA"}).json == [expected_vm1]
    assert api.get("/vms", query_string={"status": "Initializing"}).json == [vms[2]]
    assert api.get("/vms", query_string={"vmName": "none"}).json == []
