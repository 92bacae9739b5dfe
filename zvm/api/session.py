"""Sessions: log in with HTTP Basic, get a token for the ``x-zerto-session`` header; log out."""

from __future__ import annotations

import secrets
import time

from flask import g, request

from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import SESSION_HEADER, service
from zvm.api.spec import ApiBlueprint
from zvm.errors import AuthenticationError

bp = ApiBlueprint("session", __name__, tag="Session",
                  description="Log in (HTTP Basic) for a session token; every other call needs it.")


def _session_json(session: m.Session) -> dict:
    return {"User": session.user.username, "CreatedAt": render.iso(session.created_at),
            "LastUsedAt": render.iso(session.last_used),
            "IdleTimeoutInSeconds": service().config.session_idle_timeout}


@bp.operation("POST", "/session/add", auth="basic", summary="Log in",
              response=schemas.ref("Session"),
              response_headers={SESSION_HEADER: {"description": "The session token for later calls.",
                                                 "schema": {"type": "string"}}})
def login():
    """Check the user name and password given with HTTP Basic authentication and open a session. The token
    is returned in the ``x-zerto-session`` response header; send it in the same header on every other call.
    A session ends after the configured idle time without calls (``IdleTimeoutInSeconds``)."""
    auth = request.authorization
    if auth is None or auth.type != "basic" or not auth.username:
        raise AuthenticationError("log in with HTTP Basic authentication: an Authorization: Basic header "
                                  "with the user name and password")
    g.login_user = auth.username[:128]
    user = m.User.get_or_none(m.User.username == auth.username)
    # Hash even for an unknown user, so the answer time does not tell which user names exist.
    ok = user.check_password(auth.password or "") if user else m.verify_password(
        auth.password or "", m.hash_password("x", salt=b"0" * 16))
    if not ok:
        raise AuthenticationError("the user name or password is wrong: check them and log in again")
    token, session = open_session(user)
    return _session_json(session), {SESSION_HEADER: token}


def open_session(user: m.User) -> tuple[str, m.Session]:
    """A new session for ``user``, authenticated already (HTTP Basic here, vCenter for the vSphere Client
    plugin: zvm/api/plugin.py). Returns the token (kept only as its hash) and the session."""
    token = secrets.token_urlsafe(32)
    now = time.time()
    # Drop this user's sessions that are long idle, so the table does not grow without bound.
    m.Session.delete().where(m.Session.user == user,
                             m.Session.last_used < now - service().config.session_idle_timeout).execute()
    session = m.Session.create(token_hash=m.token_hash(token), user=user, created_at=now, last_used=now,
                               client=(request.remote_addr or "")[:255])
    g.user = user.username
    return token, session


@bp.operation("GET", "/session", summary="The current session", response=schemas.ref("Session"), cache=False)
def get_session():
    return _session_json(m.Session.get_by_id(g.session_id))


@bp.operation("DELETE", "/session", summary="Log out", status=204, response_description="Logged out.")
def logout():
    m.Session.delete().where(m.Session.id == g.session_id).execute()
