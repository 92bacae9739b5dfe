"""What the installer asks, in order: each question's answer-file key, its default and its check.

The interactive wizard and the silent mode walk the same list (``QUESTIONS``) and call the same checks, so
an answer accepted by one is accepted by the other. A check returns the answer as stored (a vCenter
address becomes its SDK URL) or raises ``Invalid``; checks that reach out go through ``Context.checks``.
A question's ``when`` decides whether it is asked, from the answers before it (the CA bundle only when no
fingerprint is pinned, the PostgreSQL URL only for PostgreSQL).
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from installer.checks import Checks, normalise_fingerprint, vcenter_url
from installer.errors import Invalid

SECRET_KEYS = ("vcenter.password", "database.url", "admin.password")


@dataclass
class Context:
    """The answers so far and what the checks learnt on the way (vCenter's certificate)."""

    checks: Checks = field(default_factory=Checks)
    answers: dict[str, Any] = field(default_factory=dict)
    previous: dict[str, Any] = field(default_factory=dict)  # an installed ZVM's answers: the defaults
    stored_secret: Callable[[str], str | None] = lambda key: None  # an installed ZVM's secret, to keep
    own_ports: set[int] = field(default_factory=set)  # held by the installed ZVM itself
    facts: dict[str, Any] = field(default_factory=dict)

    def https(self) -> bool:
        return str(self.answers.get("vcenter.address", "")).startswith("https:")


@dataclass(frozen=True)
class Question:
    key: str
    label: str
    help: str
    kind: str = "text"  # text, secret, int, bool, choice
    choices: tuple[str, ...] = ()
    default: Callable[[Context], Any] | None = None  # None: an answer is required
    silent_default: bool = True  # False: the default is offered in the wizard only (a fingerprint to accept)
    check: Callable[[Any, Context], Any] | None = None
    when: Callable[[Context], bool] = lambda ctx: True

    def default_for(self, ctx: Context) -> Any:
        if self.key in ctx.previous and self.kind != "secret":
            return ctx.previous[self.key]
        return self.default(ctx) if self.default else None

    def parse(self, raw: str) -> Any:
        """Text typed at the terminal -> the answer's type."""
        raw = raw.strip() if self.kind != "secret" else raw
        if self.kind == "int":
            try:
                return int(raw)
            except ValueError:
                raise Invalid(f"{raw!r} is not a whole number") from None
        if self.kind == "bool":
            if raw.lower() in ("y", "yes", "true"):
                return True
            if raw.lower() in ("n", "no", "false"):
                return False
            raise Invalid("answer yes or no")
        if self.kind == "choice":
            found = [c for c in self.choices if c.startswith(raw.lower())] if raw else []
            if len(found) != 1:
                raise Invalid(f"choose one of: {', '.join(self.choices)}")
            return found[0]
        return raw

    def accept(self, value: Any, ctx: Context) -> Any:
        if self.kind == "choice" and value not in self.choices:
            raise Invalid(f"{value!r}: choose one of {', '.join(self.choices)}")
        return self.check(value, ctx) if self.check else value


# --- the checks -------------------------------------------------------------------------------------------

def _address(value: str, ctx: Context) -> str:
    url = vcenter_url(value)
    ctx.facts["vcenter_fingerprint"] = ctx.checks.vcenter_fingerprint(url)
    return url


def _thumbprint(value: str, ctx: Context) -> str:
    if value.strip() in ("", "-"):
        return ""  # a CA bundle instead
    wanted = normalise_fingerprint(value)
    presented = ctx.facts.get("vcenter_fingerprint")
    if presented and wanted != presented:
        from installer.checks import colon_hex

        raise Invalid(f"vCenter presents a certificate with fingerprint {colon_hex(presented)}, not "
                      f"{colon_hex(wanted)}: make sure this is your vCenter (compare in its web client), "
                      "then give the fingerprint it shows")
    return wanted


def _ca_bundle(value: str, ctx: Context) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise Invalid(f"{value}: no such file (a PEM file of the CA certificates that signed vCenter's)")
    try:
        ssl.create_default_context(cafile=str(path))
    except ssl.SSLError as exc:
        raise Invalid(f"{value} holds no PEM CA certificate ({exc.reason or exc})") from None
    return str(path.resolve())


def _username(value: str, ctx: Context) -> str:
    if not value.strip():
        raise Invalid("give the vCenter user the ZVM logs in as, e.g. administrator@vsphere.local")
    return value.strip()


def _given_or_stored(value: str, ctx: Context, key: str, missing: str) -> str:
    """A secret as typed, or (Enter on a reconfigure) the installed ZVM's own."""
    if value:
        return value
    stored = ctx.stored_secret(key)
    if stored is None:
        raise Invalid(missing)
    return stored


def _vcenter_password(value: str, ctx: Context) -> str:
    value = _given_or_stored(value, ctx, "vcenter.password", "give the vCenter user's password")
    a = ctx.answers
    ctx.facts["vcenter_product"] = ctx.checks.vcenter_login(
        a["vcenter.address"], a["vcenter.username"], value, thumbprint=a.get("vcenter.thumbprint", ""),
        ca_bundle=a.get("vcenter.ca_bundle", ""))
    return value


def _nonempty(what: str, limit: int = 128):
    def check(value: str, ctx: Context) -> str:
        value = value.strip()
        if not value:
            raise Invalid(f"give {what}")
        if len(value) > limit:
            raise Invalid(f"{what} is at most {limit} characters")
        return value

    return check


def _free_text(value: str, ctx: Context) -> str:
    if len(value) > 256:
        raise Invalid("at most 256 characters")
    return value.strip()


def _public_address(value: str, ctx: Context) -> str:
    value = value.strip()
    if not value or any(c.isspace() for c in value) or "/" in value:
        raise Invalid("give a host name or IP address that the peer site and the VRAs can reach")
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    try:
        socket.getaddrinfo(value, None)
    except OSError:
        raise Invalid(f"{value!r} does not resolve here: give a name in DNS (or /etc/hosts), or an IP "
                      "address") from None
    return value


def _listen_address(value: str, ctx: Context) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise Invalid(f"{value!r} is not an IP address (0.0.0.0 listens on all of them)") from None


def _port(other: str | None):
    def check(value: int, ctx: Context) -> int:
        if not 1 <= value <= 65535:
            raise Invalid(f"{value} is not a TCP port (1 to 65535)")
        if other and ctx.answers.get(other) == value:
            raise Invalid(f"{value} is already the {other.split('.')[1].replace('_', ' ')}: give another port")
        if value not in ctx.own_ports:
            ctx.checks.port_free(ctx.answers.get("network.listen_address", "0.0.0.0"), value)
        return value

    return check


def _cert_file(value: str, ctx: Context) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        raise Invalid(f"{value}: no such file (the ZVM's certificate, PEM, its chain after it)")
    return str(path.resolve())


def _key_file(value: str, ctx: Context) -> str:
    path = Path(value).expanduser()
    ctx.facts["tls_fingerprint"] = ctx.checks.certificate_pair(ctx.answers["tls.certificate"], str(path))
    return str(path.resolve())


def _database_url(value: str, ctx: Context) -> str:
    value = _given_or_stored(value, ctx, "database.url",
                             "give the PostgreSQL URL: postgresql://user:password@host:5432/database")
    ctx.facts["postgres_version"] = ctx.checks.postgres(value.strip())
    return value.strip()


def _admin_password(value: str, ctx: Context) -> str:
    if value and len(value) < 8:
        raise Invalid("use at least 8 characters (or leave it empty to have one generated)")
    return value


QUESTIONS: list[Question] = [
    Question("vcenter.address", "vCenter address",
             "host name or address of this site's vCenter (https://host/sdk is assumed)", check=_address),
    Question("vcenter.thumbprint", "vCenter certificate fingerprint (SHA-256)",
             "vCenter's certificate is pinned by its SHA-256 fingerprint: compare the one shown with the one "
             "your vCenter shows, then accept it; '-' to trust it through a CA bundle instead",
             default=lambda ctx: ctx.facts.get("vcenter_fingerprint") or "", silent_default=False,
             check=_thumbprint, when=lambda ctx: ctx.https()),
    Question("vcenter.ca_bundle", "CA bundle that signed vCenter's certificate",
             "a PEM file of the CA certificates that signed vCenter's certificate", check=_ca_bundle,
             when=lambda ctx: ctx.https() and not ctx.answers.get("vcenter.thumbprint")),
    Question("vcenter.username", "vCenter user", "the vCenter user the ZVM acts as",
             default=lambda ctx: "administrator@vsphere.local", check=_username),
    Question("vcenter.password", "vCenter password", "checked by logging in to vCenter", kind="secret",
             check=_vcenter_password),
    Question("site.name", "Site name", "this site's name, as the peer site and the UI show it",
             default=lambda ctx: socket.gethostname(), check=_nonempty("a site name", 64)),
    Question("site.location", "Site location", "where the site is (free text, may be empty)",
             default=lambda ctx: "", check=_free_text),
    Question("site.contact", "Site contact", "who to call about this site (free text, may be empty)",
             default=lambda ctx: "", check=_free_text),
    Question("network.public_address", "Address of this ZVM for the peer site and the VRAs",
             "the host name or IP address by which the peer site's ZVM and this site's VRAs reach this ZVM",
             default=lambda ctx: socket.getfqdn(), check=_public_address),
    Question("network.listen_address", "Listen on address", "the local address the ZVM listens on",
             default=lambda ctx: "0.0.0.0", check=_listen_address),
    Question("network.api_port", "API and UI port (HTTPS)", "REST API, UI and vSphere Client plugin",
             kind="int", default=lambda ctx: 9080, check=_port("network.peer_port")),
    Question("network.peer_port", "Peer site port", "ZVM to ZVM (pairing, recovery), mutual TLS",
             kind="int", default=lambda ctx: 9081, check=_port("network.api_port")),
    Question("tls.mode", "HTTPS certificate", "generate: a certificate made for this ZVM; files: yours",
             kind="choice", choices=("generate", "files"), default=lambda ctx: "generate"),
    Question("tls.certificate", "Certificate file (PEM)", "the ZVM's certificate, its chain after it",
             check=_cert_file, when=lambda ctx: ctx.answers.get("tls.mode") == "files"),
    Question("tls.key", "Private key file (PEM, unencrypted)", "the certificate's private key",
             check=_key_file, when=lambda ctx: ctx.answers.get("tls.mode") == "files"),
    Question("database.kind", "Database", "sqlite: embedded, in the data directory; postgresql: a server "
             "of yours, for large sites", kind="choice", choices=("sqlite", "postgresql"),
             default=lambda ctx: "sqlite"),
    Question("database.url", "PostgreSQL URL", "postgresql://user:password@host:5432/database (checked by "
             "connecting)", kind="secret", check=_database_url,
             when=lambda ctx: ctx.answers.get("database.kind") == "postgresql"),
    Question("admin.password", "Password of the ZVM's admin user",
             "at least 8 characters; empty: one is generated and shown once at the end", kind="secret",
             default=lambda ctx: "", check=_admin_password),
    Question("plugin.register", "Register the vSphere Client plugin", "shows the ZVM in the vSphere Client",
             kind="bool", default=lambda ctx: True),
]

BY_KEY = {q.key: q for q in QUESTIONS}


def summary(answers: dict[str, Any], facts: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, shown value) for the summary to confirm; secrets are never shown."""
    from installer.checks import colon_hex
    from zvm.db import redact

    rows = []
    for q in QUESTIONS:
        if q.key not in answers:
            continue
        value = answers[q.key]
        if q.key == "admin.password":
            shown = "(given)" if value else "(generated, shown once at the end)"
        elif q.key == "database.url":
            shown = redact(value)
        elif q.kind == "secret":
            shown = "(given, checked)"
        elif q.key == "vcenter.thumbprint":
            shown = colon_hex(value) if value else "(none: CA bundle)"
        elif q.kind == "bool":
            shown = "yes" if value else "no"
        else:
            shown = str(value) if value != "" else "(empty)"
        rows.append((q.label, shown))
    return rows
