"""Fixtures of the ZVM tests: databases (SQLite and a real PostgreSQL server) and ZVM apps."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.zvm.pg import PostgresServer
from zvm import db as zdb


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = PostgresServer.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """The same test against both engines the ZVM supports."""
    if request.param == "sqlite":
        return zdb.default_url(tmp_path)
    return request.getfixturevalue("pg_server").new_database()


@pytest.fixture
def database(db_url) -> Iterator:
    """An empty database, bound for the models, at the latest schema version."""
    from zvm.migrations import migrate

    db = zdb.bind(zdb.open_database(db_url))
    zdb.connect(db)
    migrate(db)
    yield db
    db.close()
    if hasattr(db, "close_all"):
        db.close_all()


# --- ZVM apps ---------------------------------------------------------------------------------------------

ADMIN_PASSWORD = "Adm1n-pass"


@pytest.fixture
def fake_vcenter():
    """A vCenter seam that serves a small fixed inventory (no simulator): see tests/zvm/fakes.py."""
    from tests.zvm.fakes import FakeVCenter

    return FakeVCenter()


@pytest.fixture
def make_app(tmp_path):
    """``make_app(**config)`` -> a ZVM app on SQLite in a temp dir (or ``database_url=``), loops stopped."""
    from zvm.api import create_app

    apps = []

    def make(vcenter=None, name: str = "zvm", **config):
        data_dir = tmp_path / name
        cfg = {"data_dir": str(data_dir), "admin_password": ADMIN_PASSWORD, "site_name": f"Site {name}",
               "public_address": "127.0.0.1", **config}
        factory = (lambda site: vcenter) if vcenter is not None else None
        app = create_app(cfg, vcenter_factory=factory)
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["zvm"].stop()


def fake_site_app(make_app, fake_vcenter, **config):
    app = make_app(vcenter=fake_vcenter, vcenter_url="http://fake/sdk", vcenter_username="u",
                   vcenter_password="p", **config)
    app.extensions["zvm"].inventory.sync_once()
    return app


@pytest.fixture
def app(make_app, fake_vcenter):
    """A ZVM whose local inventory is the fake vCenter's, loaded."""
    return fake_site_app(make_app, fake_vcenter)


@pytest.fixture(params=["sqlite", "postgresql"])
def app_on_both_engines(request, make_app, fake_vcenter):
    """``app`` on SQLite and on PostgreSQL (modules that must hold on both override ``app`` with this)."""
    if request.param == "sqlite":
        return fake_site_app(make_app, fake_vcenter)
    return fake_site_app(make_app, fake_vcenter, database_url=request.getfixturevalue("pg_server").new_database())


@pytest.fixture
def api(app):
    """A logged-in test client of ``app``: ``api.get("/vpgs")`` (paths relative to /v1)."""
    from tests.zvm.fakes import ApiClient

    return ApiClient.login(app)
