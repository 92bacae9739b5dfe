"""A silent install into a staging tree against an https vCenter (vcsim): the files with their owners and
modes, the unit as systemd reads it, the service's own command line running as the zvm user and serving
HTTPS with the printed certificate, the admin's login, the plugin in vCenter's ExtensionManager; then
uninstall (no registration, no unit, data kept) and purge."""

from __future__ import annotations

import hashlib
import socket
import ssl
import stat
import subprocess
from pathlib import Path

import requests

from installer import accounts, unit
from installer.layout import CONFIG, CONFIG_DIR, DATA_DIR, RECORD, TLS_CERT, TLS_KEY, UNIT, WANTS
from installer.service import Direct
from tests.installer.conftest import answers_toml, printed_fingerprint
from zvm.vcenter import VCenter, VCenterConfig

PLUGIN_KEY = "com.zvr.dr.plugin"


def served_fingerprint(port: int) -> str:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


def find_extension(sim, thumbprint: str):
    with VCenter(VCenterConfig(url=sim.url, username=sim.username, password=sim.password,
                               thumbprint=thumbprint)) as vc:
        return vc.content.extensionManager.FindExtension(PLUGIN_KEY)


def owner_mode(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def test_silent_install_serves_https_as_zvm_registers_the_plugin_and_uninstalls(stage, https_vcenter, tmp_path):
    sim = https_vcenter
    out, port = stage.install_answers(answers_toml(sim), tmp_path)
    answers = tmp_path / "answers.toml"
    assert "systemd is not PID 1 here" in out.stdout  # said plainly, then started directly
    fingerprint = printed_fingerprint(out.stdout)

    # files, owners, modes
    uid, gid = accounts.lookup(stage.layout)
    assert uid != 0 and gid != 0
    assert owner_mode(stage.path(CONFIG_DIR)) == (0, gid, 0o750)
    assert owner_mode(stage.path(CONFIG)) == (0, gid, 0o640)
    assert owner_mode(stage.path(RECORD)) == (0, gid, 0o640)
    assert owner_mode(stage.path(TLS_KEY)) == (0, gid, 0o640)
    assert owner_mode(stage.path(TLS_CERT)) == (0, gid, 0o644)
    assert owner_mode(stage.path(DATA_DIR)) == (uid, gid, 0o700)
    for name in ("zvm.db", "secret.key"):
        assert owner_mode(stage.path(DATA_DIR) / name) == (uid, gid, 0o600)
    assert owner_mode(stage.path(UNIT))[2] == 0o644
    assert stage.path(WANTS).resolve() == Path(UNIT) or str(stage.path(WANTS).readlink()) == UNIT
    # no secret in clear: not in the configuration, the record, the database, nor the service's command line
    for path in (stage.path(CONFIG), stage.path(RECORD), stage.path(DATA_DIR) / "zvm.db"):
        data = path.read_bytes()
        assert sim.password.encode() not in data and b"Adm1n-pass-1" not in data, path

    # the unit as systemd reads it
    verify = subprocess.run(["systemd-analyze", "verify", str(stage.path(UNIT))], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    directives = unit.directives(stage.path(UNIT).read_text())
    assert directives["User"] == "zvm" and directives["ProtectSystem"] == "strict"
    assert directives["NoNewPrivileges"] == "yes" and directives["PrivateTmp"] == "yes"
    assert directives["StateDirectory"] == "zvm" and directives["Restart"] == "on-failure"

    # the service: the unit's own command line, as the zvm user, HTTPS with the printed certificate
    service = Direct(stage.layout)
    pid = service.pid()
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    assert [c.decode() for c in cmdline] == service.command()
    status = Path(f"/proc/{pid}/status").read_text()
    assert f"Uid:\t{uid}\t{uid}" in status and f"Gid:\t{gid}\t{gid}" in status
    assert served_fingerprint(port) == fingerprint
    cert = str(stage.path(TLS_CERT))
    login = requests.post(f"https://127.0.0.1:{port}/v1/session/add", auth=("admin", "Adm1n-pass-1"),
                          verify=cert, timeout=30)
    assert login.status_code == 200, login.text
    site = requests.get(f"https://127.0.0.1:{port}/v1/localsite", verify=cert, timeout=30,
                        headers={"x-zerto-session": login.headers["x-zerto-session"]}).json()
    assert (site["SiteName"], site["Location"], site["ContactInfo"]) == ("Site A", "Lab, rack 4", "ops@example.com")
    assert requests.post(f"https://127.0.0.1:{port}/v1/session/add", auth=("admin", "wrong-pass"), verify=cert,
                         timeout=30).status_code == 401

    # the plugin: registered with the manifest's HTTPS URL and the certificate's thumbprint
    ext = find_extension(sim, vcenter_thumbprint := answers_thumbprint(answers))
    assert ext is not None
    assert ext.client[0].type == "vsphere-client-remote"
    assert ext.client[0].url == f"https://127.0.0.1:{port}/plugin/plugin.json"
    assert ext.server[0].serverThumbprint.replace(":", "").lower() == fingerprint

    # uninstall: no registration, no unit, no configuration, no process; the data and the user stay
    out = stage.install("--uninstall")
    assert out.returncode == 0, out.stdout + out.stderr
    assert find_extension(sim, vcenter_thumbprint) is None
    assert not stage.path(UNIT).exists() and not stage.path(WANTS).is_symlink()
    assert not stage.path(CONFIG_DIR).exists()
    assert service.pid() is None and _state(pid) in ("gone", "Z")
    assert (stage.path(DATA_DIR) / "zvm.db").is_file() and accounts.lookup(stage.layout) == (uid, gid)

    # installed again over the kept data: the same database (the admin's password still works)
    answers.write_text(answers_toml(sim, api_port=port, admin={"password": None}))
    out = stage.install("--answers", str(answers), "--no-start")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "not started" in out.stdout and service.pid() is None
    out = stage.install("--uninstall", "--purge")
    assert out.returncode == 0, out.stdout + out.stderr
    assert not stage.path(DATA_DIR).exists() and accounts.lookup(stage.layout) is None


def answers_thumbprint(path: Path) -> str:
    import tomllib

    return tomllib.loads(path.read_text())["vcenter"]["thumbprint"]


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_uninstall_with_vcenter_gone_stops_before_removing_anything_unless_told(stage, tmp_path):
    from zvm.lab.vcsim import Vcsim, VcsimSpec

    sim = Vcsim.start("gone", tmp_path / "vcsim", VcsimSpec(tls=True, hosts_per_cluster=1, vms_per_pool=1))
    try:
        stage.install_answers(answers_toml(sim), tmp_path)
    finally:
        sim.stop()
    out = stage.install("--uninstall")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "step 'unregister the vSphere Client plugin' failed" in out.stderr and "--keep-plugin" in out.stderr
    assert stage.path(UNIT).is_file() and stage.path(CONFIG).is_file() and Direct(stage.layout).pid() is not None
    out = stage.install("--uninstall", "--keep-plugin", "--purge")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "the plugin is still registered" in out.stdout
    assert not stage.path(UNIT).exists() and not stage.path(DATA_DIR).exists()


def test_vcenter_trusted_through_a_ca_bundle_instead_of_a_fingerprint(stage, tmp_path):
    """A vCenter whose certificate a CA signed: given the CA as the bundle, the installer verifies vCenter
    by it (chain and name), the installed ZVM keeps its own copy and loads vCenter's inventory through it."""
    import time

    from zvm.lab.vcsim import Vcsim, VcsimSpec
    from zvm.tls import SiteCA

    ca = SiteCA(tmp_path / "ca", "Example Corp")
    cert, key = tmp_path / "vc.pem", tmp_path / "vc.key"
    ca.issue("vc.example", ["127.0.0.1"], cert, key)
    sim = Vcsim.start("ca", tmp_path / "vcsim", VcsimSpec(tls=True, tls_cert=str(cert), tls_key=str(key),
                                                          hosts_per_cluster=1, vms_per_pool=1))
    try:
        stage.install_answers(answers_toml(sim, vcenter={"thumbprint": None, "ca_bundle": str(ca.cert_path)},
                                           plugin={"register": False}), tmp_path)
        copy = stage.path("/etc/zvm/vcenter-ca.pem")
        assert copy.read_bytes() == ca.cert_path.read_bytes() and owner_mode(copy)[2] == 0o640
        assert 'vcenter_verify = "/etc/zvm/vcenter-ca.pem"' in stage.path(CONFIG).read_text()
        assert "--vcenter-verify" in Direct(stage.layout).command()
        log = stage.path("/var/log/zvm/zvm.log")
        for _ in range(150):  # the engine loads the inventory shortly after the API answers
            if "inventory of" in log.read_text():
                break
            time.sleep(0.2)
        assert f"inventory of {sim.url} loaded" in log.read_text()
        assert stage.install("--uninstall", "--purge").returncode == 0
    finally:
        sim.stop()

    # A bundle of another CA is refused at once, naming the key.
    other = SiteCA(tmp_path / "other", "Someone Else")
    sim = Vcsim.start("ca2", tmp_path / "vcsim2", VcsimSpec(tls=True, tls_cert=str(cert), tls_key=str(key),
                                                            hosts_per_cluster=1, vms_per_pool=1))
    try:
        answers = tmp_path / "other.toml"
        answers.write_text(answers_toml(sim, vcenter={"thumbprint": None, "ca_bundle": str(other.cert_path)}))
        out = stage.install("--answers", str(answers))
    finally:
        sim.stop()
    assert out.returncode == 2 and "answer file key vcenter.ca_bundle:" in out.stderr
    assert "not trusted" in out.stderr and not stage.path(CONFIG_DIR).exists()
