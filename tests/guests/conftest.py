"""Fixtures of the guest tests: the guest image (built once, cached in .cache/guests) and a short temp
directory per test (unix socket paths must stay short)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from guests.image import GuestImage, build


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    return build()


@pytest.fixture
def short_tmp():
    d = Path(tempfile.mkdtemp(prefix="zg-", dir="/tmp"))
    yield d
    if not os.environ.get("ZVR_KEEP_FAULT_DIRS"):  # set it to look at the processes' and guests' logs
        shutil.rmtree(d, ignore_errors=True)


# the ZVM app fixtures of tests/zvm (a ZVM on SQLite in a temp dir, a fake vCenter seam)
from tests.zvm.conftest import make_app  # noqa: E402, F401
