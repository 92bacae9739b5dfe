"""The steps of ``zvm lab up``, one small function each, run in order by :func:`run_steps`.

Each step starts what it needs detached (recorded in lab.json before it is waited for), drives the product
the way an administrator would (the ZVMs' REST API through ``zvm.client``), and returns a line saying what
it did. A step that fails raises; the runner says which step and why, and stops everything started.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from zvm.client import ZvmClient
from zvm.enums import VpgStatus, VpgSubStatus
from zvm.errors import ZvmError
from zvm.lab import attach, processes, workload
from zvm.lab.links import LinksControl
from zvm.lab.network import (
    VRA_METRICS_PORT,
    VRA_PORT,
    ZVM_API_PORT,
    ZVM_METRICS_PORT,
    ZVM_PEER_PORT,
    pick_network,
)
from zvm.lab.processes import LabError, spawn, wait_ready
from zvm.lab.state import SITES, LabState, run_dir_for
from zvm.lab.vcsim import Vcsim, VcsimSpec
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vcenter.ovf import vapp_properties

SITE_NAMES = {"protected": "Protected site", "recovery": "Recovery site"}
SHORT = {"protected": "p", "recovery": "r"}
VPG_NAME = "lab-vpg"
VPG_VMS = 3
# A journal of 1 h history at the default rate (3 x 256 KiB/s) holds ~2.7 GB; the limit bounds what a faster
# workload (--rate) can take of the disk: past it the ZVM promotes early and says so.
JOURNAL_LIMIT_MB = 4096
JOURNAL_WARNING_MB = 3072
TOOLS = {"fio": "fio", "qemu-img": "qemu-utils", "nbdcopy": "libnbd-bin"}


@dataclass
class UpOptions:
    hosts: int = 3
    vms: int = 4
    disk_mb: int = 128
    rate: str = "256k"
    latency_ms: float = 5.0
    bandwidth_mbps: float = 100.0
    guests: int = 0  # VMs that run a real guest instead of fio (zvm/lab/guests.py)
    verify_every_minutes: float = 0.0  # with guests: the ZVMs' scheduled recoverability checks (0: off)


@dataclass
class Lab:
    """What the steps share: the state being built, the options, and logged-in REST clients."""

    state: LabState
    opts: UpOptions
    say: Callable[[str], None] = print
    clients: dict[str, ZvmClient] = field(default_factory=dict)

    def client(self, site: str) -> ZvmClient:
        if site not in self.clients:
            z = self.state.zvms[site]
            self.clients[site] = ZvmClient(z["url"], timeout=60).login(z["username"], z["password"])
        return self.clients[site]

    def close(self) -> None:
        for c in self.clients.values():
            try:
                c.logout()
            except ZvmError:
                pass
            c.close()
        self.clients.clear()


@dataclass
class Step:
    title: str
    run: Callable[[Lab], str]


def python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


# --- 1. this machine --------------------------------------------------------------------------------------

def check_machine(lab: Lab) -> str:
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise LabError(f"missing: {', '.join(missing)}: run ./run once (it installs them), or apt-get install them")
    st = lab.state
    st.net = pick_network(str(st.lab_dir.resolve()), lab.opts.hosts).net
    run = run_dir_for(st.lab_dir)
    run.mkdir(parents=True, exist_ok=True)
    st.run_dir = str(run)
    st.secret = ""  # the VRAs enroll with their ZVM: mutual TLS, no shared secret
    if st.logs.exists():
        shutil.rmtree(st.logs)  # the logs of an earlier lab, kept by its 'down'
    st.logs.mkdir(parents=True)
    st.save()
    return f"loopback subnet 127.{st.net}.0.0/16, sockets in {run}, logs in {st.logs}"


# --- 2, 3. the vCenters -----------------------------------------------------------------------------------

def start_vcenter(site: str) -> Callable[[Lab], str]:
    def run(lab: Lab) -> str:
        st, o = lab.state, lab.opts
        site_dir = st.lab_dir / site
        if site_dir.exists():
            shutil.rmtree(site_dir)
        spec = VcsimSpec(hosts_per_cluster=o.hosts, vms_per_pool=o.vms, disk_mb=o.disk_mb, datastores=2,
                         portgroups=2, password=secrets.token_urlsafe(12),
                         listen=f"{st.network.lan(site, 5)}:0")
        sim = Vcsim.start(site, site_dir / "vcenter", spec, detach=True)
        st.vcenters[site] = sim
        st.add(processes.LabProcess(f"vcsim-{site}", "vcsim", sim.pid, _cmdline(sim.pid), sim.log,
                                    processes.start_time(sim.pid)))
        return f"{sim.url} ({o.hosts} hosts, {o.vms} VMs with {o.disk_mb} MiB disks, 2 datastores)"

    return run


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


# --- 4. the WAN -------------------------------------------------------------------------------------------

def start_wan(lab: Lab) -> str:
    st, net = lab.state, lab.state.network
    links = [{"name": f"zvm-{site}-peer", "listen": [net.wan_face(site, 10), ZVM_PEER_PORT],
              "target": [net.zvm(site), ZVM_PEER_PORT]} for site in SITES]
    links += [{"name": f"vra-recovery-{i}", "listen": [net.vra_address("recovery", i), VRA_PORT],
               "target": [net.vra_listen("recovery", i), VRA_PORT]} for i in range(lab.opts.hosts)]
    config = {"control": str(Path(st.run_dir) / "wan.ctl"), "latency_ms": lab.opts.latency_ms,
              "bandwidth_mbps": lab.opts.bandwidth_mbps, "links": links}
    path = st.lab_dir / "wan" / "links.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    proc = st.add(spawn("wan", "wan", python("zvm.lab.links", "serve", "--config", str(path)), st.logs / "wan.log"))
    st.wan = {"control": config["control"], "links": links}
    st.save()
    wait_ready(proc, lambda: LinksControl(config["control"]).status(), "listen", timeout=30)
    return (f"{len(links)} links ({lab.opts.latency_ms:g} ms one way, {lab.opts.bandwidth_mbps:g} Mbit/s): "
            "the ZVMs' peer services and the recovery VRAs, each reached from the other site through it")


# --- 5. the ZVMs ------------------------------------------------------------------------------------------

def _toml(values: dict) -> str:
    return "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())


def start_zvms(lab: Lab) -> str:
    st = lab.state
    started = {site: _spawn_zvm(lab, site) for site in SITES}
    for site, proc in started.items():
        wait_ready(proc, lambda s=site: lab.client(s), "answer on its REST API", timeout=120)
        st.zvms[site]["site_identifier"] = lab.client(site).local_site()["SiteIdentifier"]
    st.save()
    return (", ".join(f"{site} {st.zvms[site]['url']}/v1" for site in SITES)
            + " (plain HTTP on loopback: the lab runs them with insecure_http; a real ZVM serves HTTPS)")


def _spawn_zvm(lab: Lab, site: str) -> processes.LabProcess:
    st, net = lab.state, lab.state.network
    sim = st.vcenters[site]
    data = st.lab_dir / site / "zvm"
    data.mkdir(parents=True, exist_ok=True)
    config = data / "zvm.toml"
    config.write_text(_toml({
        "data_dir": str(data), "host": net.zvm(site), "port": ZVM_API_PORT, "peer_port": ZVM_PEER_PORT,
        "public_address": net.wan_face(site, 10), "site_name": SITE_NAMES[site],
        "vcenter_url": sim.url, "vcenter_username": sim.username,
        "filter_control_template": str(Path(st.run_dir) / SHORT[site] / "{host}" / "filter.ctl"),
        "workers": 1, "threads": 4,
        # Prometheus without authentication on a port of its own (/metrics on the API port needs a login)
        "metrics_listen": f"{net.zvm(site)}:{ZVM_METRICS_PORT}",
        # The lab's ZVMs listen on loopback addresses only, so it keeps plain HTTP (and says so at start).
        "insecure_http": True, **(_guest_settings(st) if lab.opts.guests else {}),
        **({"verify_every_minutes": lab.opts.verify_every_minutes} if lab.opts.guests else {})}))
    if site not in st.zvms:
        st.zvms[site] = {"url": net.zvm_url(site), "username": "admin", "password": secrets.token_urlsafe(12),
                         "config": str(config)}
    st.zvms[site]["metrics"] = f"http://{net.zvm(site)}:{ZVM_METRICS_PORT}/metrics"
    return st.add(spawn(f"zvm-{site}", "zvm", python("zvm.cli", "serve", "--config", str(config)),
                        st.logs / f"zvm-{site}.log", env=zvm_env(st, site), site=site))


def zvm_env(state: LabState, site: str) -> dict[str, str]:
    """A lab ZVM's environment: its passwords there, out of its command line (and no ZVM_* of the caller's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZVM_")}
    env.update(ZVM_ADMIN_PASSWORD=state.zvms[site]["password"], ZVM_VCENTER_PASSWORD=state.vcenters[site].password)
    return env


