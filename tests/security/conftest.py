"""Fixtures of the security tests: the ZVM apps of tests/zvm, users of each role, and a fake clock."""

from __future__ import annotations

import pytest

from tests.zvm.conftest import ADMIN_PASSWORD, app, fake_vcenter, make_app  # noqa: F401 - fixtures
from tests.zvm.fakes import ApiClient, basic

USER_PASSWORD = "Us3r-pass-word"


class FakeClock:
    """What login throttling reads as the time; the test moves it."""

    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def throttled_app(request, clock):
    """A ZVM app whose login throttle reads ``clock``."""
    zvm_app = request.getfixturevalue("app")
    zvm_app.extensions["login_throttle"].clock = clock
    return zvm_app


@pytest.fixture
def admin(request) -> ApiClient:
    return ApiClient.login(request.getfixturevalue("app"))


@pytest.fixture
def role_clients(request, admin) -> dict[str, ApiClient]:
    """A logged-in client per role: {"viewer": ..., "operator": ..., "admin": ...}."""
    zvm_app = request.getfixturevalue("app")
    clients = {"admin": admin}
    for role in ("viewer", "operator"):
        resp = admin.post("/users", {"UserName": f"{role}1", "Password": USER_PASSWORD, "Role": role})
        assert resp.status == 200, resp
        clients[role] = ApiClient.login(zvm_app, f"{role}1", USER_PASSWORD)
    return clients


def login(zvm_app, user: str, password: str, address: str = "192.0.2.10"):
    """POST /v1/session/add from ``address``; the werkzeug response."""
    return zvm_app.test_client().post("/v1/session/add", headers=basic(user, password),
                                  environ_base={"REMOTE_ADDR": address})


__all__ = ["ADMIN_PASSWORD", "USER_PASSWORD", "FakeClock", "login"]
