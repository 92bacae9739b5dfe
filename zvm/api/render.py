"""Model rows -> the API's JSON shapes (zvm/api/schemas.py). Pure functions of the rows they are given."""

from __future__ import annotations

from datetime import UTC, datetime

from zvm import enums
from zvm import models as m


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def site_ref(site: m.Site) -> dict:
    return {"SiteIdentifier": site.identifier, "SiteName": site.name}


def task_id(task: m.Task) -> str:
    """A long operation answers its task's identifier as a bare JSON string, as Zerto's API does."""
    return task.identifier


def task(t: m.Task) -> dict:
    return {
        "TaskIdentifier": t.identifier,
        "Type": enums.TaskType.of(t.kind),
        "Status": {"State": enums.TaskState.of(t.state), "Progress": int(t.progress)},
        "Step": t.step,
        "InitiatedBy": t.initiated_by,
        "Created": iso(t.created_at),
        "Started": iso(t.started_at),
        "Completed": iso(t.completed_at),
        "RelatedEntities": {"Vpgs": [t.vpg] if t.vpg else [], "Vras": [t.vra] if t.vra else [],
                            "Sites": [t.site] if t.site else []},
        "Result": t.result or {},
        "Error": {"Code": t.error_code, "Message": t.error_message} if t.state == "Failed" else None,
        "CompleteReason": t.error_message if t.state == "Failed" else "",
        "IsCancellable": False,
    }


def alert(a: m.Alert) -> dict:
    return {
        "AlertIdentifier": a.identifier,
        "Code": a.code,
        "Level": enums.AlertLevel.of(a.level),
        "Entity": enums.AlertEntity.of(a.entity),
        "EntityIdentifier": a.entity_id,
        "Description": a.description,
        "TurnedOn": iso(a.raised_at),
        "LastUpdated": iso(a.updated_at),
        "ClearedAt": iso(a.cleared_at),
        "IsActive": a.cleared_at is None,
        "IsDismissed": bool(a.dismissed),
    }


def event(e: m.Event) -> dict:
    return {
        "EventIdentifier": e.identifier,
        "EventType": enums.event_type(e.kind),
        "EventKind": e.kind,
        "Category": e.category,
        "User": e.user,
        "Description": e.description,
        "EntityIdentifier": e.entity_id,
        "TaskIdentifier": e.task,
        "Result": e.result,
        "Detail": e.detail,
        "ClientAddress": e.client or "",
        "Started": iso(e.started_at),
        "Completed": iso(e.completed_at),
    }


def user(u: m.User, active_sessions: int) -> dict:
    return {"UserName": u.username, "Role": u.role, "Enabled": not u.disabled, "CreatedAt": iso(u.created_at),
            "UpdatedAt": iso(u.updated_at), "ActiveSessions": active_sessions}
