"""vpgSettings: draft a VPG's settings (new or existing VPG), edit them part by part, then commit."""

from __future__ import annotations

import time

from flask import g

from zvm import enums, vpg_settings
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import current_user, note_entity, service
from zvm.api.queue import queue_task
from zvm.api.spec import ApiBlueprint
from zvm.errors import ConflictError, NotFoundError, ValidationError

bp = ApiBlueprint("vpgsettings", __name__, tag="VpgSettings",
                  description="Drafts of VPG settings: create one (for a new VPG or to edit one), change it, "
                              "commit it. Nothing takes effect before the commit.")

SECTIONS = {"basic": ("Basic", "VpgSettingsBasic"), "journal": ("Journal", "VpgSettingsJournal"),
            "recovery": ("Recovery", "VpgSettingsRecovery"), "networks": ("Networks", "VpgSettingsNetworks")}


def get_draft(identifier: str) -> m.VpgSettings:
    draft = m.VpgSettings.get_or_none(m.VpgSettings.identifier == identifier)
    if draft is None:
        raise NotFoundError(f"no VPG settings {identifier!r}: create them with POST /v1/vpgSettings "
                            "(a committed or deleted draft is gone)", code="VpgSettingsNotFound")
    return draft


def _draft_json(d: m.VpgSettings) -> dict:
    """The draft in Zerto's document shape (GET it, change it, PUT it back)."""
    vpg = m.Vpg.get_or_none(m.Vpg.id == d.vpg_id) if d.vpg_id else None
    body = d.body
    return {"VpgSettingsIdentifier": d.identifier, "VpgIdentifier": vpg.identifier if vpg else None,
            "CreatedBy": d.created_by, "CreatedAt": render.iso(d.created_at),
            "Basic": _basic_out(body["Basic"]), "Journal": _journal_out(body["Journal"]),
            "Recovery": {**body["Recovery"], "DefaultDatastoreClusterIdentifier": None,
                         "ResourcePoolIdentifier": None},
            "Networks": _networks_out(body["Networks"]),
            "BootGroups": {"BootGroups": [_group_out(g) for g in body["BootGroups"]]},
            "Vms": [_vm_out(v) for v in body["Vms"]], "Scripting": None}


def _basic_out(basic: dict) -> dict:
    return {**basic, "Priority": enums.VpgPriority.of(basic["Priority"]),
            "ProtectedSiteIdentifier": service().local_site().identifier, "TestIntervalInMinutes": None,
            "ServiceProfileIdentifier": None, "ZorgIdentifier": None}


def _journal_out(journal: dict) -> dict:
    return {"DatastoreIdentifier": journal["DatastoreIdentifier"], "DatastoreClusterIdentifier": None,
            "Limitation": {"HardLimitInMB": journal["HardLimitInMB"],
                           "WarningThresholdInMB": journal["WarningThresholdInMB"],
                           "HardLimitInPercent": None, "WarningThresholdInPercent": None}}


def _networks_out(networks: dict) -> dict:
    def one(network):
        return {"Hypervisor": {"DefaultNetworkIdentifier": network}, "VCD": None, "PublicCloud": None}

    return {"Failover": one(networks["FailoverNetworkIdentifier"]),
            "FailoverTest": one(networks["FailoverTestNetworkIdentifier"])}


def _group_out(group: dict) -> dict:
    return {**group, "BootGroupIdentifier": group["Name"]}


def _vm_out(vm: dict) -> dict:
    return {**vm, "BootGroupIdentifier": vm.get("BootGroupName"), "Recovery": None, "Journal": None,
            "Volumes": None}


# --- Zerto's document in, the draft's own form out --------------------------------------------------------

def _unsupported(given: dict, where: str, **neutral) -> None:
    """Zerto fields this ZVM does not support: taken with their neutral value only, refused otherwise."""
    for name, ok in neutral.items():
        value = given.pop(name, None)
        if value not in (None, *ok):
            field = f"{where}.{name}" if where else name
            raise ValidationError(f"{field}: not supported by this ZVM (only null); leave it out", field=field)


