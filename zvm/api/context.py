"""Per-request helpers the handlers share: the service, the session, the write transaction and the audit.

Every call but login needs a session: ``require_session`` reads the ``x-zerto-session`` header, finds the
session by the token's hash, refuses it when idle longer than the configured timeout or when its user was
disabled, and notes the user and role in ``flask.g``; ``require_role`` then refuses (403, audited) a user
whose role is below the operation's. Every call that changes state runs in ``run_write``: one transaction around the handler, and
an event (who, what, how it ended) written after it, also when the request was refused.
"""

from __future__ import annotations

import re
import time

import flask
from flask import g, request

from zvm import models as m
from zvm.db import transaction
from zvm.errors import AuthorizationError, SessionError, ZvmError

SESSION_HEADER = "x-zerto-session"


def service():
    """The running ZVM (zvm.service.Zvm) of this app."""
    return flask.current_app.extensions["zvm"]


def current_user() -> str:
    return getattr(g, "user", "") or ""


def require_session() -> None:
    token = request.headers.get(SESSION_HEADER, "")
    if not token:
        raise SessionError(f"this call needs a session: log in with POST /v1/session/add (HTTP Basic) and "
                           f"send the token it returns in the {SESSION_HEADER} header")
    zvm = service()
    # Every call runs this: plain SQL, not a query built anew each time.
    db = zvm.db
    row = db.execute_sql(f'SELECT s.id, s.last_used, u.username, u.role, u.disabled FROM "session" s JOIN "user" u '
                         f"ON u.id = s.user_id WHERE s.token_hash = {db.param}", (m.token_hash(token),)).fetchone()
    now = time.time()
    timeout = zvm.config.session_idle_timeout
    if row is None or now - row[1] > timeout or row[4]:
        raise SessionError("the session is unknown or expired (idle for more than "
                           f"{timeout} s): log in again with POST /v1/session/add")
    session_id, last_used, username, role, _ = row
    # Note the use at most every few seconds: a read should not cost a write each time.
    if now - last_used > min(30.0, timeout / 10):
        m.Session.update(last_used=now).where(m.Session.id == session_id).execute()
    g.session_id = session_id
    g.user = username
    g.role = role


def require_role(op) -> None:
    """Refuse, and audit, a session whose user's role is below what ``op`` (a spec.Operation) needs."""
    role = getattr(g, "role", "")
    if m.role_allows(role, op.role):
        return
    exc = AuthorizationError(f"{op.summary.lower()} needs the {op.role} role; user {current_user()!r} has the "
                             f"{role or 'no'} role: ask an administrator")
    started = time.time()
    with transaction():
        _record(op, started, refused=exc, kind="AccessDenied")
    raise exc


def pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"_+", name))


def note_entity(identifier: str, description: str | None = None) -> None:
    """Tell the audit which object this request was about (when the path does not say)."""
    g.event_entity = identifier
    if description:
        g.event_description = description


def run_write(op, call):
    """Run a state-changing handler in one transaction and audit how it ended."""
    started = time.time()
    try:
        with transaction():
            result = call()
            _record(op, started, result=result)
        return result
    except ZvmError as exc:
        if not isinstance(exc, SessionError):
            with transaction():
                _record(op, started, refused=exc)
        raise


def _record(op, started: float, *, result=None, refused: ZvmError | None = None, kind: str | None = None) -> None:
    entity = getattr(g, "event_entity", "") or next(iter((request.view_args or {}).values()), "")
    task = None
    payload = result[0] if isinstance(result, tuple) else result
    if isinstance(payload, str) and op.response == {"$ref": "#/components/schemas/TaskId"}:
        task = payload  # a long operation answers its task id as a bare string
    elif isinstance(payload, dict):
        entity = entity or next((str(v) for k, v in payload.items()
                                 if k.endswith("Identifier") and k != "TaskIdentifier"), "")
    if refused is not None:
        outcome, detail = "Refused", f"{refused.code}: {refused}"
    elif task:
        outcome, detail = "InProgress", ""
    else:
        outcome, detail = "Succeeded", ""
    m.Event.create(
        kind=kind or getattr(g, "event_kind", None) or pascal(op.operation_id), category=op.tag,
        user=current_user(),
        description=getattr(g, "event_description", op.summary), entity_id=str(entity)[:64], task=task,
        result=outcome, detail=detail, client=(request.remote_addr or "")[:255], started_at=started,
        completed_at=None if outcome == "InProgress" else time.time())
