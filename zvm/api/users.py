"""Users and their roles (admin only): list, create, change role, disable or enable, reset a password.

Roles are zvm.models.ROLES: viewer (read only), operator (also failover tests, failover, move, checkpoints,
pause and resume), admin (everything, users included). Disabling a user or resetting its password ends its
sessions. The last enabled admin can be neither disabled nor demoted, so the site always has one.
Passwords are stored as scrypt hashes only and never appear in an answer or an event.
"""

from __future__ import annotations

import time

import peewee

from zvm import models as m
from zvm.api import render, schemas
from zvm.api.context import note_entity
from zvm.api.spec import ApiBlueprint
from zvm.errors import ConflictError, NotFoundError

bp = ApiBlueprint("users", __name__, tag="User",
                  description="Who may log in, and with which role (admin only).")


def _user(name: str) -> m.User:
    user = m.User.get_or_none(m.User.username == name)
    if user is None:
        raise NotFoundError(f"no user named {name!r}: see GET /v1/users", code="UserNotFound")
    return user


def _json(user: m.User) -> dict:
    return render.user(user, m.Session.select().where(m.Session.user == user).count())


def _end_sessions(user: m.User) -> None:
    m.Session.delete().where(m.Session.user == user).execute()


def _other_enabled_admins(user: m.User) -> int:
    return m.User.select().where(m.User.role == "admin", m.User.disabled == False,  # noqa: E712
                                 m.User.id != user.id).count()


@bp.operation("GET", "/users", summary="List the users", role="admin", response=schemas.array_of("User"))
def list_users():
    sessions = dict(m.Session.select(m.Session.user, peewee.fn.COUNT(m.Session.id))
                    .group_by(m.Session.user).tuples())
    return [render.user(u, sessions.get(u.id, 0)) for u in m.User.select().order_by(m.User.username)]


@bp.operation("POST", "/users", summary="Create a user", role="admin", body=schemas.ref("UserCreate"),
              response=schemas.ref("User"), errors=(409,))
def create_user(body: dict):
    name = body["UserName"]
    note_entity(name, f"Create user {name} ({body['Role']})")
    if m.User.select().where(m.User.username == name).exists():
        raise ConflictError(f"a user named {name!r} exists already: choose another name", field="UserName")
    user = m.User(username=name, role=body["Role"])
    user.set_password(body["Password"])
    user.save()
    return _json(user)


@bp.operation("GET", "/users/{userName}", summary="One user", role="admin", response=schemas.ref("User"))
def get_user(userName: str):  # noqa: N803 - the path parameter's public name
    return _json(_user(userName))


@bp.operation("PUT", "/users/{userName}", summary="Change a user's role, or disable or enable it", role="admin",
              body=schemas.ref("UserUpdate"), response=schemas.ref("User"), errors=(409,))
def update_user(userName: str, body: dict):  # noqa: N803
    user = _user(userName)
    role = body.get("Role", user.role)
    enabled = body.get("Enabled", not user.disabled)
    note_entity(user.username, f"Update user {user.username}: role {role}, {'enabled' if enabled else 'disabled'}")
    if user.role == "admin" and (role != "admin" or not enabled) and not _other_enabled_admins(user):
        raise ConflictError(f"{user.username!r} is the last enabled admin: make another user admin first",
                            field="Role" if role != "admin" else "Enabled")
    user.role, user.disabled, user.updated_at = role, not enabled, time.time()
    user.save()
    if not enabled:
        _end_sessions(user)
    return _json(user)


@bp.operation("POST", "/users/{userName}/resetPassword", summary="Set a user's password", role="admin",
              body=schemas.ref("PasswordReset"), response=schemas.ref("User"))
def reset_password(userName: str, body: dict):  # noqa: N803
    """Set a new password; the user's sessions end (it logs in again with the new one)."""
    user = _user(userName)
    note_entity(user.username, f"Reset the password of {user.username}")
    user.set_password(body["Password"])
    user.updated_at = time.time()
    user.save()
    _end_sessions(user)
    return _json(user)
