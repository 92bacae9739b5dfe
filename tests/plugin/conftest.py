"""Fixtures of the plugin's browser tests: the two-site lab as `zvm lab up` starts it (two vcsims, two
`zvm serve`, real VRAs and IO filters, a VPG replicating), and Debian's chromium driven by Playwright.

Playwright never downloads a browser here: it launches /usr/bin/chromium (apt package chromium, installed
by ./run). Screenshots go to ``ARTIFACTS`` (.cache/artifacts/plugin, or $ZVR_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("ZVR_ARTIFACTS", REPO / ".cache" / "artifacts")) / "plugin"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
SDK_STANDIN = Path(__file__).with_name("htmlClientSdk.js")
HOST_PAGE = Path(__file__).with_name("client_host.html")
AXE = REPO / "vsphere_plugin" / "node_modules" / "axe-core" / "axe.min.js"


@dataclass
class Site:
    url: str
    password: str
    vcenter: dict

    def api(self) -> requests.Session:
        """A requests session logged in with the x-zerto-session header (as scripts do)."""
        s = requests.Session()
        r = s.post(f"{self.url}/v1/session/add", auth=("admin", self.password), timeout=30)
        r.raise_for_status()
        s.headers["x-zerto-session"] = r.headers["x-zerto-session"]
        return s


@dataclass
class PluginLab:
    protected: Site
    recovery: Site
    vpg: dict
    state: dict  # the lab's lab.json: its vCenters' datastore directories, VRAs, addresses


def _zvm_lab(lab_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zvm.cli", "lab", *args], capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, ZVR_LAB_DIR=str(lab_dir)), cwd=REPO)


def lab_attach(lab: PluginLab) -> None:
    """After a VPG is made or its VMs move (a move, a failover's commit): the lab's IO filters follow the VMs'
    disks, as a hypervisor's filters do by themselves (`zvm lab attach`)."""
    done = _zvm_lab(Path(lab.state["lab_dir"]), "attach")
    assert done.returncode == 0, done.stdout + done.stderr


def _lab(lab_dir: Path) -> PluginLab:
    state = json.loads((lab_dir / "lab.json").read_text())
    sites = {name: Site(url=z["url"], password=z["password"], vcenter=state["vcenters"][name])
             for name, z in state["zvms"].items()}
    return PluginLab(protected=sites["protected"], recovery=sites["recovery"], vpg=state["vpg"], state=state)


@pytest.fixture(scope="session")
def plugin_lab(tmp_path_factory) -> Iterator[PluginLab]:
    # For developing these tests only: ZVR_PLUGIN_LAB names the directory of a lab already up (zvm lab up
    # --disk-mb 16 --vms 8 --rate 64k), used as it is and left running.
    if os.environ.get("ZVR_PLUGIN_LAB"):
        yield _lab(Path(os.environ["ZVR_PLUGIN_LAB"]))
        return
    with running_lab(tmp_path_factory.mktemp("plugin-lab") / "lab", "--disk-mb", "16", "--vms", "8",
                     "--rate", "64k") as lab:
        yield lab


@contextmanager
def running_lab(lab_dir: Path, *up_args: str) -> Iterator[PluginLab]:
    """`zvm lab up *up_args` in ``lab_dir``, brought down at the end."""
    up = _zvm_lab(lab_dir, "up", *up_args)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield _lab(lab_dir)
    finally:
        down = _zvm_lab(lab_dir, "down")
        assert down.returncode == 0, down.stdout + down.stderr


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: run the tests through ./run test"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    """A fresh browser context (no cookies) and a page in it; JS errors fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(30_000)
    yield pg
    context.close()
    assert errors == [], f"JavaScript errors in the page: {errors}"


def login(page, site: Site, path: str = "/plugin/?poll=1000", *, user: str = "admin", password: str | None = None) -> None:
    page.goto(site.url + path)
    page.get_by_label("User name").fill(user)
    page.get_by_label("Password").fill(password or site.password)
    page.get_by_test_id("login").click()
    page.wait_for_selector("body[data-rendered=true]")


def shoot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
