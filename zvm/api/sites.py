"""The local site, paired peer sites and pairing tokens, and each site's vCenter inventory
(``virtualizationsites``)."""

from __future__ import annotations

import secrets
import time

from zvm import enums
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import current_user, note_entity, service
from zvm.api.queue import queue_task
from zvm.api.spec import ApiBlueprint, Param
from zvm.errors import ConflictError, NotFoundError
from zvm.vpg_settings import vra_appliance

localsite = ApiBlueprint("localsite", __name__, tag="LocalSite", description="This ZVM's own site.")
peersites = ApiBlueprint("peersites", __name__, tag="PeerSites",
                         description="Pairing with the ZVM of another site (port 9081).")
vsites = ApiBlueprint("virtualizationsites", __name__, tag="VirtualizationSites",
                      description="The vCenter inventory of the local site and of paired sites.")


@localsite.operation("GET", "/localsite", summary="This site", response=schemas.ref("LocalSite"))
def get_local_site():
    site = service().local_site()
    return {
        "SiteIdentifier": site.identifier, "SiteName": site.name, "Location": site.location,
        "ContactInfo": site.contact, "Version": site.version, "IpAddress": site.zvm_address,
        "Port": site.api_port, "PeerPort": site.peer_port, "VCenterUrl": site.vcenter_url,
        "VCenterUuid": site.vcenter_uuid, "InventoryLoadedAt": render.iso(site.inventory_loaded_at),
        "IsReplicationToSelfEnabled": True,
    }


# --- peer sites -------------------------------------------------------------------------------------------

def _peer_json(peer: m.PeerSite) -> dict:
    return {
        "SiteIdentifier": peer.site.identifier, "PeerSiteName": peer.site.name, "Location": peer.site.location,
        "HostName": peer.host_name, "Port": peer.port, "PairingStatus": enums.PairingStatus.of(peer.state),
        "PairedAt": render.iso(peer.paired_at), "LastSeenAt": render.iso(peer.last_seen),
        "Version": peer.site.version,
    }


def get_peer(site_identifier: str) -> m.PeerSite:
    peer = (m.PeerSite.select(m.PeerSite, m.Site).join(m.Site)
            .where(m.Site.identifier == site_identifier).first())
    if peer is None:
        raise NotFoundError(f"no paired site {site_identifier!r}: list them with GET /v1/peersites",
                            code="SiteNotFound")
    return peer


@peersites.operation("GET", "/peersites", summary="Paired sites", response=schemas.array_of("PeerSite"),
                     query=[Param("hostName", schemas.string(maxLength=255))])
def list_peer_sites(query):
    q = m.PeerSite.select(m.PeerSite, m.Site).join(m.Site).order_by(m.Site.name)
    if "hostName" in query:
        q = q.where(m.PeerSite.host_name == query["hostName"])
    return [_peer_json(p) for p in q]


@peersites.operation("GET", "/peersites/{siteIdentifier}", summary="One paired site",
                     response=schemas.ref("PeerSite"))
def get_peer_site(siteIdentifier):
    return _peer_json(get_peer(siteIdentifier))


@peersites.operation("POST", "/peersites/generatetoken", summary="Make a pairing token (recovery site)",
                     body=schemas.obj({"ExpirationInMinutes": schemas.integer(minimum=1, maximum=10080)},
                                      required=[], closed=True),
                     body_required=False, response=schemas.ref("PairingToken"))
def generate_pairing_token(body):
    """Run on the site that other sites pair with. The token is shown once; give it, with this ZVM's
    address, to the other site's ZVM (POST /v1/peersites there). It can be used once, before it expires."""
    minutes = (body or {}).get("ExpirationInMinutes", 60)
    secret = secrets.token_urlsafe(24)
    row = m.PairingToken.create(token_hash=m.token_hash(secret), expires_at=time.time() + 60 * minutes,
                                created_by=current_user())
    note_entity(str(row.id))
    # The token ends with this site's peer certificate fingerprint: the pairing site checks it on connect.
    token = f"{secret}.{service().peer_pki().fingerprint()[:16]}"
    return {"Token": token, "ExpiresAt": render.iso(row.expires_at)}


