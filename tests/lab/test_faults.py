"""The lab's fault controls, its metrics and the order of a move's commit, on one lab (`zvm lab up` once):

1. `zvm lab ps` names every process; both ZVMs and every VRA serve /metrics (the ZVM's API port only to a
   login), and the metrics say what the API and the VRAs say.
2. `zvm lab kill` and `zvm lab restart` of each kind of process (an IO filter, a protect VRA, the recovery
   VRA, a ZVM, the WAN emulator, the workload; a vcsim stopped and continued): after each the workload
   writes through every filter again, and after all of them a checkpoint's image equals its source (the
   replication lost nothing).
3. A move, polled as fast as it goes: at every sample some ZVM lists the VPG's VMs as protected from its
   site and that site's vCenter has them (the commit updates the ZVMs before vCenter loses the VMs).
4. A killed vcsim is not restarted (it would come back without the lab's VMs), and says why.
"""

from __future__ import annotations

import json
import subprocess
import threading

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from pyVmomi import vim

from tests.lab.helpers import sha256_file, vra_status, wait_for, zvm_lab
from zvm.client import ZvmClient
from zvm.enums import VpgStatus
from zvm.lab import workload
from zvm.lab.images import recovery_vra
from zvm.lab.state import SITES, LabState
from zvm.vcenter import VCenter, VCenterConfig