def _same(given: dict, where: str, pairs: dict, stored: dict) -> dict:
    """Fold Zerto's field and this API's older name for it into the older name. ``pairs``: older name ->
    Zerto's value (None when not given). When both are given and differ, the one that changes the stored
    value wins (a document read with GET and changed in one place); both changed differently is refused."""
    out = {}
    for name, zerto_value in pairs.items():
        flat = given.pop(name, None)
        if flat is not None and zerto_value is not None and flat != zerto_value:
            if zerto_value == stored.get(name):
                zerto_value = None
            elif flat != stored.get(name):
                raise ValidationError(f"{where}.{name} and its Zerto form say different things: give one",
                                      field=f"{where}.{name}")
        value = zerto_value if zerto_value is not None else flat
        if value is not None:
            out[name] = value
    return out


def _basic_in(given: dict, stored: dict) -> dict:
    given = dict(given)
    protected = given.pop("ProtectedSiteIdentifier", None)
    if protected not in (None, service().local_site().identifier):
        raise ValidationError("Basic.ProtectedSiteIdentifier: a VPG is protected by the site whose ZVM creates "
                              f"it ({service().local_site().identifier}); create it on the ZVM of site "
                              f"{protected}", field="Basic.ProtectedSiteIdentifier")
    _unsupported(given, "Basic", TestIntervalInMinutes=(), ServiceProfileIdentifier=(), ZorgIdentifier=())
    if "Priority" in given:
        given["Priority"] = given["Priority"].internal
    return {**stored, **given}


def _journal_in(given: dict, stored: dict) -> dict:
    given = dict(given)
    limitation = dict(given.pop("Limitation", None) or {})
    _unsupported(limitation, "Journal.Limitation", HardLimitInPercent=(0,), WarningThresholdInPercent=(0,))
    _unsupported(given, "Journal", DatastoreClusterIdentifier=())
    out = _same(given, "Journal", {"HardLimitInMB": limitation.get("HardLimitInMB"),
                                   "WarningThresholdInMB": limitation.get("WarningThresholdInMB")}, stored)
    return {**stored, **given, **out}


def _recovery_in(given: dict, stored: dict) -> dict:
    given = dict(given)
    _unsupported(given, "Recovery", DefaultDatastoreClusterIdentifier=(), ResourcePoolIdentifier=())
    return {**stored, **given}


def _networks_in(given: dict, stored: dict) -> dict:
    given = dict(given)
    nets = {}
    for zerto, flat in (("Failover", "FailoverNetworkIdentifier"), ("FailoverTest", "FailoverTestNetworkIdentifier")):
        network = dict(given.pop(zerto, None) or {})
        _unsupported(network, f"Networks.{zerto}", VCD=(), PublicCloud=())
        hypervisor = network.get("Hypervisor") or {}
        nets[flat] = hypervisor.get("DefaultNetworkIdentifier")
        if "DefaultNetworkIdentifier" in hypervisor and nets[flat] is None and flat not in given:
            given[flat] = None  # Zerto's way of saying "no network": null
    out = _same(given, "Networks", nets, stored)
    return {**stored, **given, **out}


def _groups_in(given) -> list:
    groups = given["BootGroups"] if isinstance(given, dict) else given
    out = []
    for i, group in enumerate(groups):
        ident = group.get("BootGroupIdentifier")
        if ident not in (None, group["Name"]):
            raise ValidationError(f"BootGroups[{i}].BootGroupIdentifier: boot groups are named here; give the "
                                  "group's Name (or leave the identifier out)", field=f"BootGroups[{i}]")
        out.append({"Name": group["Name"], "BootDelayInSeconds": group["BootDelayInSeconds"]})
    return out


def _vms_in(vms: list, current: list) -> list:
    before = {v["VmIdentifier"]: v for v in current}
    out = []
    for i, vm in enumerate(vms):
        vm = dict(vm)
        _unsupported(vm, f"Vms[{i}]", Recovery=(), Journal=(), Volumes=([],))
        group = _same(vm, f"Vms[{i}]", {"BootGroupName": vm.pop("BootGroupIdentifier", None)},
                      before.get(vm["VmIdentifier"], {}))
        out.append({"VmIdentifier": vm["VmIdentifier"], "BootGroupName": group.get("BootGroupName"),
                    "Nics": vm.get("Nics") or []})
    return out


def _save(draft: m.VpgSettings, body: dict) -> None:
    draft.body = body
    draft.updated_at = time.time()
    draft.save()


SECTION_IN = {"Basic": _basic_in, "Journal": _journal_in, "Recovery": _recovery_in, "Networks": _networks_in}


