"""The vSphere Client plugin's registration with vCenter: ``ExtensionManager`` Register/Update/Unregister.

A vSphere Client *remote* plugin is an extension whose ``client[0]`` has type ``vsphere-client-remote`` and
whose url is the full HTTPS URL of the plugin's ``plugin.json`` manifest; ``server[0]`` names the same
server with the SHA-256 thumbprint (colon-separated upper-case hex, as vCenter writes it) and the PEM
certificate of its HTTPS certificate, so the vSphere Client trusts that server and no other.

The functions take an open ``zvm.vcenter.VCenter`` and a ``PluginRegistration`` and are idempotent:

- ``register``: registers, or updates an extension of the same key that differs; unchanged when it matches.
  Returns ``"registered"``, ``"updated"`` or ``"unchanged"``.
- ``update``: like register, but the extension must be registered already (``NotFoundError`` otherwise).
- ``unregister``: True when it removed the extension, False when none was registered.
- ``status``: the registered extension as a ``PluginStatus``, or None.

vmodl faults become the product's errors here (``ValidationError`` for what vCenter refused as invalid,
``TransientError`` for a vCenter that did not answer).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pyVmomi import vim, vmodl

from zvm.errors import NotFoundError, TransientError, ValidationError

PLUGIN_KEY = "com.zvr.dr.plugin"
CLIENT_TYPE = "vsphere-client-remote"
COMPANY = "ZVR"
LABEL = "ZVR Disaster Recovery"
SUMMARY = "Replication, failover test, failover and move of VPGs between vSphere sites"


def thumbprint(certificate_pem: str) -> str:
    """SHA-256 of the certificate's DER form as vCenter writes thumbprints: ``AB:CD:...`` (upper case)."""
    try:
        cert = x509.load_pem_x509_certificate(certificate_pem.encode())
    except ValueError as exc:
        raise ValidationError("the HTTPS certificate is not a PEM certificate: give the file the ZVM serves "
                              "HTTPS with (tls_certificate)", field="certificate") from exc
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


@dataclass(frozen=True)
class PluginRegistration:
    """What vCenter is told about the plugin: where its manifest is and which certificate serves it."""

    manifest_url: str
    certificate_pem: str
    version: str
    key: str = PLUGIN_KEY
    company: str = COMPANY
    label: str = LABEL
    summary: str = SUMMARY
    admin_email: str = ""

    def __post_init__(self) -> None:
        parts = urlsplit(self.manifest_url)
        if parts.scheme != "https" or not parts.hostname or not parts.path.endswith("/plugin.json"):
            raise ValidationError(
                f"plugin manifest URL {self.manifest_url!r}: the vSphere Client loads remote plugins over "
                "HTTPS only; give https://HOST:PORT/.../plugin.json (the ZVM needs tls_certificate and tls_key)",
                field="manifest_url")
        if not self.version:
            raise ValidationError("the plugin version is empty", field="version")
        thumbprint(self.certificate_pem)  # refuses what is not a certificate, before vCenter sees it

    @property
    def server_url(self) -> str:
        parts = urlsplit(self.manifest_url)
        return f"{parts.scheme}://{parts.netloc}"

    def extension(self) -> vim.Extension:
        description = vim.Description(label=self.label, summary=self.summary)
        client = vim.ExtensionClientInfo(version=self.version, company=self.company, type=CLIENT_TYPE,
                                         url=self.manifest_url, description=description)
        server = vim.ExtensionServerInfo(url=self.server_url, company=self.company, type="HTTPS",
                                         description=description, adminEmail=[self.admin_email or "-"],
                                         serverThumbprint=thumbprint(self.certificate_pem),
                                         # vSphere 8 API; pyVmomi leaves it out for a vCenter that is older
                                         serverCertificate=self.certificate_pem)
        return vim.Extension(key=self.key, version=self.version, company=self.company,
                             description=description, client=[client], server=[server],
                             lastHeartbeatTime=datetime.now(UTC), shownInSolutionManager=False)


@dataclass(frozen=True)
class PluginStatus:
    """A registered plugin extension as vCenter holds it."""

    key: str
    version: str
    company: str
    manifest_url: str
    client_type: str
    server_url: str
    server_thumbprint: str

    def matches(self, reg: PluginRegistration) -> bool:
        return (self.version, self.company, self.manifest_url, self.client_type, self.server_url,
                self.server_thumbprint) == (reg.version, reg.company, reg.manifest_url, CLIENT_TYPE,
                                            reg.server_url, thumbprint(reg.certificate_pem))


def _manager(vc):
    em = vc.content.extensionManager
    if em is None:
        raise TransientError("this vCenter has no ExtensionManager: plugins cannot be registered with it")
    return em


def _call(what: str, fn, *args):
    try:
        return fn(*args)
    except vmodl.fault.InvalidArgument as exc:
        raise ValidationError(f"vCenter refused to {what} the plugin extension: {exc.msg or exc} "
                              f"(property {exc.invalidProperty or '?'})", field=exc.invalidProperty) from exc
    except vim.fault.NotFound as exc:
        raise NotFoundError(f"vCenter has no plugin extension to {what}: register it first",
                            code="PluginNotRegistered") from exc
    except (OSError, vmodl.MethodFault) as exc:
        raise TransientError(f"vCenter did not {what} the plugin extension: {exc}") from exc


def status(vc, key: str = PLUGIN_KEY) -> PluginStatus | None:
    ext = _call("find", _manager(vc).FindExtension, key)
    if ext is None:
        return None
    client = ext.client[0] if ext.client else None
    server = ext.server[0] if ext.server else None
    return PluginStatus(key=ext.key, version=ext.version or "", company=ext.company or "",
                        manifest_url=client.url if client else "", client_type=client.type if client else "",
                        server_url=server.url if server else "",
                        server_thumbprint=(server.serverThumbprint or "") if server else "")


def register(vc, reg: PluginRegistration) -> str:
    current = status(vc, reg.key)
    if current is None:
        _call("register", _manager(vc).RegisterExtension, reg.extension())
        return "registered"
    if current.matches(reg):
        return "unchanged"
    _call("update", _manager(vc).UpdateExtension, reg.extension())
    return "updated"


def update(vc, reg: PluginRegistration) -> str:
    if status(vc, reg.key) is None:
        raise NotFoundError(f"the plugin {reg.key} is not registered with this vCenter: run 'zvm plugin "
                            "register' first", code="PluginNotRegistered")
    return register(vc, reg)


def unregister(vc, key: str = PLUGIN_KEY) -> bool:
    if status(vc, key) is None:
        return False
    _call("unregister", _manager(vc).UnregisterExtension, key)
    return True