def ok(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout


def client(state: LabState, site: str) -> ZvmClient:
    z = state.zvms[site]
    return ZvmClient(z["url"]).login(z["username"], z["password"])


def samples(text: str) -> dict[tuple[str, tuple], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab_dir = tmp_path_factory.mktemp("faults") / "lab"
    up = zvm_lab(lab_dir, "up", "--disk-mb", "64", "--rate", "1m", timeout=420)
    try:
        ok(up)
        yield lab_dir
    finally:
        down = zvm_lab(lab_dir, "down", timeout=120)
        assert down.returncode == 0, down.stdout + down.stderr


def writes_go_on(lab_dir) -> None:
    """Every VM of the workload writes through its filter again (its count grows past what it is now)."""
    state = LabState.load(lab_dir)
    before = {}
    wait_for(lambda: before.update(workload.volume_writes(state)) or len(before) == len(state.workload["volumes"]),
             60, "every filter to answer")
    wait_for(lambda: all(n > before[v] + 5 for v, n in workload.volume_writes(state).items())
             and len(workload.volume_writes(state)) == len(before), 90, "the workload to write through every filter")


def test_ps_names_every_process_and_the_metrics_say_what_the_api_says(lab):
    state = LabState.load(lab)
    listed = ok(zvm_lab(lab, "ps"))
    for p in state.processes:
        assert f"{p.name} " in listed
    assert listed.count(" running") == len(state.processes)
    vpg = state.vpg["identifier"]
    for site in SITES:
        z = state.zvms[site]
        assert requests.get(f"{z['url']}/metrics", timeout=30).status_code == 401  # the API port needs a login
        with client(state, site) as c:
            status = c.vpg(vpg)["Status"]
            got = samples(requests.get(z["metrics"], timeout=30).text)
            assert c.vpg(vpg)["Status"] == status  # it did not change meanwhile
        assert {dict(k[1])["zvm_vpg_status"] for k, v in got.items()
                if k[0] == "zvm_vpg_status" and dict(k[1])["vpg"] == vpg and v == 1} == {VpgStatus(status).internal}
        installed = [k for k, v in got.items() if k[0] == "zvm_vra_state" and v == 1
                     and dict(k[1])["zvm_vra_state"] == "Installed"]
        assert len(installed) == len(state.vras[site])
    recovery = recovery_vra(state)
    got = samples(requests.get(f"http://{recovery['metrics']}/metrics", timeout=30).text)
    journal = next(st for st in vra_status(state, recovery) if st.vpg == vpg and st.role == "recover")
    assert got[("zvr_vra_role_state", (("role", "recover"), ("state", journal.state), ("vpg", vpg)))] == 1
    assert got[("zvr_vra_journal_records", (("vpg", vpg),))] > 0


KILLS = [  # (name of the process, or how to find it; the signal)
    ("filter", "KILL"), ("protect-vra", "KILL"), ("recovery-vra", "KILL"), ("zvm-protected", "KILL"),
    ("wan", "KILL"), ("workload", "KILL"), ("vcsim-recovery", "STOP"),
]


def process_name(state: LabState, what: str) -> str:
    vm_host = state.vpg["vms"][0]["host"]
    if what == "filter":
        return next(f["name"] for f in state.filters if f["host"] == vm_host and f["site"] == "protected")
    if what == "protect-vra":
        return next(v["process"] for v in state.vras["protected"] if v["host"] == vm_host)
    if what == "recovery-vra":
        return recovery_vra(state)["process"]
    return what


@pytest.mark.parametrize(("what", "sig"), KILLS, ids=[k[0] for k in KILLS])
def test_kill_and_restart_and_the_workload_writes_on(lab, what, sig):
    name = process_name(LabState.load(lab), what)
    killed = ok(zvm_lab(lab, "kill", name, "--signal", sig))
    assert name in killed and "zvm lab restart" in killed
    ps = {line.split()[0]: line.split()[-1] for line in ok(zvm_lab(lab, "ps")).splitlines()[1:]}
    assert ps[name] == ("stopped" if sig == "STOP" else "dead")
    if what == "filter":  # the workload says so, without a crash, and waits for it
        status = zvm_lab(lab, "workload", "status")
        assert status.returncode == 1 and f"IO filter {name} is DOWN" in status.stdout, status.stdout + status.stderr
    if what == "workload":
        assert "NOT RUNNING" in zvm_lab(lab, "workload", "status").stdout
    assert name in ok(zvm_lab(lab, "restart", name))
    ps = {line.split()[0]: line.split()[-1] for line in ok(zvm_lab(lab, "ps")).splitlines()[1:]}
    assert set(ps.values()) == {"running"}, ps
    writes_go_on(lab)
    assert ok(zvm_lab(lab, "workload", "status")).startswith("workload running")
    log = LabState.load(lab).logs / "workload.log"
    assert log.stat().st_size < 1 << 20  # bounded, whatever the filters did


def test_after_the_faults_a_checkpoint_image_equals_its_source(lab, tmp_path):
    state = LabState.load(lab)
    vpg = state.vpg["identifier"]
    ok(zvm_lab(lab, "workload", "pause"))
    try:
        def streaming():
            return all(st.state == "ok" and st.substatus == "" for site in SITES for v in state.vras[site]
                       for st in vra_status(state, v) if st.vpg == vpg and st.role == "protect")

        wait_for(streaming, 180, "every protect VRA to stream again (its syncs done)")
        with client(state, "protected") as a:
            task = a.wait_for_task(a.take_checkpoint(vpg, "after-the-faults"), timeout=120)
        assert task["Result"]["IsConsistent"] is True, task
        vm = state.vpg["vms"][0]
        volume = vm["volumes"][0]
        source = sha256_file(volume["path"])
        images = json.loads(ok(zvm_lab(lab, "image", vm["name"], "--checkpoint",
                                       task["Result"]["CheckpointIdentifier"], "--json")))
        copy = tmp_path / "image.img"
        subprocess.run(["nbdcopy", images[0]["uri"], str(copy)], check=True, timeout=120)
        ok(zvm_lab(lab, "image", "--close-all"))
        assert sha256_file(copy) == source
    finally:
        ok(zvm_lab(lab, "workload", "resume"))


class Poller:
    """Samples, as fast as they come, in this order: the protected vCenter's VMs, what each ZVM lists as
    protected from its own site, the recovery vCenter's VMs. Read in that order, a sample can only show a
    window that was there (a ZVM's row changes before its vCenter's VMs go, and is read after them)."""

    def __init__(self, state: LabState):
        self.state = state
        self.vpg = state.vpg["identifier"]
        self.clients = {site: client(state, site) for site in SITES}
        self.vcs, self.views = {}, {}
        for site in SITES:
            sim = state.vcenters[site]
            vc = VCenter(VCenterConfig(sim.url, sim.username, sim.password))
            self.vcs[site] = vc
            self.views[site] = vc.content.viewManager.CreateContainerView(vc.content.rootFolder,
                                                                          [vim.VirtualMachine], True)
        self.samples: list[dict] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _protected_here(self, site: str) -> set[str]:
        me = self.state.zvms[site]["site_identifier"]
        return {vm["VmIdentifier"] for vm in self.clients[site].protected_vms(vpg=self.vpg)
                if vm["ProtectedSite"]["SiteIdentifier"] == me}

    def sample(self) -> dict:
        vc_p = {v._moId for v in self.views["protected"].view}
        listed = {site: self._protected_here(site) for site in SITES}
        vc_r = {v._moId for v in self.views["recovery"].view}
        return {"vcenter": {"protected": vc_p, "recovery": vc_r}, "listed": listed}

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.samples.append(self.sample())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        for site in SITES:
            self.views[site].Destroy()
            self.vcs[site].close()
            self.clients[site].close()


def test_a_move_is_never_seen_half_done(lab):
    state = LabState.load(lab)
    vpg = state.vpg["identifier"]
    ok(zvm_lab(lab, "workload", "pause"))
    poller = Poller(state)
    first = poller.sample()
    assert first["listed"]["protected"] and not first["listed"]["recovery"]
    poller.thread.start()
    try:
        with client(state, "recovery") as b:
            result = b.wait_for_task(b.move(vpg), timeout=180)["Result"]
            commit = b.wait_for_task(result["NextTaskIdentifier"], timeout=180)
        assert "committed" in commit["Step"], commit
    finally:
        poller.close()
    assert poller.error is None, poller.error
    seen = poller.samples
    print(f"{len(seen)} samples of both ZVMs and vCenters during the move")  # for the record, with -s
    assert seen and seen[-1]["listed"]["recovery"] and not seen[-1]["listed"]["protected"]
    for i, s in enumerate(seen):
        owners = [site for site in SITES if s["listed"][site]]
        assert owners, f"sample {i} of {len(seen)}: no ZVM lists the VPG's VMs as protected from its site"
        for site in owners:
            missing = s["listed"][site] - s["vcenter"][site]
            assert not missing, (f"sample {i} of {len(seen)}: the {site} ZVM lists {sorted(missing)} as protected "
                                 f"there, and its vCenter does not have them")


def test_a_killed_vcsim_is_not_restarted_without_its_inventory(lab):
    ok(zvm_lab(lab, "kill", "vcsim-recovery"))
    refused = zvm_lab(lab, "restart", "vcsim-recovery")
    assert refused.returncode != 0
    assert "keeps its inventory in memory only" in refused.stdout + refused.stderr
