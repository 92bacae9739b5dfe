"""Placement queries: where a VPG's pieces can go on a site, and how to reach them.

- the VRAs a site can use (installed, with a known control address): ``installed_vras``, by host in
  ``usable_vras``; ``vra_ref`` is how the VRA control seam (zvm.vra_control) names one; ``waiting_for_vras``
  is the refusal when a host has none (code WaitingForVras: the VPG stays Initializing until one is
  installed);
- datastore paths as a site's VRAs see them: a datastore's directory from its URL (``datastore_dir``), a
  "[datastore] dir/file" path as a local file (``local_path``), a datastore's name (``datastore_name``);
- the client of a paired site's peer service (``peer_client`` for a site, ``client_for`` for a pairing).

Read-only queries on the inventory and the VRA rows, shared by the tasks (zvm.orchestration), monitoring
and the peer service; they import nothing of those.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from zvm import models as m
from zvm.datastore_paths import split_datastore_path
from zvm.errors import ConflictError, NotFoundError, PermanentError
from zvm.peer.client import PeerClient
from zvm.vra_control import VraRef


def vra_ref(vra: m.Vra) -> VraRef:
    return VraRef(vra_id=vra.identifier, address=vra.control_address, name=vra.name)


def installed_vras(site: m.Site) -> list[m.Vra]:
    """The site's VRAs that can take a role: installed, with a known control address."""
    return list(m.Vra.select().where(m.Vra.site == site, m.Vra.state == "Installed", m.Vra.control_address != ""))


def usable_vras(site: m.Site) -> dict[str, m.Vra]:
    """``installed_vras`` by the host they run on."""
    return {v.host_moid: v for v in installed_vras(site)}


def waiting_for_vras(site: m.Site, hosts: set) -> ConflictError:
    """The refusal for hosts without a usable VRA (raise it)."""
    names = {h.moid: h.name for h in m.InvHost.select().where(m.InvHost.site == site)}
    listed = ", ".join(sorted(names.get(h, h or "(unknown host)") for h in hosts))
    return ConflictError(f"no installed VRA with a known address on host(s) {listed} of site {site.name}: "
                         "install them (POST /v1/vras), then commit the VPG's settings again; the VPG stays "
                         "Initializing", code="WaitingForVras")


def datastore_dir(site: m.Site, moid: str | None) -> str:
    """Where the recovery VRA finds a datastore: its URL's path (ds:///vmfs/volumes/x/ -> /vmfs/volumes/x)."""
    ds = m.InvDatastore.get_or_none(m.InvDatastore.site == site, m.InvDatastore.moid == moid)
    if ds is None:
        raise NotFoundError(f"datastore {moid!r} is not in the inventory of site {site.name}")
    path = urlsplit(ds.url).path if "://" in ds.url else ds.url
    if not path.startswith("/"):
        raise PermanentError(f"datastore {ds.name} has no path a VRA can use (URL {ds.url!r})")
    return path.rstrip("/")


def datastore_name(site: m.Site, moid: str | None) -> str:
    ds = m.InvDatastore.get_or_none(m.InvDatastore.site == site, m.InvDatastore.moid == moid)
    if ds is None:
        raise NotFoundError(f"datastore {moid!r} is not in the inventory of site {site.name}")
    return ds.name


def local_path(site: m.Site, datastore_path: str) -> str:
    """Where a VRA of the site finds a file given as "[datastore] dir/file": the datastore's directory, and
    for a VMDK descriptor its flat extent ("x.vmdk" -> "x-flat.vmdk"), which holds the bytes."""
    name, rel = split_datastore_path(datastore_path)
    ds = m.InvDatastore.get_or_none(m.InvDatastore.site == site, m.InvDatastore.name == (name or ""))
    if ds is None:
        raise NotFoundError(f"{datastore_path!r}: site {site.name} has no datastore {name!r}")
    if rel.endswith(".vmdk") and not rel.endswith("-flat.vmdk"):
        rel = rel[: -len(".vmdk")] + "-flat.vmdk"
    return f"{datastore_dir(site, ds.moid)}/{rel}"


def client_for(zvm, peer: m.PeerSite, timeout: float = 10.0) -> PeerClient:
    """The peer service client of a pairing (mutual TLS with the pinned CA)."""
    return PeerClient(peer.host_name, peer.port, zvm.peer_pki(), peer.certificate_pem, timeout=timeout)


def peer_client(zvm, site: m.Site, timeout: float = 10.0) -> PeerClient:
    """The peer service client of a paired site; NotFoundError (SiteNotFound) when it is no longer paired."""
    peer = m.PeerSite.get_or_none(m.PeerSite.site == site)
    if peer is None:
        raise NotFoundError(f"site {site.name} is no longer paired", code="SiteNotFound")
    return client_for(zvm, peer, timeout=timeout)