def _guest_settings(st: LabState) -> dict:
    from zvm.lab import guests  # recoverability checks of the lab's guests

    return guests.zvm_settings(st)


def restart_zvm(lab: Lab, site: str) -> None:
    old = lab.state.process(f"zvm-{site}")
    if old is not None:
        processes.stop([old])
    client = lab.clients.pop(site, None)
    if client is not None:
        client.close()
    proc = _spawn_zvm(lab, site)
    wait_ready(proc, lambda: lab.client(site), "answer on its REST API", timeout=120)


# --- 6. pairing -------------------------------------------------------------------------------------------

def pair_sites(lab: Lab) -> str:
    st, net = lab.state, lab.state.network
    a, b = lab.client("protected"), lab.client("recovery")
    token = b.generate_pairing_token()["Token"]
    a.wait_for_task(a.pair(net.wan_face("recovery", 10), token, ZVM_PEER_PORT), timeout=120)
    b_id = st.zvms["recovery"]["site_identifier"]
    _wait(lambda: all(c.local_site().get("InventoryLoadedAt") for c in (a, b)) and a.hosts(b_id),
          "both ZVMs to load their vCenter's inventory and the peer site's", 90)
    return (f"the protected ZVM paired with the recovery ZVM at {net.wan_face('recovery', 10)}:{ZVM_PEER_PORT} "
            "(through the WAN); inventories loaded")


