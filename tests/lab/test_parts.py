"""The lab's parts on their own: VM choice, addresses, detached processes and their groups, the WAN links."""

from __future__ import annotations

import signal
import socket
import sys
import threading

import pytest

from tests.lab.helpers import pid_alive, wait_for
from zvm.lab import faults, processes
from zvm.lab.links import Links, LinksControl
from zvm.lab.network import VRA_PORT, LabNetwork, pick_network
from zvm.lab.state import LabState
from zvm.lab.steps import pick_vms
from zvm.lab.workload import job_text


def vm(name: str, host: str) -> dict:
    return {"VmName": name, "VmIdentifier": f"id-{name}", "HostIdentifier": host}


def test_pick_vms_spreads_over_hosts_and_never_takes_an_appliance():
    vms = [vm("a", "h1"), vm("b", "h1"), vm("c", "h1"), vm("d", "h2"), vm("Z-VRA-h3", "h3"), vm("e", "h3")]
    assert [v["VmName"] for v in pick_vms(vms, 3)] == ["a", "d", "e"]
    assert [v["VmName"] for v in pick_vms(vms[:3], 3)] == ["a", "b", "c"]
    assert pick_vms([vm("Z-VRA-h1", "h1")], 3) == []


def test_each_site_has_its_own_subnet_and_the_recovery_vras_are_reached_through_the_wan():
    net = LabNetwork(150)
    assert net.zvm_url("protected") == "http://127.150.1.10:9080"
    assert net.vra_address("protected", 0) == net.vra_listen("protected", 0) == "127.150.1.21"
    assert net.vra_listen("recovery", 2) == "127.150.2.23"
    assert net.vra_address("recovery", 2) == "127.150.12.23"
    # per site: the ZVM API, peer and metrics ports, the WAN face; gRPC and metrics of each VRA; the WAN links
    assert len(set(net.listeners(3))) == len(net.listeners(3)) == 2 * (4 + 3 * 2) + 3


def test_pick_network_skips_a_subnet_whose_ports_are_taken():
    first = pick_network("some lab", hosts=1)
    with socket.socket() as s:
        s.bind((first.vra_listen("recovery", 0), VRA_PORT))
        second = pick_network("some lab", hosts=1)
    assert second.net != first.net


def test_job_file_has_one_job_per_vm():
    text = job_text([{"name": "vm-a", "uri": "nbd+unix:///v1?socket=/s"}, {"name": "vm-b", "uri": "u2"}], "256k")
    assert "ioengine=nbd" in text and "rate=256k" in text and "runtime=7d" in text
    assert "[vm-a]\nuri=nbd+unix:///v1?socket=/s\n" in text and "[vm-b]\nuri=u2\n" in text


def test_a_detached_process_group_is_stopped_whole_and_a_reused_pid_is_never_taken_for_it(tmp_path):
    # a parent that leaves a child behind in its group (as gunicorn's workers or fio's jobs would)
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    proc = processes.spawn("parent", "test", [sys.executable, "-c", script], tmp_path / "parent.log")
    try:
        assert proc.alive() and proc.started > 0
        groups = wait_for(lambda: (g := processes.process_groups()).get(proc.pid, []) and len(g[proc.pid]) == 2 and g,
                          30, "the child to start")
        members = groups[proc.pid]
        stranger = processes.LabProcess("x", "test", proc.pid, [], "", started=proc.started + 1)
        assert not stranger.alive()  # same pid, another start time: not the lab's process
        assert processes.stop([proc], timeout=10) == []
        assert not any(pid_alive(p) for p in members)
    finally:
        processes.stop([proc], timeout=1)


def test_wait_ready_reports_the_end_of_the_log_of_a_process_that_died(tmp_path):
    proc = processes.spawn("dies", "test", [sys.executable, "-c", "print('no luck: port taken'); raise SystemExit(3)"],
                           tmp_path / "dies.log")
    with pytest.raises(processes.LabError, match="no luck: port taken"):
        processes.wait_ready(proc, lambda: False, "listen", timeout=30)


def _echo(conn: socket.socket) -> None:
    with conn:
        try:
            while data := conn.recv(4096):
                conn.sendall(data)
        except OSError:
            pass


@pytest.fixture
def echo_server():
    srv = socket.create_server(("127.0.0.1", 0))
    threads = []

    def serve():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threads.append(threading.Thread(target=_echo, args=(conn,), daemon=True))
            threads[-1].start()

    acceptor = threading.Thread(target=serve, daemon=True)
    acceptor.start()
    yield srv.getsockname()
    srv.close()
    acceptor.join(5)
    for t in threads:
        t.join(5)


