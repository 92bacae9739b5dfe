"""Fixtures shared by every test: simulated vCenters (vcsim) for one site and for two sites.

``vcsim_site`` is one protected vCenter for a test module; ``two_sites`` is a protected and a recovery
vCenter, each with a cluster of three hosts, VMs whose disks are real sparse files, a datastore (a real
directory) and networks, started once per test session and stopped at its end. Tests that change the
inventory (install VRAs, recover VMs) take ``fresh_two_sites``: the same two sites, started for the test and
stopped after it, so what they leave in vCenter never meets another test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zvm.lab.vcsim import Vcsim, VcsimSpec

# vcsim builds are cached in the checkout, as ./run does (also when pytest is run directly)
os.environ.setdefault("ZVR_CACHE_DIR", str(Path(__file__).resolve().parents[1] / ".cache"))

REQUIRED_TOOLS = ["go", "fio", "qemu-io", "qemu-img", "nbdkit", "nbdcopy", "nbdinfo"]


def pytest_sessionstart(session):
    # A missing tool is an install problem, never a reason to skip: fail loudly and say what to install.
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        raise pytest.UsageError(
            f"missing tools {missing}: run the tests through ./run test, which installs them")


TWO_SITES_SPEC = VcsimSpec(hosts_per_cluster=3, vms_per_pool=4, datastores=2, portgroups=2, disk_mb=64)


@dataclass
class TwoSites:
    protected: Vcsim
    recovery: Vcsim


@pytest.fixture(scope="session")
def start_vcsim(tmp_path_factory) -> Iterator:
    """A factory: ``start_vcsim(name, VcsimSpec(...))`` starts a vcsim stopped at the end of the session."""
    started: list[Vcsim] = []

    def start(name: str, spec: VcsimSpec | None = None) -> Vcsim:
        sim = Vcsim.start(name, tmp_path_factory.mktemp(f"vcsim-{name}"), spec)
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


@pytest.fixture(scope="session")
def two_sites(start_vcsim) -> TwoSites:
    return TwoSites(protected=start_vcsim("protected", TWO_SITES_SPEC), recovery=start_vcsim("recovery", TWO_SITES_SPEC))


@pytest.fixture
def fresh_two_sites(tmp_path_factory) -> Iterator[TwoSites]:
    started: list[Vcsim] = []
    try:
        for name in ("protected", "recovery"):
            started.append(Vcsim.start(name, tmp_path_factory.mktemp(f"vcsim-{name}"), TWO_SITES_SPEC))
        yield TwoSites(protected=started[0], recovery=started[1])
    finally:
        for sim in started:
            sim.stop()


@pytest.fixture(scope="module")
def vcsim_site(tmp_path_factory) -> Iterator[Vcsim]:
    sim = Vcsim.start("site", tmp_path_factory.mktemp("vcsim-site"), VcsimSpec())
    yield sim
    sim.stop()


@pytest.fixture
def vcenter_config():
    """Build a VCenterConfig for a running vcsim."""
    from zvm.vcenter import VCenterConfig

    def make(sim: Vcsim, **kw) -> VCenterConfig:
        return VCenterConfig(url=sim.url, username=sim.username, password=sim.password, **kw)

    return make


def datastore_path(sim: Vcsim, name: str = "LocalDS_0") -> Path:
    return Path(sim.datastores[name])
