"""Issue 13 point 1: an unknown user never passes, and is answered like a wrong password, after the same work.

Before the fix an unknown user's password was checked against a hash of "x" and passed; only the NOT NULL
constraint on session.user_id stopped a session (409 with the SQL error: a user-name oracle), and it ran
scrypt twice (slower than a known user: a timing oracle)."""

from __future__ import annotations

import hashlib

import pytest

from tests.security.conftest import ADMIN_PASSWORD, USER_PASSWORD, login
from zvm import models as m
from zvm.api.session import authenticate, login_throttle
from zvm.errors import AuthenticationError


@pytest.mark.parametrize("password", ["x", "", ADMIN_PASSWORD])
def test_an_unknown_user_never_gets_a_session(app, password):
    resp = login(app, "nosuchuser", password)
    assert resp.status_code == 401
    assert resp.json["Code"] == "AuthenticationFailed"
    assert m.Session.select().count() == 0


def test_an_unknown_user_is_answered_exactly_like_a_wrong_password(app):
    unknown = login(app, "nosuchuser", "x")
    wrong = login(app, "admin", "x")
    assert (unknown.status_code, unknown.json, sorted(unknown.headers.keys())) == \
        (wrong.status_code, wrong.json, sorted(wrong.headers.keys()))


def test_a_disabled_user_with_its_right_password_is_answered_like_a_wrong_one(app, role_clients):
    admin = role_clients["admin"]
    assert admin.put("/users/viewer1", {"Enabled": False}).status == 200
    resp = login(app, "viewer1", USER_PASSWORD)
    assert (resp.status_code, resp.json) == (401, login(app, "admin", "x").json)


@pytest.fixture
def scrypt_runs(monkeypatch):
    """Counts scrypt runs (a spy: each call still hashes)."""
    runs = []
    real = hashlib.scrypt

    def counting(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(m.hashlib, "scrypt", counting)
    return runs


@pytest.mark.parametrize("user,password", [("nosuchuser", "x"), ("admin", "wrong-one"), ("admin", ADMIN_PASSWORD)])
def test_every_login_costs_exactly_one_password_hash(app, scrypt_runs, user, password):
    m.unusable_password_hash()  # made once per process, before any login
    scrypt_runs.clear()
    login(app, user, password)
    assert len(scrypt_runs) == 1


def test_the_session_function_refuses_an_unknown_user_before_any_write(app):
    """The public function the web UI uses: no constraint is the last line of defence."""
    with app.app_context():
        zvm = app.extensions["zvm"]
        zvm.db.connect(reuse_if_open=True)
        with pytest.raises(AuthenticationError):
            authenticate(zvm, login_throttle(app), "nosuchuser", "x", "192.0.2.1")
        opened = authenticate(zvm, login_throttle(app), "admin", ADMIN_PASSWORD, "192.0.2.1")
        assert opened.session.user.username == "admin" and opened.session.client == "192.0.2.1"
        assert m.Session.select().count() == 1


def test_every_login_is_an_event_with_who_and_from_where_and_no_password(app):
    login(app, "nosuchuser", "Secr3t-guess", address="198.51.100.7")
    login(app, "admin", ADMIN_PASSWORD, address="198.51.100.8")
    events = list(m.Event.select().where(m.Event.kind == "Login").order_by(m.Event.id))
    assert [(e.user, e.client, e.result) for e in events] == [
        ("nosuchuser", "198.51.100.7", "Refused"), ("admin", "198.51.100.8", "Succeeded")]
    assert events[0].detail == "AuthenticationFailed: unknown user"
    for e in events:
        assert "Secr3t-guess" not in str(e.__data__) and ADMIN_PASSWORD not in str(e.__data__)