@peersites.operation("POST", "/peersites", summary="Pair with a site", status=202,
                     body=schemas.obj({
                         "HostName": schemas.string("The peer ZVM's address.", minLength=1, maxLength=255,
                                                    pattern=r"^[A-Za-z0-9.:\[\]-]+$"),
                         "Port": schemas.integer(minimum=1, maximum=65535),
                         "Token": schemas.string("From POST /v1/peersites/generatetoken on the peer.",
                                                 minLength=1, maxLength=255),
                     }, required=["HostName", "Token"], closed=True),
                     response=schemas.ref("TaskId"), errors=[409])
def pair_site(body):
    """Pair this site with the ZVM at HostName:Port (default 9081) using the token the peer generated.
    Certificates are exchanged, so later ZVM-to-ZVM traffic is mutually authenticated."""
    port = body.get("Port", 9081)
    if m.PeerSite.select().where(m.PeerSite.host_name == body["HostName"], m.PeerSite.port == port).exists():
        raise ConflictError(f"this site is already paired with {body['HostName']}:{port}: unpair it first "
                            "(DELETE /v1/peersites/{siteIdentifier})")
    task = queue_task("PairSite", params={"HostName": body["HostName"], "Port": port, "Token": body["Token"]},
                      secret_params=("Token",))
    return render.task_id(task)


@peersites.operation("DELETE", "/peersites/{siteIdentifier}", summary="Unpair a site", status=202,
                     response=schemas.ref("TaskId"), errors=[409])
def unpair_site(siteIdentifier):
    """Refused while a VPG replicates to or from the site: delete those VPGs first."""
    peer = get_peer(siteIdentifier)
    used = m.Vpg.select().where((m.Vpg.recovery_site == peer.site) | (m.Vpg.protected_site == peer.site))
    if used.exists():
        names = ", ".join(v.name for v in used.limit(5))
        raise ConflictError(f"VPGs replicate with this site ({names}): delete them before unpairing")
    if peer.state == "Unpairing":
        raise ConflictError("the site is being unpaired already: follow its task")
    peer.state = "Unpairing"
    peer.save()
    return render.task_id(queue_task("UnpairSite", site=siteIdentifier))


# --- virtualization sites (inventory) ----------------------------------------------------------------------

def get_site(site_identifier: str) -> m.Site:
    site = m.Site.get_or_none(m.Site.identifier == site_identifier)
    if site is None:
        raise NotFoundError(f"no site {site_identifier!r}: list them with GET /v1/virtualizationsites",
                            code="SiteNotFound")
    return site


def _vsite_json(site: m.Site) -> dict:
    loaded = site.inventory_loaded_at
    if not site.is_local:
        peer = m.PeerSite.get_or_none(m.PeerSite.site == site)
        loaded = peer.inventory_loaded_at if peer else None
    return {"SiteIdentifier": site.identifier, "VirtualizationSiteName": site.name,
            "IsLocal": bool(site.is_local), "InventoryLoadedAt": render.iso(loaded)}


@vsites.operation("GET", "/virtualizationsites", summary="The local and paired sites",
                  response=schemas.array_of("VirtualizationSite"))
def list_virtualization_sites():
    return [_vsite_json(s) for s in m.Site.select().order_by(m.Site.is_local.desc(), m.Site.name)]


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}", summary="One site",
                  response=schemas.ref("VirtualizationSite"))
def get_virtualization_site(siteIdentifier):
    return _vsite_json(get_site(siteIdentifier))


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/hosts", summary="ESXi hosts of a site",
                  response=schemas.array_of("Host"))
