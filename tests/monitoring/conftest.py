"""The ZVM fixtures (apps, databases, a PostgreSQL server) of tests/zvm, for the monitoring tests."""

from tests.zvm.conftest import (  # noqa: F401 - fixtures
    api,
    app,
    app_on_both_engines,
    database,
    db_url,
    fake_vcenter,
    make_app,
    pg_server,
)
