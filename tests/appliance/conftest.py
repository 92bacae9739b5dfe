"""The appliance tests use the ZVM tests' app factory (an in-process ZVM on SQLite)."""

from tests.zvm.conftest import make_app  # noqa: F401
