"""What two sites' ZVMs say to each other over the peer service (zvm/peer/service.py, zvm/peer/client.py),
apart from both ends: the recover request a protected site sends, the site and inventory a site describes
itself with, and a journal's checkpoints as a recovery site lists them. JSON-able, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field

from zvm import models as m
from zvm.errors import PermanentError
from zvm.vra_control import CheckpointEntry


@dataclass
class RecoverRequest:
    """What the recovery site needs to set up a VPG's recover role: given to the local planner, or sent to
    the paired site's ZVM (which owns the VRAs and the inventory there)."""

    vpg: str
    name: str
    recovery_host: str | None
    recovery_cluster: str | None
    datastore: str
    journal_datastore: str | None
    volumes: list[tuple[str, str | None, int]]  # (volume id, datastore or None for the default, size)
    protect_peers: list[str]  # VRA ids of the protect side
    history_s: int
    hard_limit_bytes: int = 0
    warning_bytes: int = 0
    # volume -> datastore path of an existing file to be its replica (reverse protection: the original
    # VM's disk); the others get "zvr/<vpg>/<volume>.img" on their datastore
    replica_paths: dict = field(default_factory=dict)
    # the VPG as the recovery site keeps it (zvm.orchestration.mirror.vpg_doc); None from an older ZVM
    vpg_doc: dict | None = None

    def to_json(self) -> dict:
        return {k: (list(map(list, v)) if k == "volumes" else v) for k, v in self.__dict__.items()}

    @classmethod
    def from_json(cls, data: dict) -> RecoverRequest:
        try:
            return cls(**{**data, "volumes": [(str(v), d, int(s)) for v, d, s in data["volumes"]]})
        except (TypeError, KeyError, ValueError) as exc:
            raise PermanentError(f"a recover request is malformed: {exc}") from exc


def site_info(site: m.Site) -> dict:
    return {"SiteIdentifier": site.identifier, "SiteName": site.name, "Location": site.location,
            "Address": site.zvm_address, "ApiPort": site.api_port, "PeerPort": site.peer_port,
            "Version": site.version}


def inventory_snapshot(site: m.Site) -> dict:
    """What a paired site needs for recovery settings (no VMs)."""
    def rows(model, *fields):
        return {r["moid"]: {f: r[f] for f in ("moid", "name", *fields)}
                for r in model.select().where(model.site == site).dicts()}

    return {
        "vcenter_uuid": site.vcenter_uuid,
        "clusters": rows(m.InvCluster, "datacenter"),
        "hosts": rows(m.InvHost, "cluster", "datacenter", "connection_state", "power_state", "datastores",
                      "networks"),
        "datastores": rows(m.InvDatastore, "type", "capacity", "free_space", "url"),
        "networks": rows(m.InvNetwork, "kind"),
        "folders": rows(m.InvFolder, "parent", "path"),
    }


def checkpoints_to_json(listed: list[CheckpointEntry]) -> list[dict]:
    return [c.__dict__ for c in listed]


def checkpoints_from_json(raw: list[dict] | None) -> list[CheckpointEntry] | None:
    """None stays None: the journal could not list them (corrupt; the recover role's state says why)."""
    if raw is None:
        return None
    return [CheckpointEntry(c["checkpoint_id"], c["timestamp_s"], c.get("tag"), bool(c["consistent"])) for c in raw]
