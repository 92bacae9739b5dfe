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
