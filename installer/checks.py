"""The checks that reach out of the installer: vCenter (its certificate and a real login, through the
product's own connection code), PostgreSQL (a real connection), TCP ports, and certificate files.

Each returns what it learnt or raises ``Invalid`` with what to fix; the questions (questions.py) call them,
so the wizard and the silent mode check an answer the same way. ``Checks`` is the seam: one object whose
methods tests could replace, though the installer's own tests run them against vcsim and PostgreSQL.
"""

from __future__ import annotations

import errno
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from installer.errors import Invalid
from zvm.errors import AuthenticationError, ConfigError, TransientError


def normalise_fingerprint(text: str) -> str:
    """'AB:CD:...' or 'abcd...' -> 64 lower-case hex digits, or Invalid."""
    hexdigits = text.strip().replace(":", "").replace(" ", "").lower()
    if len(hexdigits) != 64 or any(c not in "0123456789abcdef" for c in hexdigits):
        raise Invalid(f"{text!r} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")
    return hexdigits


def colon_hex(fingerprint: str) -> str:
    """The fingerprint as vSphere and browsers show it: AB:CD:..."""
    return ":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)).upper()


def vcenter_url(address: str) -> str:
    """A vCenter address as typed ('vc.example', 'vc.example:8443', 'https://vc/sdk') -> its SDK URL."""
    from zvm.vcenter import VCenterConfig

    address = address.strip()
    if not address or any(c.isspace() for c in address):
        raise Invalid("give the vCenter's host name or address, e.g. vc.example.com or https://vc.example.com/sdk")
    try:
        scheme, host, port, path = VCenterConfig(url=address, username="", password="").endpoint()
    except (ConfigError, ValueError) as exc:
        raise Invalid(str(exc)) from None
    default = 443 if scheme == "https" else 80
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}{'' if port == default else f':{port}'}{path}"


def endpoint(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)


class Checks:
    """The installer's view of the world outside it."""

    timeout = 15.0

    def reachable(self, host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=self.timeout):
                pass
        except OSError as exc:
            raise Invalid(f"{host}:{port} cannot be reached ({exc.strerror or exc}): check the address, the "
                          "port, and that a firewall lets this machine through") from None

    def vcenter_fingerprint(self, url: str) -> str | None:
        """SHA-256 of the certificate vCenter presents (None over plain http: a simulator, labs only)."""
        from zvm.vcenter.connection import server_thumbprint

        scheme, host, port = endpoint(url)
        self.reachable(host, port)
        if scheme != "https":
            return None
        try:
            return server_thumbprint(host, port, self.timeout)
        except (OSError, ssl.SSLError) as exc:
            raise Invalid(f"{host}:{port} does not speak TLS ({exc}): is this the vCenter's https port?") from None

    def vcenter_login(self, url: str, username: str, password: str, *, thumbprint: str = "",
                      ca_bundle: str = "") -> str:
        """Log in and out; returns what vCenter says it is. A refused login is the password's fault, an
        unreachable or untrusted vCenter the address's or the certificate's."""
        from zvm.vcenter import VCenter, VCenterConfig

        config = VCenterConfig(url=url, username=username, password=password, verify=ca_bundle or True,
                               thumbprint=thumbprint or None, timeout=self.timeout)
        try:
            with VCenter(config) as vc:
                return vc.about.fullName
        except AuthenticationError as exc:
            text = str(exc)
            if "refused the login" in text:
                raise Invalid(f"{text}, then type them again", key="vcenter.password") from None
            key = "vcenter.ca_bundle" if ca_bundle else "vcenter.thumbprint"
            raise Invalid(text, key=key) from None
        except (TransientError, ConfigError) as exc:
            raise Invalid(str(exc), key="vcenter.address") from None

    def postgres(self, url: str) -> str:
        """Connect to PostgreSQL with the URL; returns the server version. The password never shows."""
        import psycopg2

        from zvm.db import redact

        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.path.strip("/"):
            raise Invalid(f"{redact(url)!r}: use postgresql://user:password@host:port/database")
        try:
            conn = psycopg2.connect(url, connect_timeout=int(self.timeout))
        except psycopg2.OperationalError as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "no answer"
            raise Invalid(f"PostgreSQL at {parts.hostname}:{parts.port or 5432} refused or did not answer "
                          f"({reason}): check the host, port, user, password and database name") from None
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return cur.fetchone()[0]
        finally:
            conn.close()

    def port_free(self, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise Invalid(f"port {port} on {host} is in use by another program: stop it, or choose "
                                  "another port") from None
                raise Invalid(f"cannot listen on {host}:{port} ({exc.strerror}): check the listen "
                              "address", key="network.listen_address") from None

    def certificate_pair(self, cert_path: str, key_path: str) -> str:
        """The certificate's SHA-256 fingerprint, once it is known to load with its key."""
        from zvm.tls import ca_fingerprint

        for path in (cert_path, key_path):
            if not Path(path).is_file():
                raise Invalid(f"{path}: no such file")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            ctx.load_cert_chain(cert_path, key_path)
        except ssl.SSLError as exc:
            raise Invalid(f"{cert_path} and {key_path} are not a PEM certificate and its unencrypted private "
                          f"key ({exc.reason or exc})") from None
        return ca_fingerprint(Path(cert_path).read_text())