def echoes(address) -> bool:
    with socket.create_connection(address, timeout=5) as c:
        c.sendall(b"ping")
        return c.recv(4) == b"ping"


def test_links_are_cut_restored_and_shaped_together(tmp_path, echo_server):
    control = str(tmp_path / "wan.ctl")
    links = Links({"control": control, "latency_ms": 1, "links": [
        {"name": "one", "listen": ["127.0.0.1", 0], "target": list(echo_server)},
        {"name": "two", "listen": ["127.0.0.1", 0], "target": list(echo_server)}]}).start()
    try:
        ctl = LinksControl(control)
        addresses = {n: tuple(s["listen"]) for n, s in ctl.status().items()}
        assert all(echoes(a) for a in addresses.values())
        assert all(s["state"] == "cut:reset" for s in ctl.cut("reset").values())
        for address in addresses.values():
            with pytest.raises(OSError):
                echoes(address)
        assert all(s["state"] == "up" for s in ctl.restore().values())
        assert all(echoes(a) for a in addresses.values())
        shaped = ctl.set(latency_ms=20, bandwidth_mbps=8)
        assert {s["directions"]["up"]["latency_ms"] for s in shaped.values()} == {20}
        assert ctl.call("cut", link="one", mode="freeze")["one"]["state"] == "cut:freeze"
        assert ctl.status()["two"]["state"] == "up"
        with pytest.raises(ValueError, match="no link 'three'"):
            ctl.call("status", link="three")
    finally:
        links.stop()


def test_the_lab_needs_nothing_of_the_checkout(monkeypatch, tmp_path):
    # an installed lab: the simulator's source is the package's own data, the lab's data goes where it runs
    from pathlib import Path

    import zvm.lab
    from zvm.lab import state, vcsim

    package = Path(zvm.lab.__file__).resolve().parent
    assert vcsim.SOURCE_DIR.is_relative_to(package) and sorted(p.name for p in vcsim.SOURCE_DIR.glob("*.go"))
    monkeypatch.delenv("ZVR_LAB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    assert state.default_lab_dir() == tmp_path / "lab-data"
    monkeypatch.setenv("ZVR_LAB_DIR", str(tmp_path / "elsewhere"))
    assert state.default_lab_dir() == tmp_path / "elsewhere"


def test_kill_and_restart_a_lab_process_its_children_included(tmp_path):
    """`zvm lab kill` ends the whole group (SIGKILL), `restart` starts the same command line again, and a
    process frozen with --signal STOP is continued, not started twice."""
    state = LabState(lab_dir=tmp_path / "lab")
    script = "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"
    state.add(processes.spawn("sleeper", "test", [sys.executable, "-c", script], tmp_path / "sleeper.log"))
    try:
        first = state.process("sleeper")
        wait_for(lambda: len(processes.process_groups().get(first.pid, [])) == 2, 30, "its child")
        assert [(p["name"], p["state"]) for p in faults.listing(state)] == [("sleeper", "running")]
        faults.kill(state, "sleeper")
        assert not first.group_alive() and faults.listing(state)[0]["state"] == "dead"
        assert "started again" in faults.restart(state, "sleeper")
        second = LabState.load(state.lab_dir).process("sleeper")
        assert second.pid != first.pid and second.alive() and second.argv == first.argv
        faults.kill(state, "sleeper", faults.parse_signal("stop"))
        assert faults.listing(state)[0]["state"] == "stopped"
        assert "continued" in faults.restart(state, "sleeper")
        assert state.process("sleeper").pid == second.pid and faults.listing(state)[0]["state"] == "running"
        with pytest.raises(processes.LabError, match="no process 'nope'.*sleeper"):
            faults.kill(state, "nope")
    finally:
        processes.stop(state.processes, timeout=5)


@pytest.mark.parametrize(("text", "sig"), [("KILL", signal.SIGKILL), ("9", signal.SIGKILL), ("sigstop", signal.SIGSTOP),
                                           ("term", signal.SIGTERM)])
def test_signals_by_name_or_number(text, sig):
    assert faults.parse_signal(text) == sig


def test_a_signal_that_is_none_is_refused_clearly():
    with pytest.raises(processes.LabError, match="'KILLL' is not a signal: give a name"):
        faults.parse_signal("KILLL")
