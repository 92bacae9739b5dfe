"""The local site's vCenter inventory, copied into the database so the API answers without vCenter.

``InventorySync.sync_once()`` reads the whole inventory (zvm.vcenter.inventory, a few PropertyCollector
calls) and makes the site's Inv* rows match it in one transaction. ``apply_snapshot`` is that second half,
also used for a peer site's inventory received over 9081. Between full reads, the watcher
(zvm.vcenter.watch) applies PropertyCollector updates as they come.
"""

from __future__ import annotations

import logging
import time

from zvm import db as zdb
from zvm import models as m

log = logging.getLogger("zvm.inventory")
BATCH = 200


def snapshot_rows(inv) -> dict[type, list[dict]]:
    """zvm.vcenter.inventory.Inventory (or its to_dict()) -> rows per inventory model, without ``site``."""
    data = inv if isinstance(inv, dict) else inv.to_dict()
    return {
        m.InvCluster: [{"moid": c["moid"], "name": c["name"], "datacenter": c.get("datacenter", "")}
                       for c in data.get("clusters", {}).values()],
        m.InvHost: [{"moid": h["moid"], "name": h["name"], "cluster": h.get("cluster"),
                     "datacenter": h.get("datacenter", ""), "connection_state": h.get("connection_state", ""),
                     "power_state": h.get("power_state", ""), "datastores": list(h.get("datastores", [])),
                     "networks": list(h.get("networks", []))} for h in data.get("hosts", {}).values()],
        m.InvDatastore: [{"moid": d["moid"], "name": d["name"], "type": d.get("type", ""),
                          "capacity": int(d.get("capacity", 0)), "free_space": int(d.get("free_space", 0)),
                          "url": d.get("url", "")} for d in data.get("datastores", {}).values()],
        m.InvNetwork: [{"moid": n["moid"], "name": n["name"], "kind": n.get("kind", "Network")}
                       for n in data.get("networks", {}).values()],
        m.InvFolder: [{"moid": f["moid"], "name": f["name"], "parent": f.get("parent"), "path": f.get("path", "")}
                      for f in data.get("folders", {}).values()],
        m.InvVm: [vm_row(v) for v in data.get("vms", {}).values()],
    }


def vm_row(v: dict) -> dict:
    return {"moid": v["moid"], "name": v["name"], "uuid": v.get("uuid") or "",
            "instance_uuid": v.get("instance_uuid") or "", "host": v.get("host"),
            "power_state": v.get("power_state", ""), "folder": v.get("folder"),
            "networks": list(v.get("networks", [])),
            "disks": [{"key": d["key"], "label": d.get("label", ""), "file_name": d.get("file_name", ""),
                       "datastore": d.get("datastore"), "capacity": int(d.get("capacity", 0)),
                       "uuid": d.get("uuid")} for d in v.get("disks", [])]}


def apply_snapshot(site: m.Site, rows: dict[type, list[dict]]) -> None:
    """Make the site's inventory rows exactly ``rows``; call inside a transaction."""
    for model, items in rows.items():
        model.delete().where(model.site == site).execute()
        for start in range(0, len(items), BATCH):
            model.insert_many([{**r, "site": site.id} for r in items[start:start + BATCH]]).execute()


class InventorySync:
    """Copies the local vCenter's inventory into the database."""

    def __init__(self, zvm):
        self.zvm = zvm

    def sync_once(self) -> dict[str, int]:
        """Read the whole inventory now; returns how many objects of each kind were stored."""
        zdb.connect(self.zvm.db)
        site = self.zvm.local_site()
        vc = self.zvm.vcenter_factory(site)
        try:
            inv = vc.inventory()
        finally:
            vc.close()
        rows = snapshot_rows(inv)
        with zdb.transaction():
            apply_snapshot(site, rows)
            m.Site.update(vcenter_uuid=inv.vcenter_uuid, inventory_loaded_at=time.time()).where(
                m.Site.id == site.id).execute()
        counts = {model.__name__[3:].lower() + "s": len(items) for model, items in rows.items()}
        log.info("inventory of %s loaded: %s", site.vcenter_url, counts)
        return counts