def _document_in(draft: m.VpgSettings, body: dict) -> dict:
    """A whole document PUT: read-only fields must be unchanged, unsupported ones neutral."""
    body = dict(body)
    current = _draft_json(draft)
    for name in ("VpgSettingsIdentifier", "VpgIdentifier", "CreatedBy", "CreatedAt"):
        if name in body and body.pop(name) not in (None, current[name]):
            raise ValidationError(f"{name} is read-only: leave it out or as GET answered it", field=name)
    scripting = body.pop("Scripting", None) or {}
    for when in ("PreRecovery", "PostRecovery", "PostBackup"):
        if (scripting.get(when) or {}).get("Command"):
            raise ValidationError(f"Scripting.{when}.Command: recovery scripts are not supported by this ZVM: "
                                  "leave the command null", field=f"Scripting.{when}.Command")
    _unsupported(body, "", Backup=(), LongTermRetention=(), Protected=())
    doc = dict(draft.body)
    for key, fold in SECTION_IN.items():
        if key in body:
            doc[key] = fold(body[key], doc[key])
    if "BootGroups" in body:
        doc["BootGroups"] = _groups_in(body["BootGroups"])
    if "Vms" in body:
        doc["Vms"] = _vms_in(body["Vms"], doc["Vms"])
    return doc


@bp.operation("POST", "/vpgSettings", summary="Start a VPG settings draft",
              body=schemas.ref("VpgSettingsCreate"), body_required=False,
              response=schemas.string("The draft's identifier, a bare JSON string."), errors=[409])
def create_vpg_settings(body):
    """Without a body: settings for a new VPG, with defaults. With ``VpgIdentifier``: a copy of that VPG's
    settings, to edit it (VMs added or removed, limits changed)."""
    site = service().local_site()
    vpg = None
    if body and "VpgIdentifier" in body:
        vpg = m.Vpg.get_or_none(m.Vpg.identifier == body["VpgIdentifier"])
        if vpg is None:
            raise ValidationError(f"VpgIdentifier {body['VpgIdentifier']!r} is not a VPG: list them with "
                                  "GET /v1/vpgs", field="VpgIdentifier")
        if vpg.status == "Deleting":
            raise ConflictError(f"VPG {vpg.name} is being deleted: it cannot be edited")
        doc = vpg_settings.settings_of(vpg)
    else:
        doc = vpg_settings.default_settings(site)
    draft = m.VpgSettings.create(vpg=vpg, body=doc, created_by=current_user())
    note_entity(draft.identifier)
    return draft.identifier


@bp.operation("GET", "/vpgSettings", summary="Open drafts", response=schemas.array_of("VpgSettings"))
def list_vpg_settings():
    return [_draft_json(d) for d in m.VpgSettings.select().order_by(m.VpgSettings.created_at)]


@bp.operation("GET", "/vpgSettings/{vpgSettingsIdentifier}", summary="A draft",
              response=schemas.ref("VpgSettings"))
def get_vpg_settings(vpgSettingsIdentifier):
    return _draft_json(get_draft(vpgSettingsIdentifier))


@bp.operation("PUT", "/vpgSettings/{vpgSettingsIdentifier}", summary="Replace a draft",
              body=schemas.ref("VpgSettingsInput"), response=schemas.ref("VpgSettings"))
def put_vpg_settings(vpgSettingsIdentifier, body):
    """Zerto's document as GET answers it (read-only fields unchanged), or parts of it: a section left out
    keeps the draft's, a field left out of a section keeps its value."""
    draft = get_draft(vpgSettingsIdentifier)
    _save(draft, _document_in(draft, body))
    return _draft_json(draft)


@bp.operation("DELETE", "/vpgSettings/{vpgSettingsIdentifier}", summary="Discard a draft", status=204,
              response_description="Discarded.")
def delete_vpg_settings(vpgSettingsIdentifier):
    get_draft(vpgSettingsIdentifier).delete_instance()


def _section_routes(section: str, key: str, schema_name: str) -> None:
    def get_section(vpgSettingsIdentifier):
        return _draft_json(get_draft(vpgSettingsIdentifier))[key]

    def put_section(vpgSettingsIdentifier, body):
        draft = get_draft(vpgSettingsIdentifier)
        _save(draft, {**draft.body, key: SECTION_IN[key](body, draft.body[key])})
        return _draft_json(draft)[key]

    get_section.__name__ = f"get_vpg_settings_{section}"
    put_section.__name__ = f"put_vpg_settings_{section}"
    path = f"/vpgSettings/{{vpgSettingsIdentifier}}/{section}"
    bp.operation("GET", path, summary=f"The {key} settings of a draft",
                 response=schemas.ref(schema_name))(get_section)
    bp.operation("PUT", path, summary=f"Replace the {key} settings of a draft",
                 body=schemas.ref(schema_name), response=schemas.ref(schema_name))(put_section)


