"""Fixtures of the recovery operation tests: a two-site world per test module (tests/recovery_ops/world.py);
the module names it (``WORLD``), gives it its loopback addresses (``PREFIX``: 127.PREFIX.x.y) and its
journal's hard limit (``HARD_LIMIT_MB``), and whether a workload runs (``WORKLOAD``, default true)."""

from __future__ import annotations

import pytest

from tests.recovery_ops.world import build


@pytest.fixture(scope="module")
def world(start_vcsim, tmp_path_factory, request):
    module = request.module
    w = build(start_vcsim, module.WORLD, module.PREFIX, tmp_path_factory.mktemp(module.WORLD),
              hard_limit_mb=getattr(module, "HARD_LIMIT_MB", 0), workload=getattr(module, "WORKLOAD", True))
    yield w
    w.close()