def list_hosts(siteIdentifier):
    site = get_site(siteIdentifier)
    rows = m.InvHost.select().where(m.InvHost.site == site).order_by(m.InvHost.name).dicts()
    return [{"HostIdentifier": r["moid"], "VirtualizationHostName": r["name"], "ClusterIdentifier": r["cluster"],
             "ConnectionState": r["connection_state"], "PowerState": r["power_state"],
             "DatastoreIdentifiers": list(r["datastores"] or []), "NetworkIdentifiers": list(r["networks"] or [])}
            for r in rows]


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/hostclusters", summary="Clusters of a site",
                  response=schemas.array_of("HostCluster"))
def list_host_clusters(siteIdentifier):
    site = get_site(siteIdentifier)
    rows = m.InvCluster.select().where(m.InvCluster.site == site).order_by(m.InvCluster.name)
    return [{"ClusterIdentifier": r.moid, "VirtualizationClusterName": r.name} for r in rows]


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/datastores", summary="Datastores of a site",
                  response=schemas.array_of("Datastore"))
def list_datastores(siteIdentifier):
    site = get_site(siteIdentifier)
    rows = m.InvDatastore.select().where(m.InvDatastore.site == site).order_by(m.InvDatastore.name)
    return [{"DatastoreIdentifier": r.moid, "DatastoreName": r.name, "Type": r.type,
             "CapacityInBytes": int(r.capacity), "FreeSpaceInBytes": int(r.free_space)} for r in rows]


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/networks", summary="Networks of a site",
                  response=schemas.array_of("Network"))
def list_networks(siteIdentifier):
    site = get_site(siteIdentifier)
    rows = m.InvNetwork.select().where(m.InvNetwork.site == site).order_by(m.InvNetwork.name)
    return [{"NetworkIdentifier": r.moid, "VirtualizationNetworkName": r.name, "Kind": r.kind} for r in rows]


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/folders", summary="VM folders of a site",
                  response=schemas.array_of("Folder"))
def list_folders(siteIdentifier):
    site = get_site(siteIdentifier)
    rows = m.InvFolder.select().where(m.InvFolder.site == site).order_by(m.InvFolder.path)
    return [{"FolderIdentifier": r.moid, "FolderName": r.name, "ParentIdentifier": r.parent, "Path": r.path}
            for r in rows]


def vm_json(r: dict, vpg: str | None) -> dict:
    disks = [{"DiskKey": int(d.get("key", 0)), "Label": d.get("label", ""), "FileName": d.get("file_name", ""),
              "DatastoreIdentifier": d.get("datastore"), "CapacityInBytes": int(d.get("capacity", 0))}
             for d in (r["disks"] or [])]
    return {"VmIdentifier": r["moid"], "VmName": r["name"], "HostIdentifier": r["host"],
            "FolderIdentifier": r["folder"], "PowerState": r["power_state"],
            "ProvisionedStorageInBytes": sum(d["CapacityInBytes"] for d in disks), "Disks": disks,
            "VpgIdentifier": vpg}


@vsites.operation("GET", "/virtualizationsites/{siteIdentifier}/vms", summary="VMs of a site",
                  query=[Param("folderIdentifier", schemas.string(maxLength=255), "Only VMs in this folder."),
                         Param("hostIdentifier", schemas.string(maxLength=255), "Only VMs on this host."),
                         Param("vmName", schemas.string(maxLength=255), "Only VMs of this name.")],
                  response=schemas.array_of("VirtualizationVm"))
def list_vms(siteIdentifier, query):
    site = get_site(siteIdentifier)
    q = m.InvVm.select().where(m.InvVm.site == site, ~vra_appliance(site))  # VRAs are never protectable
    if "folderIdentifier" in query:
        q = q.where(m.InvVm.folder == query["folderIdentifier"])
    if "hostIdentifier" in query:
        q = q.where(m.InvVm.host == query["hostIdentifier"])
    if "vmName" in query:
        q = q.where(m.InvVm.name == query["vmName"])
    protected: dict[str, str] = {}
    if site.is_local:
        protected = dict(m.VpgVm.select(m.VpgVm.vm_moid, m.Vpg.identifier).join(m.Vpg).tuples())
    return [vm_json(r, protected.get(r["moid"])) for r in q.order_by(m.InvVm.name).dicts()]
