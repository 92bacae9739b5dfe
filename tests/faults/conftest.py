"""Fixtures of the fault tests: a short temp directory per test (unix socket paths must stay short)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def short_tmp():
    d = Path(tempfile.mkdtemp(prefix="zf-", dir="/tmp"))
    yield d
    if not os.environ.get("ZVR_KEEP_FAULT_DIRS"):  # set it to look at the processes' logs afterwards
        shutil.rmtree(d, ignore_errors=True)
