"""Sessions: log in with HTTP Basic, get a token for the ``x-zerto-session`` header; log out.

``authenticate(zvm, throttle, username, password, address)`` is the one way to open a session (the REST
login and the web UI's both use it). It answers an unknown user, a disabled one and a wrong password alike
(the same error, after the same single scrypt run), counts the failure for throttling (zvm/api/throttle.py)
and audits every attempt as a ``Login`` event with the user name and the client address. The password is
checked outside any database transaction: a slow hash never holds the write lock.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import flask
from flask import g, request

from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import SESSION_HEADER, service
from zvm.api.spec import ApiBlueprint
from zvm.api.throttle import LoginThrottle
from zvm.db import transaction
from zvm.errors import AuthenticationError

bp = ApiBlueprint("session", __name__, tag="Session",
                  description="Log in (HTTP Basic) for a session token; every other call needs it.")

REFUSED = "the user name or password is wrong: check them and log in again"


@dataclass(frozen=True)
class OpenedSession:
    session: m.Session
    token: str  # give it to the client; only its hash is stored


def login_throttle(app: flask.Flask | None = None) -> LoginThrottle:
    """The login throttle of this app (made by create_app)."""
    return (app or flask.current_app).extensions["login_throttle"]


def authenticate(zvm, throttle: LoginThrottle, username: str, password: str, address: str) -> OpenedSession:
    """A new session for ``username`` if ``password`` is right, the user exists and is enabled; else
    ``AuthenticationError`` (401), or ``TooManyAttemptsError`` (429) while the user name or the address is
    throttled. Call with the database connected, outside a transaction."""
    username, address = username[:128], address[:255]
    throttle.check(username, address)
    user = m.User.get_or_none(m.User.username == username)
    # Exactly one scrypt run whoever asks: against the user's hash, or an unusable one of the same cost.
    matches = m.verify_password(password, user.password_hash if user else m.unusable_password_hash())
    if user is None or user.disabled or not matches:
        reason = "unknown user" if user is None else "user disabled" if user.disabled else "wrong password"
        refuse(throttle, username, address, reason)
    with transaction():
        throttle.succeeded(username)
        opened = open_session(zvm, user, address)
        _event(username, address, "Succeeded", f"role {user.role}", opened.session.created_at)
    return opened


def open_session(zvm, user: m.User, address: str) -> OpenedSession:
    """A new session for ``user``, who proved who they are already: by password (``authenticate``), or by
    a vCenter session the vSphere Client handed over (zvm/api/plugin.py). Call inside a transaction."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    # Drop this user's sessions that are long idle, so the table does not grow without bound.
    m.Session.delete().where(m.Session.user == user,
                             m.Session.last_used < now - zvm.config.session_idle_timeout).execute()
    session = m.Session.create(token_hash=m.token_hash(token), user=user, created_at=now, last_used=now,
                               client=address[:255])
    return OpenedSession(session=session, token=token)


def refuse(throttle: LoginThrottle, username: str, address: str, reason: str):
    """Count and audit a failed login, then raise the one answer every failure gets."""
    now = time.time()
    with transaction():
        lockout = throttle.failed(username, address)
        _event(username, address, "Refused", f"AuthenticationFailed: {reason}", now)
        if lockout:
            m.Event.create(kind="LoginThrottled", category="Session", user=username, client=address,
                           description=lockout, result="Refused", detail="TooManyAttempts", started_at=now,
                           completed_at=now)
    raise AuthenticationError(REFUSED)


def _event(username: str, address: str, result: str, detail: str, now: float) -> None:
    m.Event.create(kind="Login", category="Session", user=username, client=address, description="Log in",
                   result=result, detail=detail, started_at=now, completed_at=now)


def _session_json(session: m.Session) -> dict:
    return {"User": session.user.username, "Role": session.user.role, "CreatedAt": render.iso(session.created_at),
            "LastUsedAt": render.iso(session.last_used),
            "IdleTimeoutInSeconds": service().config.session_idle_timeout}


@bp.operation("POST", "/session/add", auth="basic", summary="Log in", own_transaction=True,
              response=schemas.ref("Session"), errors=(429,),
              response_headers={SESSION_HEADER: {"description": "The session token for later calls.",
                                                 "schema": {"type": "string"}}})
def login():
    """Check the user name and password given with HTTP Basic authentication and open a session. The token
    is returned in the ``x-zerto-session`` response header; send it in the same header on every other call.
    A session ends after the configured idle time without calls (``IdleTimeoutInSeconds``). After a few
    failed logins for a user name or from an address, further attempts are refused for a while (429, with
    a Retry-After header), longer after each failure."""
    address = request.remote_addr or ""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        # Not a guess, but counted for the address all the same: a flood of these is audited once throttled.
        login_throttle().check("", address)
        try:
            refuse(login_throttle(), "", address, "no HTTP Basic credentials")
        except AuthenticationError:
            raise AuthenticationError("log in with HTTP Basic authentication: an Authorization: Basic header "
                                      "with the user name and password") from None
    opened = authenticate(service(), login_throttle(), auth.username, auth.password or "", address)
    g.user = opened.session.user.username
    return _session_json(opened.session), {SESSION_HEADER: opened.token}


@bp.operation("GET", "/session", summary="The current session", response=schemas.ref("Session"), cache=False)
def get_session():
    return _session_json(m.Session.get_by_id(g.session_id))


@bp.operation("DELETE", "/session", summary="Log out", role="viewer", status=204, response_description="Logged out.")
def logout():
    m.Session.delete().where(m.Session.id == g.session_id).execute()
