"""Fixtures of the compatibility tests: one ZVM on the fake vCenter (tests/zvm/conftest.py) for the shapes,
and, for the flow, two ZVMs on vcsims with real VRAs (tests/compat/test_zerto_flow.py builds them)."""

from __future__ import annotations

from tests.zvm.conftest import ADMIN_PASSWORD, api, app, fake_vcenter, make_app  # noqa: F401 - fixtures
