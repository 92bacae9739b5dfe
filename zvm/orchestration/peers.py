"""Pairing and unpairing tasks (the protected site's side), and the peer probe monitoring uses.

Pairing sends the token, this site and its CA to the peer's service on 9081, stores the peer and its CA,
then loads the peer's inventory (hosts, clusters, datastores, networks, folders) for recovery settings.
After a pairing or an unpairing (on either side) the site's enrolled VRAs get the new trust bundle
(``UpdateVraTrust``: this site's CA and each paired site's; zvm/peer/enrollment.py), without a restart.
"""

from __future__ import annotations

import time

from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConflictError, NotFoundError, TransientError, ZvmError
from zvm.inventory import apply_snapshot, snapshot_rows
from zvm.orchestration.tasks import TaskContext, handler
from zvm.peer.client import PeerClient
from zvm.peer.enrollment import push_trust
from zvm.peer.messages import site_info
from zvm.placement import client_for


def refresh_inventory(zvm, peer: m.PeerSite, client: PeerClient | None = None) -> int:
    reply = (client or client_for(zvm, peer)).inventory()
    rows = snapshot_rows(reply.get("Inventory") or {})
    now = time.time()
    with zdb.transaction():
        apply_snapshot(peer.site, rows)
        m.PeerSite.update(inventory_loaded_at=now, last_seen=now).where(m.PeerSite.id == peer.id).execute()
    return sum(len(v) for v in rows.values())


def probe_peer(zvm, peer: m.PeerSite) -> bool:
    """Monitoring's probe: the peer answers (and its inventory is refreshed)."""
    try:
        refresh_inventory(zvm, peer)
        return True
    except ZvmError:
        return False


@handler("PairSite")
def pair_site(ctx: TaskContext) -> dict:
    host, port = ctx.param("HostName"), int(ctx.param("Port", 9081))
    local = ctx.zvm.local_site()
    pki = ctx.zvm.peer_pki()
    ctx.progress(10, f"Pairing with the ZVM at {host}:{port}")
    reply = PeerClient(host, port, pki).pair(ctx.param("Token"), site_info(local), pki.ca_pem)
    remote = reply.get("Site") or {}
    if not remote.get("SiteIdentifier"):
        raise NotFoundError(f"the ZVM at {host}:{port} did not say which site it is")
    now = time.time()
    with zdb.transaction():
        if m.Site.select().where(m.Site.identifier == remote["SiteIdentifier"]).exists():
            raise ConflictError(f"site {remote.get('SiteName')} is paired already")
        site = m.Site.create(identifier=remote["SiteIdentifier"], name=str(remote.get("SiteName", host))[:255],
                             location=str(remote.get("Location", ""))[:255], zvm_address=host,
                             api_port=int(remote.get("ApiPort") or 9080), peer_port=port,
                             version=str(remote.get("Version", ""))[:32])
        peer = m.PeerSite.create(site=site, host_name=host, port=port, certificate_pem=reply["CaPem"],
                                 state="Paired", paired_at=now, last_seen=now)
    ctx.progress(40, f"Paired with site {site.name}; this site's VRAs now trust its CA")
    failed = push_trust(ctx.zvm)
    ctx.progress(60, f"Paired with site {site.name}; loading its inventory")
    count = refresh_inventory(ctx.zvm, peer)
    ctx.progress(100, f"Paired with site {site.name} ({count} inventory objects)" + _not_updated(failed))
    return {"SiteIdentifier": site.identifier}


@handler("UnpairSite")
def unpair_site(ctx: TaskContext) -> dict:
    peer = (m.PeerSite.select(m.PeerSite, m.Site).join(m.Site).where(m.Site.identifier == ctx.task.site).first())
    if peer is None:
        raise NotFoundError(f"site {ctx.task.site} is not paired", code="SiteNotFound")
    ctx.progress(20, f"Telling site {peer.site.name} to forget this site")
    note = ""
    try:
        client_for(ctx.zvm, peer).unpair()
    except ConflictError:
        with zdb.transaction():
            m.PeerSite.update(state="Paired").where(m.PeerSite.id == peer.id).execute()
        raise
    except ZvmError as exc:
        note = f"; site {peer.site.name} was not reached ({exc}): unpair it there too"
    name = peer.site.name
    with zdb.transaction():
        peer.site.delete_instance()
    failed = push_trust(ctx.zvm)
    ctx.progress(100, f"Unpaired from site {name}{note}" + _not_updated(failed))
    return {"SiteIdentifier": ctx.task.site}


def _not_updated(failed: list[str]) -> str:
    if not failed:
        return ""
    return (f"; {len(failed)} VRA(s) did not take the new trust bundle ({'; '.join(failed)[:400]}): "
            "they get it at the next pairing change, or restart them")


@handler("UpdateVraTrust")
def update_vra_trust(ctx: TaskContext) -> dict:
    """The peer site paired with or unpaired from this one (its request came on 9081): this site's
    enrolled VRAs get the new trust bundle."""
    ctx.progress(10, "Giving this site's VRAs the paired sites' CAs")
    failed = push_trust(ctx.zvm)
    if failed:
        raise TransientError("VRAs did not take the new trust bundle: " + "; ".join(failed)[:400])
    ctx.progress(100, "This site's VRAs trust exactly the paired sites' CAs")
    return {}