def _wait(cond: Callable[[], object], what: str, timeout: float):
    deadline = time.monotonic() + timeout
    delay = 0.1
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 1.0)


# --- 7. VRAs ----------------------------------------------------------------------------------------------

def _vra_network(client: ZvmClient, site_id: str, host: dict) -> str:
    names = {n["NetworkIdentifier"]: n["VirtualizationNetworkName"] for n in client.networks(site_id)}
    nets = host["NetworkIdentifiers"]
    return next((n for n in nets if names.get(n) == "VM Network"), nets[0])


def install_vras(lab: Lab) -> str:
    """Install a VRA on every host through each ZVM, then start each one's ``vra serve`` the way the
    appliance boots: it enrolls with its ZVM using the one-time token and the CA fingerprint of its vApp
    properties (read from the vcsim), and serves 4005 with mutual TLS."""
    st, net = lab.state, lab.state.network
    tasks, hosts_of = [], {}
    for site in SITES:
        client, site_id = lab.client(site), st.zvms[site]["site_identifier"]
        hosts = sorted(client.hosts(site_id), key=lambda h: h["VirtualizationHostName"])
        hosts_of[site] = hosts
        for i, host in enumerate(hosts):
            address = net.vra_address(site, i)
            task = client.install_vra(host["HostIdentifier"], host["DatastoreIdentifiers"][0],
                                      _vra_network(client, site_id, host), ip_address=address,
                                      subnet_mask="255.0.0.0")
            tasks.append((client, task))
    for client, task in tasks:
        client.wait_for_task(task, timeout=180)
    for site in SITES:
        client = lab.client(site)
        st.vras[site] = [_start_vra(lab, site, i, host, client.vras(host=host["HostIdentifier"])[0])
                         for i, host in enumerate(hosts_of[site])]
    for site in SITES:
        for vra in st.vras[site]:
            proc = st.process(vra["process"])
            wait_ready(proc, lambda v=vra: Path(v["port_file"]).exists(), "enroll and serve gRPC", timeout=90)
    for site in SITES:
        _wait_inventory(lab, site)
    names = [v["name"] for site in SITES for v in st.vras[site]]
    return (f"{len(names)} VRAs installed and powered on in the vCenters ({', '.join(names[:2])}, ...), each "
            "served by a vra serve that enrolled with its ZVM (mutual TLS on 4005)")


