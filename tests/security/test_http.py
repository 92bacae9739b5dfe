"""Issue 13 points 3, 5 and 6 against a real ``zvm serve`` (gunicorn) and real HTTP clients:

- HTTPS by default with a certificate the ZVM makes, signed by its site CA, fingerprint printed; the CLI and
  zvm.client verify it by CA bundle or pinned fingerprint and refuse it otherwise;
- gunicorn's own refusals (414, 431) and a chunked body over the limit (413) are JSON; no redirect is built
  from the Host header;
- the admin password and database URL come from a file (never in ps), the data directory is 0700 and the
  database 0600.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from cryptography import x509

from tests.security.conftest import USER_PASSWORD
from tests.zvm.fakes import basic
from tests.zvm.procs import REPO, start_serve
from zvm.client import ZvmClient
from zvm.errors import TransientError

PASSWORD = "Fr0m-a-file-only"


@pytest.fixture(scope="module")
def https_server(tmp_path_factory):
    data = tmp_path_factory.mktemp("https") / "zvm"
    secret = data.parent / "admin-password"
    secret.write_text(PASSWORD + "\n")
    server = start_serve(data, "--admin-password-file", str(secret), "--site-name", "Secure A", scheme="https")
    fingerprint = server.wait_for(r"SHA-256 fingerprint ([0-9A-F:]{95})").group(1)
    server.wait_for(r"Booting worker")
    yield server, data, fingerprint
    assert server.stop() == 0


def test_serve_speaks_https_by_default_with_a_certificate_signed_by_the_site_ca(https_server):
    server, data, fingerprint = https_server
    ca = data / "pki" / "ca.pem"
    pem = ssl.get_server_certificate(("127.0.0.1", server.port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = {str(v) for v in sans.get_values_for_type(x509.IPAddress)} | set(sans.get_values_for_type(x509.DNSName))
    assert {"127.0.0.1", "localhost", os.uname().nodename} <= names
    with ZvmClient(server.url, verify=str(ca)).login("admin", PASSWORD) as client:
        assert client.vpgs() == []
    with ZvmClient(server.url, fingerprint=fingerprint).login("admin", PASSWORD) as client:
        assert client.local_site()["SiteName"] == "Secure A"
    # unverified: neither the system's CAs nor another fingerprint accept it
    with ZvmClient(server.url) as client, pytest.raises(TransientError, match="CERTIFICATE_VERIFY_FAILED"):
        client.login("admin", PASSWORD)
    with ZvmClient(server.url, fingerprint="AB" * 32) as client, pytest.raises(TransientError, match="[Ff]ingerprint"):
        client.login("admin", PASSWORD)
    # plain HTTP to the HTTPS port gets no API answer
    with requests.Session() as plain, pytest.raises(requests.RequestException):
        plain.get(f"http://127.0.0.1:{server.port}/v1/openapi.json", timeout=10).json()


def test_the_cli_verifies_by_ca_file_or_fingerprint(https_server):
    server, data, fingerprint = https_server
    env = {**os.environ, "ZVM_PASSWORD": PASSWORD, "ZVM_URL": server.url}

    def zvm(*args):
        return subprocess.run([sys.executable, "-m", "zvm.cli", *args], capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=60)

    assert zvm("vpgs", "--ca-file", str(data / "pki" / "ca.pem")).returncode == 0
    assert zvm("vpgs", "--fingerprint", fingerprint.lower().replace(":", "")).returncode == 0
    refused = zvm("vpgs")
    assert refused.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr
    created = zvm("users", "create", "auditor", "--role", "viewer", "--fingerprint", fingerprint)
    assert created.returncode == 1 and "ZVM_NEW_PASSWORD" in created.stderr
    env["ZVM_NEW_PASSWORD"] = USER_PASSWORD
    assert zvm("users", "create", "auditor", "--role", "viewer", "--fingerprint", fingerprint).returncode == 0
    listed = zvm("users", "list", "--fingerprint", fingerprint)
    assert re.search(r"auditor\s+viewer\s+yes", listed.stdout), listed.stdout


def test_the_certificate_is_kept_across_restarts_and_its_key_is_private(https_server):
    server, data, fingerprint = https_server
    from zvm.https import ApiCertificate

    cert = ApiCertificate(data / "pki" / "api.pem", data / "pki" / "api.key", data / "pki" / "ca.pem")
    assert cert.fingerprint() == fingerprint
    for key in (data / "pki" / "api.key", data / "pki" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600


def test_the_data_directory_and_database_are_private(https_server):
    server, data, _ = https_server
    with _connection(https_server) as conn:
        token = _login(conn)
    stored = b"".join((data / name).read_bytes() for name in ("zvm.db", "zvm.db-wal") if (data / name).exists())
    assert PASSWORD.encode() not in stored and token.encode() not in stored  # hashes only
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("zvm.db", "zvm.db-wal", "zvm.db-shm", "secret.key"):
        if (data / name).exists():
            assert stat.S_IMODE((data / name).stat().st_mode) == 0o600, name
    assert (data / "zvm.db").exists()


def test_no_secret_in_the_process_list_or_the_output(https_server):
    server, data, _ = https_server
    cmdlines = [Path(f"/proc/{pid}/cmdline").read_bytes() for pid in _tree(server.proc.pid)]
    assert len(cmdlines) >= 2  # the master and its worker
    assert all(PASSWORD.encode() not in c for c in cmdlines)
    assert PASSWORD not in "\n".join(server.lines)


def _tree(pid: int) -> list[int]:
    out = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for child in children.read_text().split() if children.exists() else []:
        out += _tree(int(child))
    return out


@contextlib.contextmanager
def _connection(https) -> Iterator[http.client.HTTPSConnection]:
    server, data, _ = https
    ctx = ssl.create_default_context(cafile=str(data / "pki" / "ca.pem"))
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=ctx, timeout=30)
    try:
        yield conn
    finally:
        conn.close()


def test_a_chunked_body_over_the_limit_is_413_json_and_the_connection_goes_on(https_server):
    server, _, _ = https_server
    with _connection(https_server) as conn:
        token = _login(conn)

        def chunks():
            yield b'{"x": "'
            for _ in range(5 * 16):  # 5 MiB in 64 KiB chunks
                yield b"a" * 65536

        conn.request("POST", "/v1/vpgSettings", body=chunks(), encode_chunked=True,
                     headers={"Content-Type": "application/json", "x-zerto-session": token})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 413 and resp.getheader("Content-Type") == "application/json", body
        assert b'"Code": "PayloadTooLarge"' in body
        conn.request("GET", "/v1/vpgs", headers={"x-zerto-session": token})
        again = conn.getresponse()
        assert (again.status, again.read()) == (200, b"[]\n")


def test_a_small_chunked_body_is_read_whole(https_server):
    server, _, _ = https_server
    with _connection(https_server) as conn:
        token = _login(conn)
        conn.request("POST", "/v1/peersites/generatetoken", body=iter([b'{"Expiration', b'InMinutes": 7}']),
                     encode_chunked=True, headers={"Content-Type": "application/json", "x-zerto-session": token})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        resp.read()


def _login(conn) -> str:
    conn.request("POST", "/v1/session/add", headers=basic("admin", PASSWORD))
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 200
    return resp.getheader("x-zerto-session")


@pytest.mark.parametrize("request_line,headers,status,code", [
    ("GET /v1/vpgs?" + "a" * 5000 + " HTTP/1.1", {}, 414, "UriTooLong"),
    ("GET /v1/vpgs HTTP/1.1", {f"X-H{i}": "v" for i in range(120)}, 431, "RequestHeaderTooLarge"),
    ("GET /v1/vpgs HTTP/9.9", {}, 400, "BadRequest"),
])
def test_gunicorn_refusals_are_json(https_server, request_line, headers, status, code):
    server, _, _ = https_server
    with _connection(https_server) as conn:
        conn.connect()
        lines = [request_line, "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items()), "", ""]
        conn.sock.sendall("\r\n".join(lines).encode())
        raw = b""
        while chunk := conn.sock.recv(65536):
            raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
        assert b"Content-Type: application/json" in head
        assert f'"Code": "{code}"'.encode() in body


@pytest.mark.parametrize("path", ["/v1//vpgs", "/v1/vpgs/", "//v1/vpgs", "/v1/./vpgs"])
def test_no_redirect_is_built_from_the_host_header(https_server, path):
    server, _, _ = https_server
    with _connection(https_server) as conn:
        conn.putrequest("GET", path, skip_host=True)
        conn.putheader("Host", "evil.example")
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        assert not 300 <= resp.status < 400 and "evil" not in (resp.getheader("Location") or "")


def test_help_says_how_to_keep_secrets_out_of_ps():
    out = subprocess.run([sys.executable, "-m", "zvm.cli", "serve", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=60).stdout
    flat = " ".join(out.split())
    for said in ("--admin-password-file", "--database-url-file", "ZVM_ADMIN_PASSWORD", "ZVM_DATABASE_URL",
                 "--insecure-http", "in ps"):
        assert said in flat, said
