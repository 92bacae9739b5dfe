"""vpgSettings: draft a VPG's settings (new or existing VPG), edit them part by part, then commit."""

from __future__ import annotations

import time

from flask import g

from zvm import models as m
from zvm import vpg_settings
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
    vpg = m.Vpg.get_or_none(m.Vpg.id == d.vpg_id) if d.vpg_id else None
    return {"VpgSettingsIdentifier": d.identifier, "VpgIdentifier": vpg.identifier if vpg else None,
            "CreatedBy": d.created_by, "CreatedAt": render.iso(d.created_at), **d.body}


def _save(draft: m.VpgSettings, body: dict) -> None:
    draft.body = body
    draft.updated_at = time.time()
    draft.save()


@bp.operation("POST", "/vpgSettings", summary="Start a VPG settings draft",
              body=schemas.ref("VpgSettingsCreate"), body_required=False,
              response=schemas.ref("VpgSettingsId"), errors=[409])
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
    return {"VpgSettingsIdentifier": draft.identifier}


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
    draft = get_draft(vpgSettingsIdentifier)
    _save(draft, body)
    return _draft_json(draft)


@bp.operation("DELETE", "/vpgSettings/{vpgSettingsIdentifier}", summary="Discard a draft", status=204,
              response_description="Discarded.")
def delete_vpg_settings(vpgSettingsIdentifier):
    get_draft(vpgSettingsIdentifier).delete_instance()


def _section_routes(section: str, key: str, schema_name: str) -> None:
    def get_section(vpgSettingsIdentifier):
        return get_draft(vpgSettingsIdentifier).body[key]

    def put_section(vpgSettingsIdentifier, body):
        draft = get_draft(vpgSettingsIdentifier)
        _save(draft, {**draft.body, key: body})
        return draft.body[key]

    get_section.__name__ = f"get_vpg_settings_{section}"
    put_section.__name__ = f"put_vpg_settings_{section}"
    path = f"/vpgSettings/{{vpgSettingsIdentifier}}/{section}"
    bp.operation("GET", path, summary=f"The {key} settings of a draft",
                 response=schemas.ref(schema_name))(get_section)
    bp.operation("PUT", path, summary=f"Replace the {key} settings of a draft",
                 body=schemas.ref(schema_name), response=schemas.ref(schema_name))(put_section)


for _section, (_key, _schema) in SECTIONS.items():
    _section_routes(_section, _key, _schema)


BOOT_GROUPS = {"type": "array", "items": schemas.ref("VpgSettingsBootGroup"), "maxItems": 64}


@bp.operation("GET", "/vpgSettings/{vpgSettingsIdentifier}/bootgroups", summary="Boot groups of a draft",
              response=BOOT_GROUPS)
def get_vpg_settings_bootgroups(vpgSettingsIdentifier):
    return get_draft(vpgSettingsIdentifier).body["BootGroups"]


@bp.operation("PUT", "/vpgSettings/{vpgSettingsIdentifier}/bootgroups", summary="Replace the boot groups",
              body=BOOT_GROUPS, response=BOOT_GROUPS)
def put_vpg_settings_bootgroups(vpgSettingsIdentifier, body):
    draft = get_draft(vpgSettingsIdentifier)
    _save(draft, {**draft.body, "BootGroups": body})
    return body


@bp.operation("GET", "/vpgSettings/{vpgSettingsIdentifier}/vms", summary="VMs of a draft",
              response=schemas.array_of("VpgSettingsVm"))
def get_vpg_settings_vms(vpgSettingsIdentifier):
    return get_draft(vpgSettingsIdentifier).body["Vms"]


@bp.operation("POST", "/vpgSettings/{vpgSettingsIdentifier}/vms", summary="Add a VM to a draft",
              body=schemas.ref("VpgSettingsVm"), response=schemas.array_of("VpgSettingsVm"), errors=[409])
def add_vpg_settings_vm(vpgSettingsIdentifier, body):
    draft = get_draft(vpgSettingsIdentifier)
    vms = list(draft.body["Vms"])
    if any(v["VmIdentifier"] == body["VmIdentifier"] for v in vms):
        raise ConflictError(f"VM {body['VmIdentifier']!r} is in the draft already")
    if len(vms) >= 1024:
        raise ConflictError("a VPG holds at most 1024 VMs: split them over several VPGs")
    vms.append({"VmIdentifier": body["VmIdentifier"], "BootGroupName": body.get("BootGroupName"),
                "Nics": body.get("Nics") or []})
    _save(draft, {**draft.body, "Vms": vms})
    return vms


@bp.operation("DELETE", "/vpgSettings/{vpgSettingsIdentifier}/vms/{vmIdentifier}",
              summary="Remove a VM from a draft", response=schemas.array_of("VpgSettingsVm"))
def remove_vpg_settings_vm(vpgSettingsIdentifier, vmIdentifier):
    draft = get_draft(vpgSettingsIdentifier)
    vms = [v for v in draft.body["Vms"] if v["VmIdentifier"] != vmIdentifier]
    if len(vms) == len(draft.body["Vms"]):
        raise NotFoundError(f"VM {vmIdentifier!r} is not in this draft", code="VmNotFound")
    _save(draft, {**draft.body, "Vms": vms})
    return vms


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