def _inventory_settled(vms: list[dict], vras: list[dict], vra_names: set[str]) -> bool:
    # the VM lists leave VRAs out: each VRA says where the inventory has its VM
    placed = {v["VraName"] for v in vras if v.get("InventoryHostIdentifier")}
    return vra_names <= placed and all(v.get("HostIdentifier") for v in vms)


def _wait_inventory(lab: Lab, site: str) -> None:
    """Wait until the ZVM's copy of its vCenter's inventory lists the VRAs' VMs it deployed, every VM with
    its host (a VPG committed before that can find a VM without a host).

    Work-around: a ZVM whose inventory watch failed to store a VM seen half-created by the OVF import
    (``NOT NULL constraint failed: inv_vm.name`` in its log) misses it until vCenter reports another change;
    the lab restarts such a ZVM, whose first inventory load is complete."""
    st = lab.state
    names, site_id = {v["name"] for v in st.vras[site]}, st.zvms[site]["site_identifier"]

    def settled() -> bool:
        client = lab.client(site)
        return _inventory_settled(client.vms(site_id), client.vras(), names)

    try:
        _wait(settled, f"the {site} ZVM's inventory to list its VRAs' VMs", 20)
    except LabError:
        lab.say(f"      the {site} ZVM's inventory misses the VRAs' VMs (its inventory watch lost an update: "
                f"see {st.logs / f'zvm-{site}.log'}); restarting that ZVM")
        restart_zvm(lab, site)
        _wait(settled, f"the {site} ZVM's inventory to list its VRAs' VMs, every VM with its host", 60)


def _enrollment(lab: Lab, site: str, vm_moid: str) -> dict[str, str]:
    """The VRA VM's vApp properties, as the appliance reads them at boot (the vcsim keeps them)."""
    sim = lab.state.vcenters[site]
    with VCenter(VCenterConfig(sim.url, sim.username, sim.password)) as vc:
        props = vapp_properties(vc, vm_moid)
    if not props.get("enroll_token") or not props.get("zvm_ca_fingerprint"):
        raise LabError(f"the VRA VM {vm_moid} has no enrollment token in its vApp properties")
    return props


