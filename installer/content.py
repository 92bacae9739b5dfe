"""What the installer writes: the ZVM's configuration (zvm.toml), the record of an install (install.toml),
and the names its generated HTTPS certificate carries. Pure: text from answers, no I/O but reading a
certificate's names."""

from __future__ import annotations

import datetime as dt
import socket
from pathlib import Path
from typing import Any

from installer.answers import toml_value
from installer.layout import DATA_DIR, TLS_CERT, TLS_KEY, VCENTER_CA
from zvm import __version__


def certificate_names(answers: dict[str, Any]) -> list[str]:
    """The names a generated HTTPS certificate carries: the public address, host name, loopback."""
    names = {answers["network.public_address"], socket.gethostname(), "localhost", "127.0.0.1"}
    if answers["network.listen_address"] not in ("0.0.0.0", "::"):
        names.add(answers["network.listen_address"])
    return sorted(names)


def names_in_certificate(cert: Path) -> list[str]:
    """The certificate's subject alternative names, sorted (to keep a generated one whose names still fit)."""
    from cryptography import x509

    try:
        san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return []
    return sorted([str(v) for v in san.get_values_for_type(x509.IPAddress)] + san.get_values_for_type(x509.DNSName))


def config_text(answers: dict[str, Any], database_url: str, database_password_encrypted: str) -> str:
    https = answers["vcenter.address"].startswith("https:")
    verify = VCENTER_CA if answers.get("vcenter.ca_bundle") else ("true" if https else "false")
    values = {
        "data_dir": DATA_DIR, "host": answers["network.listen_address"], "port": answers["network.api_port"],
        "peer_port": answers["network.peer_port"], "public_address": answers["network.public_address"],
        "site_name": answers["site.name"], "site_location": answers["site.location"],
        "site_contact": answers["site.contact"], "tls_certificate": TLS_CERT, "tls_key": TLS_KEY,
        "database_url": database_url, "database_password_encrypted": database_password_encrypted,
        "vcenter_url": answers["vcenter.address"], "vcenter_username": answers["vcenter.username"],
        "vcenter_verify": verify, "vcenter_thumbprint": answers.get("vcenter.thumbprint", ""),
        "admin_username": "admin",
    }
    head = (f"# The ZVM's configuration, written by zvm-install {__version__} on "
            f"{dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; run zvm-install again to change it.\n"
            "# No secret is kept here: the vCenter password is in the database, encrypted with\n"
            f"# {DATA_DIR}/secret.key; the admin password is stored hashed; the PostgreSQL password (if any)\n"
            "# is database_password_encrypted, under the same key.\n")
    return head + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


def record_text(answers: dict[str, Any], tls_fingerprint: str) -> str:
    from installer.questions import BY_KEY, SECRET_KEYS

    tables: dict[str, dict] = {}
    for key, value in answers.items():
        if key in BY_KEY and key not in SECRET_KEYS:
            section, name = key.split(".")
            tables.setdefault(section, {})[name] = value
    head = (f"# What zvm-install installed (no secrets): the defaults when it runs again.\n"
            f"version = {toml_value(__version__)}\n"
            f"installed_at = {toml_value(dt.datetime.now(dt.UTC).isoformat(timespec='seconds'))}\n"
            f"tls_fingerprint = {toml_value(tls_fingerprint)}\n"
            f"plugin = {toml_value(answers.get('_plugin', ''))}\n"
            f"database_kind = {toml_value(answers.get('database.kind', 'sqlite'))}\n\n")
    return head + "".join(f"[answers.{s}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) + "\n"
                          for s, t in tables.items())