for _section, (_key, _schema) in SECTIONS.items():
    _section_routes(_section, _key, _schema)


BOOT_GROUPS = schemas.BOOT_GROUPS


@bp.operation("GET", "/vpgSettings/{vpgSettingsIdentifier}/bootgroups", summary="Boot groups of a draft",
              response=BOOT_GROUPS)
def get_vpg_settings_bootgroups(vpgSettingsIdentifier):
    return _draft_json(get_draft(vpgSettingsIdentifier))["BootGroups"]


@bp.operation("PUT", "/vpgSettings/{vpgSettingsIdentifier}/bootgroups", summary="Replace the boot groups",
              body=BOOT_GROUPS, response=BOOT_GROUPS)
def put_vpg_settings_bootgroups(vpgSettingsIdentifier, body):
    draft = get_draft(vpgSettingsIdentifier)
    _save(draft, {**draft.body, "BootGroups": _groups_in(body)})
    return _draft_json(draft)["BootGroups"]


@bp.operation("GET", "/vpgSettings/{vpgSettingsIdentifier}/vms", summary="VMs of a draft",
              response=schemas.array_of("VpgSettingsVm"))
def get_vpg_settings_vms(vpgSettingsIdentifier):
    return _draft_json(get_draft(vpgSettingsIdentifier))["Vms"]


@bp.operation("POST", "/vpgSettings/{vpgSettingsIdentifier}/vms", summary="Add a VM to a draft",
              body=schemas.ref("VpgSettingsVm"), response=schemas.array_of("VpgSettingsVm"), errors=[409])
def add_vpg_settings_vm(vpgSettingsIdentifier, body):
    draft = get_draft(vpgSettingsIdentifier)
    vms = list(draft.body["Vms"])
    if any(v["VmIdentifier"] == body["VmIdentifier"] for v in vms):
        raise ConflictError(f"VM {body['VmIdentifier']!r} is in the draft already")
    if len(vms) >= 1024:
        raise ConflictError("a VPG holds at most 1024 VMs: split them over several VPGs")
    vms += _vms_in([body], [])
    _save(draft, {**draft.body, "Vms": vms})
    return [_vm_out(v) for v in vms]


@bp.operation("DELETE", "/vpgSettings/{vpgSettingsIdentifier}/vms/{vmIdentifier}",
              summary="Remove a VM from a draft", response=schemas.array_of("VpgSettingsVm"))
def remove_vpg_settings_vm(vpgSettingsIdentifier, vmIdentifier):
    draft = get_draft(vpgSettingsIdentifier)
    vms = [v for v in draft.body["Vms"] if v["VmIdentifier"] != vmIdentifier]
    if len(vms) == len(draft.body["Vms"]):
        raise NotFoundError(f"VM {vmIdentifier!r} is not in this draft", code="VmNotFound")
    _save(draft, {**draft.body, "Vms": vms})
    return [_vm_out(v) for v in vms]


@bp.operation("POST", "/vpgSettings/{vpgSettingsIdentifier}/commit", summary="Commit a draft", status=202,
              response=schemas.ref("TaskId"), errors=[409])
def commit_vpg_settings(vpgSettingsIdentifier):
    """Check the draft against the current inventory and VPGs, then create (or update) the VPG and start
    configuring the VRAs of both sites; returns that task. The draft is gone after a successful commit; a
    refused commit changes nothing and keeps the draft."""
    draft = get_draft(vpgSettingsIdentifier)
    editing = m.Vpg.get_or_none(m.Vpg.id == draft.vpg_id) if draft.vpg_id else None
    if draft.vpg_id and editing is None:
        raise ConflictError("the VPG this draft edits was deleted: discard the draft")
    vpg, created = vpg_settings.commit(draft.body, service().local_site(), editing)
    draft.delete_instance()
    note_entity(vpg.identifier, f"{'Create' if created else 'Update'} VPG {vpg.name}")
    g.event_kind = "CreateVpg" if created else "UpdateVpg"
    task = queue_task("CreateVpg" if created else "UpdateVpg", vpg=vpg.identifier,
                      site=vpg.recovery_site.identifier)
    return render.task_id(task)
