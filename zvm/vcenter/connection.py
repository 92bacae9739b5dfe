"""The pyVmomi connection to a vCenter: the one place the product opens a SOAP session.

A vcsim is reached over plain http (``http://127.0.0.1:PORT/sdk``); a real vCenter over https, with
certificate verification on by default, a CA bundle, or a pinned SHA-256 thumbprint for self-signed
certificates. vmodl faults and socket errors are translated into the product's errors here.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from pyVim import connect
from pyVmomi import vim, vmodl

from zvm.errors import AuthenticationError, ConfigError, TransientError


@dataclass(frozen=True)
class VCenterConfig:
    """Where a vCenter is and how to trust it.

    ``url`` is ``http(s)://host[:port][/sdk]`` or a bare host name (https). ``verify`` is True (system CAs),
    False (no verification: labs only), or a path to a CA bundle. ``thumbprint`` pins the server's
    certificate by SHA-256 (hex, colons allowed) and replaces CA verification.
    """

    url: str
    username: str
    password: str
    verify: bool | str = True
    thumbprint: str | None = None
    timeout: float = 30.0

    def __repr__(self) -> str:  # never show the password
        return f"VCenterConfig(url={self.url!r}, username={self.username!r})"

    def endpoint(self) -> tuple[str, str, int, str]:
        url = self.url if "//" in self.url else f"https://{self.url}"
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise ConfigError(f"vCenter URL {self.url!r}: use http:// or https://")
        if not parts.hostname:
            raise ConfigError(f"vCenter URL {self.url!r} has no host name")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path.rstrip("/") or "/sdk"
        return parts.scheme, parts.hostname, port, path


def _ssl_context(config: VCenterConfig) -> ssl.SSLContext:
    if config.thumbprint or config.verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(config.verify, str):
        return ssl.create_default_context(cafile=config.verify)
    return ssl.create_default_context()


def _check_thumbprint(host: str, port: int, expected: str, timeout: float) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    got = hashlib.sha256(der).hexdigest()
    if got != expected.replace(":", "").lower():
        raise AuthenticationError(
            f"vCenter {host}:{port} presented a certificate with SHA-256 thumbprint {got}, not the "
            "configured one: check that this is the right vCenter, then update the thumbprint"
        )


class VCenter:
    """An open session to one vCenter. Use as a context manager, or call ``close()``."""

    def __init__(self, config: VCenterConfig):
        self.config = config
        scheme, host, port, path = config.endpoint()
        kwargs = dict(host=host, port=port, user=config.username, pwd=config.password, path=path,
                      protocol=scheme, connectionPoolTimeout=config.timeout)
        if scheme == "https":
            if config.thumbprint:
                _check_thumbprint(host, port, config.thumbprint, config.timeout)
            kwargs["sslContext"] = _ssl_context(config)
        try:
            self.si = connect.SmartConnect(**kwargs)
        except vim.fault.InvalidLogin as exc:
            raise AuthenticationError(
                f"vCenter {host}:{port} refused the login of {config.username!r}: check the user name "
                "and password") from exc
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(
                f"vCenter {host}:{port} certificate is not trusted ({exc.verify_message}): give a CA "
                "bundle, or pin its thumbprint") from exc
        except (OSError, vmodl.MethodFault) as exc:
            raise TransientError(f"vCenter {host}:{port} cannot be reached: {exc}") from exc
        self.content = self.si.RetrieveContent()

    @property
    def about(self) -> vim.AboutInfo:
        return self.content.about

    def close(self) -> None:
        try:
            connect.Disconnect(self.si)
        except Exception:  # noqa: BLE001 - closing a dead session is not an error worth reporting
            pass

    def __enter__(self) -> VCenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def inventory(self):
        from zvm.vcenter.inventory import read_inventory

        return read_inventory(self)
