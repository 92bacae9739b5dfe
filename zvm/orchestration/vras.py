"""VRA install and uninstall tasks: the appliance is imported from ovf/ to the chosen host through vCenter,
named Z-VRA-<host> and powered on; uninstall powers it off and deletes it.

The VRA's vApp properties tell it the ZVM's address and its own identity and IP settings, and how it gets
its certificate: a one-time enrollment token and the site CA's fingerprint (zvm/peer/enrollment.py). Its control
address (host:port of its gRPC service, 4005) is known at once with a static IP; with DHCP it is learned
later (monitoring). A failed install leaves the VRA in state Error, to be uninstalled (which removes
whatever was created) and installed again.
"""

from __future__ import annotations

import time

from zvm import __version__
from zvm import db as zdb
from zvm import models as m
from zvm.errors import ConflictError, NotFoundError, ZvmError
from zvm.orchestration.tasks import TaskContext, handler
from zvm.peer.enrollment import site_enrollment
from zvm.vra_package import ensure_package

VRA_PORT = 4005


def _vra(ctx: TaskContext) -> m.Vra:
    vra = m.Vra.get_or_none(m.Vra.identifier == ctx.task.vra)
    if vra is None:
        raise NotFoundError(f"VRA {ctx.task.vra} no longer exists", code="VraNotFound")
    return vra


def _set(vra: m.Vra, **fields) -> None:
    with zdb.transaction():
        m.Vra.update(**fields).where(m.Vra.id == vra.id).execute()


@handler("InstallVra")
def install_vra(ctx: TaskContext) -> dict:
    vra = _vra(ctx)
    site = vra.site
    try:
        ctx.progress(2, "Preparing the VRA appliance package (ovf/)")
        ovf = ensure_package(ctx.zvm.config.data_dir)
        vc = ctx.zvm.vcenter_factory(site)
        try:
            if vc.find_vm(vra.name):
                raise ConflictError(f"vCenter has a VM named {vra.name} already (from an earlier install?): "
                                    "delete it in vCenter, then uninstall and install this VRA again")
            enrollment = site_enrollment(ctx.zvm)
            properties = {
                "zvm_address": site.zvm_address, "zvm_port": str(site.api_port), "vra_id": vra.identifier,
                "host_id": vra.host_moid, "control_port": str(VRA_PORT), "ip_mode": vra.ip_mode.lower(),
                "ip_address": vra.ip_address, "netmask": vra.subnet_mask, "gateway": vra.gateway,
                "zvm_scheme": "https" if ctx.zvm.config.tls else "http", "zvm_ca_fingerprint": enrollment.ca_fingerprint(),
                # one-time, 24 h, bound to this VRA; the ZVM keeps only its hash
                "enroll_token": enrollment.tokens.create(vra.identifier),
            }
            moid = vc.deploy_ovf(ovf, name=vra.name, host=vra.host_moid, datastore=vra.datastore_moid,
                                 network=vra.network_moid, properties=properties,
                                 progress=lambda pct, step: ctx.progress(pct, step))
        finally:
            vc.close()
    except ZvmError:
        _set(vra, state="Error")
        raise
    address = f"{vra.ip_address}:{VRA_PORT}" if vra.ip_mode == "Static" and vra.ip_address else ""
    _set(vra, vm_moid=moid, state="Installed", control_address=address, version=__version__)
    ctx.progress(100, f"{vra.name} installed on {vra.host_name} and powered on"
                 + ("" if address else "; its address is learned once it has one (DHCP)"))
    return {"VraIdentifier": vra.identifier, "VmIdentifier": moid}


@handler("UninstallVra")
def uninstall_vra(ctx: TaskContext) -> dict:
    vra = _vra(ctx)
    vc = ctx.zvm.vcenter_factory(vra.site)
    try:
        moid = vra.vm_moid or vc.find_vm(vra.name)
        removed = vc.destroy_vm(moid, progress=lambda pct, step: ctx.progress(pct, step)) if moid else False
    except ZvmError:
        _set(vra, state="Error")
        raise
    finally:
        vc.close()
    with zdb.transaction():
        m.Vra.delete().where(m.Vra.id == vra.id).execute()
    site_enrollment(ctx.zvm).tokens.forget(vra.identifier)
    ctx.progress(100, f"{vra.name} removed" + ("" if removed else " (its VM was already gone)"))
    return {"VraIdentifier": vra.identifier, "VmIdentifier": moid, "UninstalledAt": time.time()}
