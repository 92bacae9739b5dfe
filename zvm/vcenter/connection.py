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
from pyVmomi.SoapAdapter import SoapStubAdapter

from zvm.errors import AuthenticationError, ConfigError, TransientError
from zvm.vcenter import ovf
from zvm.vcenter import recovery as recovery_functions
from zvm.vcenter.inventory import read_inventory
from zvm.vcenter.watch import InventoryWatcher


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


def server_thumbprint(host: str, port: int, timeout: float = 30.0) -> str:
    """SHA-256 (hex) of the certificate the server at host:port presents, not verified: what an
    administrator compares with the one vCenter shows before pinning it."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=timeout) as raw, ctx.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest()


def _check_thumbprint(host: str, port: int, expected: str, timeout: float) -> None:
    got = server_thumbprint(host, port, timeout)
    if got != expected.replace(":", "").lower():
        raise AuthenticationError(
            f"vCenter {host}:{port} presented a certificate with SHA-256 thumbprint {got}, not the "
            "configured one: check that this is the right vCenter, then update the thumbprint"
        )


def _find_version(scheme: str, host: str, port: int, path: str, ssl_context) -> str:
    """The newest vim25 API version both pyVmomi and the server speak (pyVim's own negotiation)."""
    negotiate = getattr(connect, "__FindSupportedVersion")
    version = negotiate(scheme, host, port, path, connect.GetServiceVersions("vim25"), ssl_context,
                        None, 80, None)
    if version is None:
        raise TransientError(f"{host}:{port} answers, but is not a vCenter (no vim25 API at {path})")
    return version


class VCenter:
    """An open session to one vCenter. Use as a context manager, or call ``close()``.

    With ``clone_ticket`` the session is a clone of another one (``SessionManager.CloneSession``): how the
    ZVM acts as the vSphere Client's user, who handed it a ticket of their session; ``config``'s user name
    and password are not used then."""

    def __init__(self, config: VCenterConfig, *, clone_ticket: str | None = None):
        self.config = config
        scheme, host, port, path = config.endpoint()
        ssl_context = None
        if scheme == "https":
            if config.thumbprint:
                _check_thumbprint(host, port, config.thumbprint, config.timeout)
            ssl_context = _ssl_context(config)
        # The stub is built and logged in here rather than by SmartConnect, so that a refused login
        # closes its connections instead of leaving them to the garbage collector.
        stub = None
        try:
            version = _find_version(scheme, host, port, path, ssl_context)
            # pyVmomi's stub takes a negative port to mean plain http.
            stub = SoapStubAdapter(host=host, port=port if scheme == "https" else -port, path=path,
                                   version=version, sslContext=ssl_context,
                                   httpConnectionTimeout=config.timeout)
            self.si = vim.ServiceInstance("ServiceInstance", stub)
            if clone_ticket is not None:
                self.si.content.sessionManager.CloneSession(clone_ticket)
            else:
                self.si.content.sessionManager.Login(config.username, config.password, None)
        except vim.fault.InvalidLogin as exc:
            stub.DropConnections()
            if clone_ticket is not None:
                raise AuthenticationError(
                    f"vCenter {host}:{port} refused the session ticket (unknown, used already, or expired): "
                    "reload the view in the vSphere Client") from exc
            raise AuthenticationError(
                f"vCenter {host}:{port} refused the login of {config.username!r}: check the user name "
                "and password") from exc
        except ssl.SSLCertVerificationError as exc:
            raise AuthenticationError(
                f"vCenter {host}:{port} certificate is not trusted ({exc.verify_message}): give a CA "
                "bundle, or pin its thumbprint") from exc
        except (OSError, vmodl.MethodFault) as exc:
            if stub is not None:
                stub.DropConnections()
            raise TransientError(f"vCenter {host}:{port} cannot be reached: {exc}") from exc
        except Exception as exc:  # pyVim raises a bare Exception for "is down or is not a VIM server"
            raise TransientError(f"vCenter {host}:{port} cannot be reached: {exc}") from exc
        self.content = self.si.RetrieveContent()

    @property
    def user(self) -> str:
        """The vCenter user this session acts as."""
        return self.content.sessionManager.currentSession.userName

    @property
    def about(self) -> vim.AboutInfo:
        return self.content.about

    def close(self) -> None:
        try:
            self.si.content.sessionManager.Logout()
        except (OSError, vmodl.MethodFault):
            pass  # the session is gone already; closing the connections is what matters
        finally:
            self.si._stub.DropConnections()

    def __enter__(self) -> VCenter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def inventory(self):
        return read_inventory(self)

    def deploy_ovf(self, ovf_path, **kwargs) -> str:
        """See zvm.vcenter.ovf.deploy_ovf; returns the new VM's moid."""
        return ovf.deploy_ovf(self, ovf_path, **kwargs)

    def destroy_vm(self, vm_moid: str, progress=None) -> bool:
        return ovf.destroy_vm(self, vm_moid, progress)

    def find_vm(self, name: str) -> str | None:
        return ovf.find_vm(self, name)

    def recovery(self):
        """Recovery VMs and source VMs of recovery operations: the functions of zvm.vcenter.recovery."""
        return _Bound(self, recovery_functions)

    def watch(self):
        """An InventoryWatcher: the inventory, then its changes as vCenter reports them."""
        return InventoryWatcher(self)


class _Bound:
    """A module's functions with this session as their first argument (``vc.recovery().power_on(moid)``)."""

    def __init__(self, vc: VCenter, module) -> None:
        self._vc = vc
        self._module = module

    def __getattr__(self, name: str):
        fn = getattr(self._module, name)
        return lambda *args, **kw: fn(self._vc, *args, **kw)
