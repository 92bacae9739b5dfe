"""Tasks (long operations and their progress), alerts (conditions that need attention), events (the audit
trail: who did what and how it ended)."""

from __future__ import annotations

import time

from zvm import enums
from zvm import models as m
from zvm.api import render, schemas
from zvm.api.recovery import peer_task
from zvm.api.spec import ApiBlueprint, Param
from zvm.api.validate import timestamp_of
from zvm.errors import ConflictError, NotFoundError

tasks = ApiBlueprint("tasks", __name__, tag="Tasks", description="Long operations and their progress.")
alerts = ApiBlueprint("alerts", __name__, tag="Alerts", description="Conditions that need attention.")
events = ApiBlueprint("events", __name__, tag="Events", description="Every operation: who, what, how it ended.")

LIMIT = Param("limit", schemas.integer(minimum=1, maximum=10000), "At most this many, newest first (500).")


@tasks.operation("GET", "/tasks", summary="Tasks, newest first", response=schemas.array_of("Task"),
                 query=[Param("state", schemas.enum(enums.TaskState)),
                        Param("type", schemas.enum(enums.TaskType)),
                        Param("vpgIdentifier", schemas.string(maxLength=255)),
                        Param("vraIdentifier", schemas.string(maxLength=255)), LIMIT])
def list_tasks(query):
    q = m.Task.select()
    if "state" in query:
        q = q.where(m.Task.state == query["state"].internal)
    if "type" in query:
        q = q.where(m.Task.kind == query["type"].internal)
    if "vpgIdentifier" in query:
        q = q.where(m.Task.vpg == query["vpgIdentifier"])
    if "vraIdentifier" in query:
        q = q.where(m.Task.vra == query["vraIdentifier"])
    return [render.task(t) for t in q.order_by(m.Task.id.desc()).limit(query.get("limit", 500))]


@tasks.operation("GET", "/tasks/{taskIdentifier}", summary="One task", response=schemas.ref("Task"))
def get_task(taskIdentifier):
    t = m.Task.get_or_none(m.Task.identifier == taskIdentifier)
    if t is None:
        forwarded = peer_task(taskIdentifier)  # a recovery operation forwarded to a peer (zvm/api/recovery.py)
        if forwarded is not None:
            return forwarded
        raise NotFoundError(f"no task {taskIdentifier!r}: list them with GET /v1/tasks", code="TaskNotFound")
    return render.task(t)


# --- alerts -----------------------------------------------------------------------------------------------

def get_alert(identifier: str) -> m.Alert:
    a = m.Alert.get_or_none(m.Alert.identifier == identifier)
    if a is None:
        raise NotFoundError(f"no alert {identifier!r}: list them with GET /v1/alerts", code="AlertNotFound")
    return a


@alerts.operation("GET", "/alerts", summary="Alerts, newest first", response=schemas.array_of("Alert"),
                  query=[Param("level", schemas.enum(enums.AlertLevel)),
                         Param("entity", schemas.enum(enums.AlertEntity)),
                         Param("entityIdentifier", schemas.string(maxLength=255)),
                         Param("code", schemas.string(maxLength=64)),
                         Param("isActive", schemas.boolean(), "true: only alerts whose condition holds now."),
                         Param("isDismissed", schemas.boolean()), LIMIT])
def list_alerts(query):
    q = m.Alert.select()
    for param, column in (("level", m.Alert.level), ("entity", m.Alert.entity),
                          ("entityIdentifier", m.Alert.entity_id), ("code", m.Alert.code),
                          ("isDismissed", m.Alert.dismissed)):
        if param in query:
            value = query[param]
            q = q.where(column == (value.internal if isinstance(value, enums.ZertoEnum) else value))
    if "isActive" in query:
        q = q.where(m.Alert.cleared_at.is_null(query["isActive"]))
    return [render.alert(a) for a in q.order_by(m.Alert.id.desc()).limit(query.get("limit", 500))]


@alerts.operation("GET", "/alerts/{alertIdentifier}", summary="One alert", response=schemas.ref("Alert"))
def get_alert_by_id(alertIdentifier):
    return render.alert(get_alert(alertIdentifier))


def _set_dismissed(identifier: str, dismissed: bool) -> dict:
    a = get_alert(identifier)
    if bool(a.dismissed) == dismissed:
        raise ConflictError(f"the alert is {'dismissed' if dismissed else 'not dismissed'} already")
    a.dismissed, a.updated_at = dismissed, time.time()
    a.save()
    return render.alert(a)


@alerts.operation("POST", "/alerts/{alertIdentifier}/dismiss", role="operator", summary="Dismiss an alert",
                  response=schemas.ref("Alert"), errors=[409])
def dismiss_alert(alertIdentifier):
    return _set_dismissed(alertIdentifier, True)


@alerts.operation("POST", "/alerts/{alertIdentifier}/undismiss", role="operator", summary="Undismiss an alert",
                  response=schemas.ref("Alert"), errors=[409])
def undismiss_alert(alertIdentifier):
    return _set_dismissed(alertIdentifier, False)


# --- events -----------------------------------------------------------------------------------------------

def _event_kinds(wanted: str) -> list[str]:
    """The event kinds a filter names: the product's kind itself, or every kind of a Zerto event type."""
    try:
        member = enums.EventType.parse(wanted)
    except ValueError:
        return [wanted]
    kinds = [k for (k,) in m.Event.select(m.Event.kind).distinct().tuples()]
    return [wanted, *(k for k in kinds if enums.event_type(k) == member)]


@events.operation("GET", "/events", summary="Events, newest first", response=schemas.array_of("Event"),
                  query=[Param("category", schemas.string(maxLength=32)),
                         Param("eventType", schemas.string("Zerto's event type (number or name) or the "
                                                           "product's EventKind.", maxLength=64)),
                         Param("user", schemas.string(maxLength=128)),
                         Param("entityIdentifier", schemas.string(maxLength=255)),
                         Param("result", schemas.string(enum=["InProgress", "Succeeded", "Failed", "Refused"])),
                         Param("startDate", schemas.date_time()), Param("endDate", schemas.date_time()), LIMIT])
def list_events(query):
    q = m.Event.select()
    if "eventType" in query:
        q = q.where(m.Event.kind.in_(_event_kinds(query["eventType"])))
    for param, column in (("category", m.Event.category), ("user", m.Event.user),
                          ("entityIdentifier", m.Event.entity_id), ("result", m.Event.result)):
        if param in query:
            q = q.where(column == query[param])
    if "startDate" in query:
        q = q.where(m.Event.started_at >= timestamp_of(query["startDate"]))
    if "endDate" in query:
        q = q.where(m.Event.started_at <= timestamp_of(query["endDate"], end=True))
    return [render.event(e) for e in q.order_by(m.Event.id.desc()).limit(query.get("limit", 500))]


@events.operation("GET", "/events/{eventIdentifier}", summary="One event", response=schemas.ref("Event"))
def get_event(eventIdentifier):
    e = m.Event.get_or_none(m.Event.identifier == eventIdentifier)
    if e is None:
        raise NotFoundError(f"no event {eventIdentifier!r}: list them with GET /v1/events", code="EventNotFound")
    return render.event(e)
