"""Upgrade keeps the data (a VPG made before it), migrates, restarts and updates the plugin registration
to the new version; an install on PostgreSQL keeps the database password out of the configuration."""

from __future__ import annotations

import re
import subprocess
import tomllib

import pytest
import requests

from installer import accounts
from installer.layout import CONFIG, DATA_DIR, RECORD, TLS_CERT
from installer.service import Direct
from tests.installer.conftest import answers_toml, printed_fingerprint
from tests.zvm.pg import PostgresServer
from zvm import __version__
from zvm.tls import ca_fingerprint
from zvm.vcenter import VCenter, VCenterConfig

MAKE_VPG = """
import sys
from zvm import db as zdb, models as m
db = zdb.bind(zdb.open_database(sys.argv[1]))
zdb.connect(db)
with zdb.transaction(db):
    local = m.Site.get(m.Site.is_local == True)
    peer = m.Site.create(name="Site B", zvm_address="127.0.0.2")
    m.Vpg.create(name="vpg-before-upgrade", protected_site=local, recovery_site=peer)
db.close()
"""


def test_upgrade_keeps_a_vpg_restarts_and_updates_the_plugin(stage, https_vcenter, tmp_path):
    from zvm.vcenter import extension

    sim = https_vcenter
    out, port = stage.install_answers(answers_toml(sim), tmp_path)
    answers = tmp_path / "answers.toml"
    uid, gid = accounts.lookup(stage.layout)
    db_url = f"sqlite:///{stage.path(DATA_DIR) / 'zvm.db'}"
    subprocess.run([str(stage.python), "-c", MAKE_VPG, db_url], check=True, user=uid, group=gid, cwd="/")
    # As if installed by an older release: the record and the plugin registration say 0.0.1.
    record = stage.path(RECORD)
    record.write_text(record.read_text().replace(f'version = "{__version__}"', 'version = "0.0.1"', 1))
    thumbprint = tomllib.loads(answers.read_text())["vcenter"]["thumbprint"]
    vc_config = VCenterConfig(url=sim.url, username=sim.username, password=sim.password, thumbprint=thumbprint)
    reg = extension.PluginRegistration(manifest_url=f"https://127.0.0.1:{port}/plugin/plugin.json",
                                       certificate_pem=stage.path(TLS_CERT).read_text(), version="0.0.1")
    with VCenter(vc_config) as vc:
        assert extension.register(vc, reg) == "updated"
    before = Direct(stage.layout).pid()

    out = stage.install("--upgrade")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"upgrading the ZVM from 0.0.1 to {__version__}" in out.stdout
    after = Direct(stage.layout).pid()
    assert after is not None and after != before
    cert = str(stage.path(TLS_CERT))
    vpgs = requests.get(f"https://127.0.0.1:{port}/v1/vpgs", verify=cert, timeout=30,
                        headers=stage.session(port, "Adm1n-pass-1")).json()
    assert [v["VpgName"] for v in vpgs] == ["vpg-before-upgrade"]
    with VCenter(vc_config) as vc:
        found = extension.status(vc)
    assert found is not None and found.version == __version__
    assert tomllib.loads(record.read_text())["version"] == __version__
    assert stage.install("--uninstall").returncode == 0


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer.start()
    yield server
    server.stop()


def test_install_on_postgresql_keeps_its_password_encrypted(stage, https_vcenter, postgres, tmp_path):
    """... serves HTTPS with a certificate and key of the administrator's own (tls.mode = files), and logs the
    admin in with the password it generated and showed once."""
    from zvm.tls import self_signed

    url = postgres.new_database()
    cert, key = tmp_path / "mine.pem", tmp_path / "mine.key"
    self_signed("zvm-a.example", ["127.0.0.1", "zvm-a.example"], cert, key)
    out, port = stage.install_answers(answers_toml(
        https_vcenter, database={"kind": "postgresql", "url": url}, plugin={"register": False},
        tls={"mode": "files", "certificate": str(cert), "key": str(key)}, admin={"password": None}), tmp_path)
    generated = re.search(r"admin password:\s+(\S+)\n\s+\(generated: shown only this once", out.stdout).group(1)
    assert generated not in stage.path(CONFIG).read_text() + stage.path(RECORD).read_text()
    assert "vSphere plugin" not in out.stdout
    assert printed_fingerprint(out.stdout) == ca_fingerprint(cert.read_text())
    assert stage.path(TLS_CERT).read_bytes() == cert.read_bytes()
    config = tomllib.loads(stage.path(CONFIG).read_text())
    assert postgres.password not in stage.path(CONFIG).read_text()
    assert config["database_url"] == url.replace(f":{postgres.password}@", "@")
    assert config["database_password_encrypted"]
    assert not (stage.path(DATA_DIR) / "zvm.db").exists()
    site = requests.get(f"https://127.0.0.1:{port}/v1/localsite", verify=str(stage.path(TLS_CERT)), timeout=30,
                        headers=stage.session(port, generated)).json()
    assert site["SiteName"] == "Site A"
    assert stage.install("--uninstall", "--purge").returncode == 0
