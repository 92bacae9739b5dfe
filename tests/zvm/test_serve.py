"""``zvm serve`` as an administrator runs it: gunicorn, SQLite in the data dir, HTTPS with a certificate."""

from __future__ import annotations

import subprocess
import sys

import requests

from tests.zvm.procs import REPO, start_serve
from zvm.tls import self_signed


def login(url: str, password: str, **kw) -> dict:
    resp = requests.post(f"{url}/v1/session/add", auth=("admin", password), timeout=30, **kw)
    assert resp.status_code == 200, resp.text
    return {"x-zerto-session": resp.headers["x-zerto-session"]}


def test_serve_with_only_a_data_dir_generates_the_admin_password_once_and_keeps_state(tmp_path):
    data = tmp_path / "zvm"
    server = start_serve(data, "--site-name", "Lab A")
    try:
        password = server.wait_for(r"created user 'admin' with password (\S+)").group(1)
        server.wait_for(r"Booting worker")
        headers = login(server.url, password)
        site = requests.get(f"{server.url}/v1/localsite", headers=headers, timeout=30).json()
        assert site["SiteName"] == "Lab A"
        draft = requests.post(f"{server.url}/v1/vpgSettings", headers=headers, timeout=30).json()
        assert (data / "zvm.db").exists() and (data / "secret.key").stat().st_mode & 0o077 == 0
    finally:
        assert server.stop() == 0
    again = start_serve(data, port=server.port)
    try:
        again.wait_for(r"Booting worker")
        headers = login(again.url, password)
        got = requests.get(f"{again.url}/v1/vpgSettings/{draft}", headers=headers,
                           timeout=30)
        assert got.status_code == 200
        assert not any("created user" in line for line in again.lines)
    finally:
        assert again.stop() == 0


def test_serve_speaks_https_when_a_certificate_is_configured(tmp_path):
    cert, key = tmp_path / "api.pem", tmp_path / "api.key"
    self_signed("zvm.lab", ["127.0.0.1", "localhost"], cert, key)
    server = start_serve(tmp_path / "zvm", "--tls-certificate", str(cert), "--tls-key", str(key),
                         "--admin-password", "S3cure-pass", scheme="https")
    try:
        server.wait_for(r"Booting worker")
        headers = login(server.url, "S3cure-pass", verify=str(cert))
        assert requests.get(f"{server.url}/v1/vpgs", headers=headers, verify=str(cert), timeout=30).json() == []
    finally:
        assert server.stop() == 0


def test_serve_refuses_a_bad_configuration_with_what_to_fix(tmp_path):
    def serve(*args):
        return subprocess.run([sys.executable, "-m", "zvm.cli", "serve", *args], capture_output=True, text=True,
                              cwd=REPO, timeout=60)

    out = serve("--data-dir", str(tmp_path), "--port", "70000")
    assert out.returncode == 1 and "give a TCP port" in out.stderr
    conf = tmp_path / "zvm.toml"
    conf.write_text(f'data_dir = "{tmp_path}"\nprot = 9080\n')
    out = serve("--config", str(conf))
    assert out.returncode == 1 and "unknown key 'prot'" in out.stderr
    out = serve("--data-dir", str(tmp_path), "--tls-certificate", str(conf))
    assert out.returncode == 1 and "both tls_certificate and tls_key" in out.stderr
    out = serve()
    assert out.returncode == 1 and "--data-dir" in out.stderr


def test_serve_on_postgresql(tmp_path, pg_server):
    url = pg_server.new_database()
    server = start_serve(tmp_path / "zvm", "--database-url", url, "--admin-password", "S3cure-pass")
    try:
        server.wait_for(r"Booting worker")
        headers = login(server.url, "S3cure-pass")
        draft = requests.post(f"{server.url}/v1/vpgSettings", headers=headers, timeout=30).json()
        got = requests.get(f"{server.url}/v1/vpgSettings/{draft}", headers=headers,
                           timeout=30)
        assert got.status_code == 200 and got.json()["CreatedBy"] == "admin"
        assert not (tmp_path / "zvm" / "zvm.db").exists()  # the state is in PostgreSQL
        assert url.split(":")[2].split("@")[0] not in "\n".join(server.lines)  # its password is never logged
    finally:
        assert server.stop() == 0
