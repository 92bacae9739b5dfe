"""VRAs: one replication appliance per ESXi host; install (OVF import, as a task), list, uninstall."""

from __future__ import annotations

import ipaddress

import peewee
from flask import g, request

from zvm import enums
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import note_entity, service
from zvm.api.queue import queue_task
from zvm.api.spec import ENROLLMENT_TOKEN_HEADER, ApiBlueprint, Param
from zvm.errors import ConflictError, NotFoundError, ValidationError
from zvm.peer.enrollment import peer_ca_pems, site_enrollment
from zvm.vpg_settings import vra_appliance

bp = ApiBlueprint("vras", __name__, tag="Vras",
                  description="Virtual Replication Appliances: one per ESXi host of the site.")


def vra_name(host_name: str) -> str:
    return f"Z-VRA-{host_name}"


def _protected_counts(site: m.Site) -> dict[str, int]:
    """Host moid -> how many of this site's VMs on it a VPG protects. Moids are per vCenter: a VPG this site
    recovers lists the other vCenter's moids, which may equal local ones, so only VPGs protected here count."""
    rows = (m.InvVm.select(m.InvVm.host, peewee.fn.COUNT(m.VpgVm.id))
            .join(m.VpgVm, on=(m.VpgVm.vm_moid == m.InvVm.moid))
            .join(m.Vpg, on=(m.VpgVm.vpg == m.Vpg.id))
            .where(m.InvVm.site == site, m.Vpg.protected_site == site).group_by(m.InvVm.host).tuples())
    return {host: count for host, count in rows}


def _inventory_hosts(site: m.Site) -> dict[str, str | None]:
    """VRA appliance VM name -> the host the site's inventory has it on (VRAs are not in the VM lists)."""
    rows = m.InvVm.select(m.InvVm.name, m.InvVm.host).where(m.InvVm.site == site, vra_appliance(site)).tuples()
    return dict(rows)


def _vra_json(v: m.Vra, site_identifier: str, counts: dict[str, int], inventory: dict[str, str | None]) -> dict:
    return {
        "VraIdentifier": v.identifier, "VraName": v.name, "SiteIdentifier": site_identifier,
        "HostIdentifier": v.host_moid, "HostName": v.host_name, "VmIdentifier": v.vm_moid, "State": enums.VraStatus.of(v.state), "Status": enums.VraStatus.of(v.state),
        "Reachable": bool(v.reachable), "DatastoreIdentifier": v.datastore_moid,
        "NetworkIdentifier": v.network_moid, "MemoryInGB": v.memory_gb,
        "VraNetworkDataApi": {"VraIPConfigurationTypeApi": v.ip_mode, "VraIPAddress": v.ip_address,
                              "SubnetMask": v.subnet_mask, "DefaultGateway": v.gateway},
        "ControlAddress": v.control_address, "Version": v.version, "LastSeenAt": render.iso(v.last_seen),
        "ProtectedVmsCount": counts.get(v.host_moid, 0),
        "InventoryHostIdentifier": inventory.get(v.name),
    }


def get_vra(identifier: str) -> m.Vra:
    vra = m.Vra.get_or_none(m.Vra.identifier == identifier)
    if vra is None:
        raise NotFoundError(f"no VRA {identifier!r}: list them with GET /v1/vras", code="VraNotFound")
    return vra


@bp.operation("GET", "/vras", summary="VRAs of this site", response=schemas.array_of("Vra"),
              query=[Param("state", schemas.enum(enums.VraStatus)),
                     Param("hostIdentifier", schemas.string(maxLength=255))])
def list_vras(query):
    site = service().local_site()
    q = m.Vra.select().where(m.Vra.site == site).order_by(m.Vra.host_name)
    if "state" in query:
        q = q.where(m.Vra.state == query["state"].internal)
    if "hostIdentifier" in query:
        q = q.where(m.Vra.host_moid == query["hostIdentifier"])
    counts, inventory = _protected_counts(site), _inventory_hosts(site)
    return [_vra_json(v, site.identifier, counts, inventory) for v in q]


@bp.operation("GET", "/vras/{vraIdentifier}", summary="One VRA", response=schemas.ref("Vra"))
def get_vra_by_id(vraIdentifier):
    site = service().local_site()
    return _vra_json(get_vra(vraIdentifier), site.identifier, _protected_counts(site), _inventory_hosts(site))


def _check_ip(net: dict) -> None:
    if net.get("VraIPConfigurationTypeApi") != "Static":
        return
    for key in ("VraIPAddress", "SubnetMask"):
        value = net.get(key, "")
        try:
            ipaddress.IPv4Address(value)
        except ValueError:
            raise ValidationError(f"VraNetworkDataApi.{key} must be an IPv4 address (static IP)",
                                  field=f"VraNetworkDataApi.{key}") from None
    try:
        ipaddress.IPv4Network(f"0.0.0.0/{net['SubnetMask']}")
    except ValueError:
        raise ValidationError("VraNetworkDataApi.SubnetMask is not a valid mask, e.g. 255.255.255.0",
                              field="VraNetworkDataApi.SubnetMask") from None
    if net.get("DefaultGateway"):
        try:
            ipaddress.IPv4Address(net["DefaultGateway"])
        except ValueError:
            raise ValidationError("VraNetworkDataApi.DefaultGateway must be an IPv4 address or empty",
                                  field="VraNetworkDataApi.DefaultGateway") from None


