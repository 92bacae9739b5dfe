"""Point-in-time images of the lab's protected VMs, served by the recovery VRA over NBD.

The recovery VRA serves a volume as of any checkpoint still in its journal (``OpenImage`` of its Control
service), read-only, while replication goes on. The lab opens them for its users and tests the way a
recovery operation would, so that ``qemu-img compare`` or ``nbdcopy`` can look at a replica as of a
checkpoint. The lab reaches the VRA on the recovery site's own network (not through the WAN).

An open image holds the journal at its checkpoint: the promoter does not go past it, so a failover or
move cannot commit until it is closed. The lab records what it opened (lab.json) so that ``zvm lab image
--close-all`` can close it all.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from vra_appliance.proto.v1 import control_pb2 as cpb
from vra_appliance.proto.v1 import control_pb2_grpc as cpb_grpc
from zvm.lab.processes import LabError
from zvm.lab.state import SITES, LabState


@dataclass
class Image:
    vm: str
    volume: str
    export: str
    uri: str
    size: int
    source: str  # the protected disk's flat file


def _status(state: LabState, vra: dict) -> list:
    with state.vra_channel(vra) as channel:
        return list(cpb_grpc.ControlStub(channel).Status(
            cpb.StatusRequest(vpg=state.vpg["identifier"]), metadata=state.vra_metadata(vra), timeout=15).vpgs)


def recovery_vra(state: LabState) -> dict:
    """The VRA that holds the lab VPG's journal now (on the recovery site, or on the protected site once a
    failover or move reversed the VPG)."""
    for site in reversed(SITES):
        for vra in state.vras.get(site, []):
            try:
                if any(st.role == "recover" for st in _status(state, vra)):
                    return vra
            except grpc.RpcError:
                continue
    raise LabError("no VRA of the lab holds the journal of its VPG: is the lab up ('zvm lab status')?")


def _call(state: LabState, method: str, request):
    vra = recovery_vra(state)
    with state.vra_channel(vra) as channel:
        try:
            return getattr(cpb_grpc.ControlStub(channel), method)(
                request, metadata=state.vra_metadata(vra), timeout=30)
        except grpc.RpcError as exc:
            raise LabError(f"the VRA {vra['name']} refused {method}: {exc.details()}") from exc


def vm_volumes(state: LabState, vm: str) -> list[dict]:
    """The lab VPG's volumes of ``vm`` (its name or identifier)."""
    for entry in state.vpg.get("vms", []):
        if vm in (entry["name"], entry["identifier"]):
            return [dict(v, vm=entry["name"]) for v in entry["volumes"]]
    names = ", ".join(v["name"] for v in state.vpg.get("vms", []))
    raise LabError(f"{vm!r} is not a VM of the lab's VPG; its VMs are: {names}")


def open_image(state: LabState, volume: dict, checkpoint_id: str) -> Image:
    reply = _call(state, "OpenImage", cpb.OpenImageRequest(vpg=state.vpg["identifier"], volume=volume["id"],
                                                           checkpoint_id=checkpoint_id))
    uri = f"nbd+unix:///{reply.export_name}?socket={reply.nbd_unix}"
    # The VRA counts the opens of a read-only export and serves it until the last one is closed.
    known = next((i for i in state.images if i["export"] == reply.export_name), None)
    if known is None:
        state.images.append({"export": reply.export_name, "vm": volume.get("vm", ""), "checkpoint": checkpoint_id,
                             "uri": uri, "opens": 1})
    else:
        known["opens"] = known.get("opens", 1) + 1
    state.save()
    return Image(vm=volume.get("vm", ""), volume=volume["id"], export=reply.export_name, uri=uri,
                 size=reply.size, source=volume["path"])


def close_image(state: LabState, export: str) -> None:
    """Close one open of ``export`` (the VRA stops serving it when the last is closed)."""
    _call(state, "CloseImage", cpb.CloseImageRequest(export_name=export))
    for image in state.images:
        if image["export"] == export:
            image["opens"] = image.get("opens", 1) - 1
    state.images = [i for i in state.images if i.get("opens", 1) > 0]
    state.save()


def close_all(state: LabState) -> list[str]:
    """Close every image the lab opened, as often as it opened it; returns their export names (ones the
    VRA no longer serves are forgotten)."""
    closed = []
    for image in list(state.images):
        try:
            for _ in range(image.get("opens", 1)):
                close_image(state, image["export"])
            closed.append(image["export"])
        except LabError:
            state.images = [i for i in state.images if i["export"] != image["export"]]
            state.save()
    return closed


def open_vm(state: LabState, vm: str, checkpoint_id: str) -> list[Image]:
    return [open_image(state, v, checkpoint_id) for v in vm_volumes(state, vm)]
