"""The local site's vCenter inventory, copied into the database so the API answers without vCenter.

``InventorySync`` follows vCenter's PropertyCollector updates (zvm.vcenter.watch): its first
``sync_once()`` loads everything; each later one waits (up to ``max_wait``) for vCenter to report changes
and writes only the rows that changed. A vCenter seam without ``watch()`` (a test double) is read whole on
each call instead. The loop (``start``/``stop``) is ``sync_once`` over and over; after a failure it starts
again from a full load.

``apply_snapshot`` writes a whole inventory (also a peer site's, received over 9081).
"""

from __future__ import annotations

import logging
import time

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ZvmError
from zvr_common.loop import Loop

log = logging.getLogger("zvm.inventory")
BATCH = 200
MODELS = (m.InvCluster, m.InvHost, m.InvDatastore, m.InvNetwork, m.InvFolder, m.InvVm)


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
    # a VM seen half-created (by an OVF import, say) may have no name yet; the next update brings it
    return {"moid": v["moid"], "name": v.get("name") or "", "uuid": v.get("uuid") or "",
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


def apply_changes(site: m.Site, old: dict[type, list[dict]], new: dict[type, list[dict]]) -> int:
    """Write only what differs between two snapshots of the same site; returns the rows touched."""
    touched = 0
    for model, items in new.items():
        before = {r["moid"]: r for r in old.get(model, [])}
        after = {r["moid"]: r for r in items}
        gone = [moid for moid in before if moid not in after]
        if gone:
            model.delete().where(model.site == site, model.moid.in_(gone)).execute()
        added = [r for moid, r in after.items() if moid not in before]
        for start in range(0, len(added), BATCH):
            model.insert_many([{**r, "site": site.id} for r in added[start:start + BATCH]]).execute()
        for moid, row in after.items():
            if moid in before and before[moid] != row:
                model.update(**{k: v for k, v in row.items() if k != "moid"}).where(
                    model.site == site, model.moid == moid).execute()
                touched += 1
        touched += len(gone) + len(added)
    return touched


class InventorySync(Loop):
    """Keeps the local site's inventory rows equal to vCenter's inventory."""

    def __init__(self, zvm, max_wait: float = 30.0):
        # sync_once waits up to max_wait for vCenter's changes: no interval between passes; after a failure
        # (the next pass starts from a full load) 1 s, doubled per failure up to a minute
        super().__init__("zvm-inventory", 0.0, first_retry=1.0, max_backoff=60.0, logger=log)
        self.zvm = zvm
        self.max_wait = max_wait
        self.full_loads = 0  # how many times the whole inventory was read (1 while the watch holds)
        self.updates = 0  # how many update batches were applied
        self._vc = None
        self._watcher = None
        self._rows: dict | None = None
        self._unapplied = False  # the watch moved on but its view is not in the database yet

    def sync_once(self, max_wait: float = 0) -> bool:
        """Load the inventory (first call) or apply the changes vCenter reports within ``max_wait`` s;
        returns True if the database changed."""
        zdb.connect(self.zvm.db)
        site = self.zvm.local_site()
        try:
            if self._vc is None:
                self._vc = self.zvm.vcenter_factory(site)
                watch = getattr(self._vc, "watch", None)
                self._watcher = watch() if watch else None
            if self._watcher is not None:
                first = self._rows is None
                again = first or self._unapplied
                if not self._watcher.poll(0 if again else max_wait) and not again:
                    return False
                inv = self._watcher.inventory()
            else:
                inv = self._vc.inventory()
        except ZvmError:
            self.reset()
            raise
        rows = snapshot_rows(inv)
        self._unapplied = True
        with zdb.transaction():
            if self._rows is None:
                apply_snapshot(site, rows)
                self.full_loads += 1
                touched = sum(len(v) for v in rows.values())
            else:
                touched = apply_changes(site, self._rows, rows)
                self.updates += 1
            m.Site.update(vcenter_uuid=inv.vcenter_uuid, inventory_loaded_at=time.time(),
                          inventory_version=str(getattr(self._watcher, "version", ""))[:255]).where(
                m.Site.id == site.id).execute()
        if self._rows is None:
            log.info("inventory of %s loaded: %s", site.vcenter_url,
                     {model.__name__[3:]: len(items) for model, items in rows.items()})
        self._rows = rows
        self._unapplied = False
        if self._watcher is None:
            self._vc.close()
            self._vc = None
        return touched > 0

    def reset(self) -> None:
        """Forget the watch: the next sync starts with a full load."""
        if self._watcher is not None:
            self._watcher.close()
        if self._vc is not None:
            self._vc.close()
        self._vc = self._watcher = None
        self._rows = None
        self._unapplied = False

    # --- the loop (zvr_common.loop) ------------------------------------------------------------------

    def run_once(self) -> bool:
        return self.sync_once(self.max_wait)

    def after_pass(self) -> None:
        self.zvm.db.close()

    def on_stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()  # the pass waiting for vCenter's changes returns now

    def start(self) -> None:
        if self.running:
            return
        zdb.connect(self.zvm.db)
        if not self.zvm.local_site().vcenter_url:  # set once (by option), then kept in the database
            return
        super().start()

    def stop(self, timeout: float | None = 30.0) -> None:
        super().stop(timeout)
        self.reset()