def _start_vra(lab: Lab, site: str, index: int, host: dict, vra: dict) -> dict:
    st, net = lab.state, lab.state.network
    home = st.lab_dir / site / "vras" / host["HostIdentifier"]
    home.mkdir(parents=True, exist_ok=True)
    props = _enrollment(lab, site, vra["VmIdentifier"])
    token = home / "enroll-token"  # what the appliance reads from its OVF environment; used once
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(props["enroll_token"])
    sockets = Path(st.run_dir) / SHORT[site] / host["HostIdentifier"]
    sockets.mkdir(parents=True, exist_ok=True)
    listen = f"{net.vra_listen(site, index)}:{VRA_PORT}"
    port_file = home / "port"
    port_file.unlink(missing_ok=True)
    entry = {"identifier": vra["VraIdentifier"], "name": vra["VraName"], "host": host["HostIdentifier"],
             "host_name": host["VirtualizationHostName"], "address": f"{net.vra_address(site, index)}:{VRA_PORT}",
             "listen": listen, "split": str(sockets / "split.sock"), "images": str(sockets / "images.sock"),
             "filter_control": str(sockets / "filter.ctl"), "nbd": str(sockets / "nbd.sock"),
             "state_dir": str(home / "state"), "port_file": str(port_file), "site": site, "tls": True,
             "process": f"vra-{site}-{host['VirtualizationHostName']}",
             "metrics": f"{net.vra_listen(site, index)}:{VRA_METRICS_PORT}"}
    argv = python("vra_appliance.cli", "serve", "--vra-id", entry["identifier"], "--listen", listen,
                  "--port-file", str(port_file), "--split", entry["split"], "--state-dir", entry["state_dir"],
                  "--enroll-url", net.zvm_url(site), "--enroll-token-file", str(token),
                  "--zvm-ca-fingerprint", props["zvm_ca_fingerprint"], "--nbd-unix", entry["images"],
                  "--metrics-listen", entry["metrics"], "-v")
    st.add(spawn(entry["process"], "vra", argv, st.logs / f"{entry['process']}.log", site=site))
    return entry


# --- 8. the VPG -------------------------------------------------------------------------------------------

def pick_vms(vms: list[dict], count: int) -> list[dict]:
    """``count`` VMs spread over as many hosts as possible (round robin over the hosts, by name)."""
    by_host: dict[str, list[dict]] = {}
    for vm in sorted(vms, key=lambda v: v["VmName"]):
        if vm["VmName"].startswith("Z-VRA-"):  # the appliances are not protected
            continue
        by_host.setdefault(vm.get("HostIdentifier") or "", []).append(vm)
    picked: list[dict] = []
    while len(picked) < count and any(by_host.values()):
        for host in sorted(by_host):
            if by_host[host] and len(picked) < count:
                picked.append(by_host[host].pop(0))
    return picked


def _named(items: list[dict], key: str, ident: str, name: str) -> str:
    found = next((i for i in items if i[key] == name), None)
    return (found or sorted(items, key=lambda i: i[key])[0])[ident]


def create_vpg(lab: Lab) -> str:
    st = lab.state
    a = lab.client("protected")
    a_id, b_id = st.zvms["protected"]["site_identifier"], st.zvms["recovery"]["site_identifier"]
    vms = pick_vms(a.vms(a_id), VPG_VMS)
    if len(vms) < VPG_VMS:
        raise LabError(f"the protected site has {len(vms)} VMs; the lab's VPG needs {VPG_VMS}")
    hosts = sorted(a.hosts(b_id), key=lambda h: h["VirtualizationHostName"])
    datastore = _named(a.datastores(b_id), "DatastoreName", "DatastoreIdentifier", "LocalDS_0")
    networks = a.networks(b_id)
    task = a.create_vpg(VPG_NAME, [v["VmIdentifier"] for v in vms], recovery_site=b_id,
                        recovery_host=hosts[0]["HostIdentifier"], recovery_datastore=datastore,
                        failover_network=_named(networks, "VirtualizationNetworkName", "NetworkIdentifier",
                                                "VM Network"),
                        test_network=_named(networks, "VirtualizationNetworkName", "NetworkIdentifier", "DC0_DVPG1"),
                        rpo_seconds=60, history_hours=1, priority="High",
                        journal_hard_limit_mb=JOURNAL_LIMIT_MB, journal_warning_mb=JOURNAL_WARNING_MB)
    done = a.wait_for_task(task, timeout=180)
    vpg_id = done["Result"].get("VpgIdentifier") or a.vpg_by_name(VPG_NAME)["VpgIdentifier"]
    st.vpg = {"identifier": vpg_id, "name": VPG_NAME,
              "vms": [{"identifier": v["VmIdentifier"], "name": v["VmName"], "volumes": []} for v in vms]}
    st.save()
    placed = ", ".join(f"{v['VmName']} on {v.get('HostIdentifier')}" for v in vms)
    return (f"VPG {VPG_NAME} ({vpg_id}): {placed}; recovery to {hosts[0]['VirtualizationHostName']} of the "
            "recovery site; the VRAs are configured")


