"""Issue 13 point 7 (and 8 for refusals): every operation declares the role it needs; a user below it is
refused with 403 and an AccessDenied event (who, from where); users are managed through the API and CLI."""

from __future__ import annotations

import pytest

from tests.security.conftest import USER_PASSWORD, login
from zvm import models as m
from zvm.api import blueprints

OPERATIONS = [op for bp in blueprints() for op in bp.operations if op.auth == "session"]
OPERATOR_OPERATIONS = {"failover_test", "failover_test_stop", "failover", "failover_commit", "failover_rollback",
                       "move", "move_commit", "move_rollback", "pause_vpg", "resume_vpg", "insert_tagged_checkpoint",
                       "dismiss_alert", "undismiss_alert", "verify_checkpoint"}


def test_every_operation_declares_a_role_and_the_document_shows_it(admin):
    doc = admin.get("/openapi.json").json
    for op in OPERATIONS:
        published = doc["paths"]["/v1" + op.path][op.method.lower()]
        assert published["x-zvr-role"] == op.role in m.ROLES
        assert f"Role needed: {op.role}." in published["description"]
        assert "403" in published["responses"]
    reads = {op.operation_id for op in OPERATIONS if op.method == "GET" and op.role == "viewer"}
    assert {op.operation_id for op in OPERATIONS if op.role == "operator"} == OPERATOR_OPERATIONS
    assert reads == {op.operation_id for op in OPERATIONS if op.method == "GET" and not op.path.startswith("/users")}


@pytest.mark.parametrize("op", OPERATIONS, ids=[f"{op.method} {op.path}" for op in OPERATIONS])
def test_each_operation_refuses_the_roles_below_its_own(role_clients, op):
    path = op.path.replace("{", "").replace("}", "")  # any identifier: the role is checked before lookups
    body = {} if op.body is not None else None
    needed = m.ROLES.index(op.role)
    for role, client in role_clients.items():
        before = m.Event.select().count()
        resp = client.call(op.method, path, body, environ_base={"REMOTE_ADDR": "192.0.2.77"})
        if m.ROLES.index(role) < needed:
            assert resp.status == 403, (role, resp)
            assert resp.json["Code"] == "NotPermitted" and op.role in resp.json["Message"]
            event = m.Event.select().order_by(m.Event.id.desc()).first()
            assert m.Event.select().count() == before + 1
            assert (event.kind, event.result, event.user, event.client) == (
                "AccessDenied", "Refused", f"{role}1", "192.0.2.77")
            assert event.detail.startswith("NotPermitted:")
        else:
            assert resp.status != 403, (role, resp)


def test_users_are_created_listed_disabled_and_their_passwords_reset(app, admin):
    created = admin.post("/users", {"UserName": "ops", "Password": USER_PASSWORD, "Role": "operator"})
    assert created.status == 200 and created.json["Role"] == "operator" and created.json["Enabled"]
    assert "Password" not in created.json and USER_PASSWORD not in str(created.json)
    assert admin.post("/users", {"UserName": "ops", "Password": USER_PASSWORD, "Role": "viewer"}).status == 409
    assert admin.post("/users", {"UserName": "weak", "Password": "short", "Role": "viewer"}).status == 400
    assert login(app, "ops", USER_PASSWORD).status_code == 200
    listed = {u["UserName"]: u for u in admin.get("/users").json}
    assert listed["ops"]["ActiveSessions"] == 1 and listed["admin"]["Role"] == "admin"

    token = login(app, "ops", USER_PASSWORD).headers["x-zerto-session"]
    assert admin.put("/users/ops", {"Enabled": False}).json["Enabled"] is False
    assert app.test_client().get("/v1/vpgs", headers={"x-zerto-session": token}).status_code == 401
    assert login(app, "ops", USER_PASSWORD).status_code == 401
    assert admin.put("/users/ops", {"Enabled": True, "Role": "viewer"}).json["Role"] == "viewer"

    token = login(app, "ops", USER_PASSWORD).headers["x-zerto-session"]
    assert admin.post("/users/ops/resetPassword", {"Password": "N3w-password"}).status == 200
    assert app.test_client().get("/v1/vpgs", headers={"x-zerto-session": token}).status_code == 401
    assert login(app, "ops", USER_PASSWORD).status_code == 401
    assert login(app, "ops", "N3w-password").status_code == 200
    assert admin.get("/users/nobody").status == 404
    for event in m.Event.select():
        assert USER_PASSWORD not in str(event.__data__) and "N3w-password" not in str(event.__data__)


def test_the_last_enabled_admin_can_be_neither_disabled_nor_demoted(admin):
    assert admin.put("/users/admin", {"Enabled": False}).status == 409
    assert admin.put("/users/admin", {"Role": "viewer"}).status == 409
    admin.post("/users", {"UserName": "admin2", "Password": USER_PASSWORD, "Role": "admin"})
    assert admin.put("/users/admin2", {"Role": "operator"}).status == 200
    admin.put("/users/admin2", {"Role": "admin"})
    assert admin.put("/users/admin", {"Role": "operator"}).status == 200


def test_a_role_change_applies_to_open_sessions_at_once(role_clients):
    admin, viewer = role_clients["admin"], role_clients["viewer"]
    assert viewer.post("/alerts/x/dismiss").status == 403
    admin.put("/users/viewer1", {"Role": "operator"})
    assert viewer.post("/alerts/x/dismiss").status == 404
