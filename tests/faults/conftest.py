"""Fixtures of the fault tests: a short temp directory per test (unix socket paths must stay short)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def short_tmp():
    d = Path(tempfile.mkdtemp(prefix="zf-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)