# --- 9. IO filters ----------------------------------------------------------------------------------------

def start_filters(lab: Lab) -> str:
    st = lab.state
    attach.locate_vpg_vms(st)
    attach.attach_filters(st)
    count = sum(len(f["volumes"]) for f in st.filters)
    return f"{len(st.filters)} filters (one per host with VMs) exporting {count} VM disks over NBD"


# --- 10. workload -----------------------------------------------------------------------------------------

def start_workload(lab: Lab) -> str:
    jobs = attach.workload_jobs(lab.state)
    said = ""
    if lab.opts.guests:  # zvm/lab/guests.py: real guests on the first VMs, fio on the others
        from zvm.lab import guests

        jobs = guests.start(lab.state, jobs, lab.opts.guests)
        said = f"{lab.opts.guests} VMs run a Debian guest with a sqlite workload (QEMU, through the filters); "
    workload.start(lab.state, jobs, lab.opts.rate, paused=not jobs)
    return said + f"fio: random writes of 4-64 KiB at {lab.opts.rate}/s into each of {len(jobs)} disks, through the filters"


# --- 11. replication --------------------------------------------------------------------------------------

def wait_meeting_sla(lab: Lab, timeout: float = 150.0) -> str:
    a = lab.client("protected")
    vpg_id = lab.state.vpg["identifier"]
    seen = []

    def meeting():
        vpg = a.vpg(vpg_id)
        status, substatus = VpgStatus.parse(vpg["Status"]).internal, VpgSubStatus.parse(vpg["SubStatus"]).internal
        now = f"{status}/{substatus}"
        if not seen or seen[-1] != now:
            seen.append(now)
            lab.say(f"      VPG {vpg['VpgName']}: {status} ({substatus})")
        return vpg if vpg["Status"] == VpgStatus.MeetingSLA else None

    vpg = _wait(meeting, f"VPG {VPG_NAME} to reach MeetingSLA (seen: {' -> '.join(seen) or 'nothing'})", timeout)
    return f"replicating: RPO {vpg['ActualRPO']} s, journal {vpg['JournalUsedStorageMb']:.1f} MB"


STEPS = [
    Step("check this machine: tools, a free loopback subnet", check_machine),
    Step("start the protected site's vCenter (vcsim)", start_vcenter("protected")),
    Step("start the recovery site's vCenter (vcsim)", start_vcenter("recovery")),
    Step("start the WAN emulator between the sites", start_wan),
    Step("start both ZVMs (zvm serve under gunicorn)", start_zvms),
    Step("pair the sites", pair_sites),
    Step("install a VRA on every host through the ZVMs", install_vras),
    Step("create a VPG of three VMs through the REST API", create_vpg),
    Step("start an IO filter on every host", start_filters),
    Step("start the workload", start_workload),
    Step("wait for the VPG to meet its SLA", wait_meeting_sla),
]


def run_steps(lab: Lab, steps: list[Step], on_failure: Callable[[], None]) -> bool:
    """Run ``steps`` in order, numbered; on a failure (or Ctrl-C) say which step and why, then call
    ``on_failure`` (which stops what was started)."""
    for i, step in enumerate(steps, 1):
        lab.say(f"[{i}/{len(steps)}] {step.title} ...")
        t0 = time.monotonic()
        try:
            detail = step.run(lab)
        except KeyboardInterrupt:
            lab.say(f"lab up interrupted at step {i} ({step.title}); stopping what it started ...")
            on_failure()
            raise
        except Exception as exc:  # every failure of a step stops the lab; a bug shows its type
            why = str(exc) if isinstance(exc, (ZvmError, OSError)) else f"{type(exc).__name__}: {exc}"
            lab.say(f"lab up failed at step {i} ({step.title}): {why}")
            lab.say("stopping what the lab started ...")
            on_failure()
            return False
        lab.say(f"      {detail} ({time.monotonic() - t0:.1f} s)")
    return True