@bp.operation("POST", "/vras", summary="Install a VRA on a host", status=202, body=schemas.ref("VraInstall"),
              response=schemas.ref("TaskId"), errors=[409])
def install_vra(body):
    """Deploy the VRA appliance (ovf/) to the host, on the datastore and network given, with DHCP or a
    static IP; it is named ``Z-VRA-<host>`` and powered on. Returns the task that does it."""
    site = service().local_site()
    host = m.InvHost.get_or_none(m.InvHost.site == site, m.InvHost.moid == body["HostIdentifier"])
    if host is None:
        raise ValidationError(f"HostIdentifier {body['HostIdentifier']!r} is not a host of this site: list "
                              "them with GET /v1/virtualizationsites/{siteIdentifier}/hosts",
                              field="HostIdentifier")
    ds, net = body["DatastoreIdentifier"], body["NetworkIdentifier"]
    if ds not in (host.datastores or []):
        raise ValidationError(f"DatastoreIdentifier {ds!r} is not a datastore of host {host.name}: choose one "
                              f"of {', '.join(host.datastores or []) or '(none)'}", field="DatastoreIdentifier")
    if net not in (host.networks or []):
        raise ValidationError(f"NetworkIdentifier {net!r} is not a network of host {host.name}: choose one "
                              f"of {', '.join(host.networks or []) or '(none)'}", field="NetworkIdentifier")
    netdata = body.get("VraNetworkDataApi") or {"VraIPConfigurationTypeApi": "Dhcp"}
    _check_ip(netdata)
    existing = m.Vra.get_or_none(m.Vra.site == site, m.Vra.host_moid == host.moid)
    if existing is not None:
        raise ConflictError(f"host {host.name} has a VRA already ({existing.name}, {existing.state}): "
                            "uninstall it first")
    vra = m.Vra.create(site=site, host_moid=host.moid, host_name=host.name, name=vra_name(host.name),
                       state="Installing", datastore_moid=ds, network_moid=net,
                       ip_mode=netdata["VraIPConfigurationTypeApi"], ip_address=netdata.get("VraIPAddress", ""),
                       subnet_mask=netdata.get("SubnetMask", ""), gateway=netdata.get("DefaultGateway", ""),
                       memory_gb=body.get("MemoryInGB", 3))
    note_entity(vra.identifier, f"Install {vra.name}")
    task = queue_task("InstallVra", vra=vra.identifier, site=site.identifier)
    return render.task_id(task)


@bp.operation("DELETE", "/vras/{vraIdentifier}", summary="Uninstall a VRA", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def uninstall_vra(vraIdentifier):
    """Refused while VMs on the host are protected, or while the VRA is being installed or removed."""
    vra = get_vra(vraIdentifier)
    if vra.state in ("Installing", "Uninstalling"):
        raise ConflictError(f"{vra.name} is {vra.state.lower()}: wait for its task to end")
    # A VRA in state Error can be uninstalled: that removes whatever its failed install created.
    count = _protected_counts(vra.site).get(vra.host_moid, 0)
    if count:
        raise ConflictError(f"{count} protected VM(s) run on host {vra.host_name}: remove them from their VPGs "
                            "(or delete the VPGs) before uninstalling its VRA")
    vra.state = "Uninstalling"
    vra.save()
    return render.task_id(queue_task("UninstallVra", vra=vra.identifier, site=vra.site.identifier))


@bp.operation("POST", "/vras/{vraIdentifier}/enroll", auth="enrollment",
              summary="A VRA enrolls: its certificate request, signed by this site's CA",
              body=schemas.obj({"CertificateRequestPem": schemas.string(
                  "The VRA's PKCS#10 certificate request (PEM); its key stays on the VRA", maxLength=16384)},
                  required=["CertificateRequestPem"], closed=True),
              response=schemas.obj({
                  "VraIdentifier": schemas.string(),
                  "CertificatePem": schemas.string("The VRA's certificate: CN and DNS name = its identifier"),
                  "SiteCaPem": schemas.string("This site's CA (its SHA-256 is the VRA's zvm_ca_fingerprint)"),
                  "TrustBundlePem": schemas.string("The CAs the VRA trusts: this site's and each paired site's"),
                  "ZvmIdentity": schemas.string("The name of this ZVM's certificate for the Control service"),
              }, required=["VraIdentifier", "CertificatePem", "SiteCaPem", "TrustBundlePem", "ZvmIdentity"]))
def enroll_vra(vraIdentifier, body):
    """The one call besides login without a session: the VRA sends the one-time enrollment token it was
    given at install (vApp property ``enroll_token``) in the ``x-zvr-enrollment-token`` header. A token that
    is not the VRA's, used already or expired is refused (401) and changes nothing."""
    g.user = f"vra:{vraIdentifier}"[:64]
    enrollment = site_enrollment(service())
    enrollment.tokens.check(vraIdentifier, request.headers[ENROLLMENT_TOKEN_HEADER])  # before any lookup
    vra = get_vra(vraIdentifier)
    note_entity(vra.identifier, f"Enroll {vra.name}")
    ip = vra.ip_address if vra.ip_mode == "Static" else ""
    return enrollment.enroll(vra.identifier, request.headers[ENROLLMENT_TOKEN_HEADER],
                             body["CertificateRequestPem"], ip, peer_ca_pems())
