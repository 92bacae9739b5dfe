"""``zvm plugin register | update | unregister | status``: the vSphere Client plugin's registration.

The ZVM's configuration (``--config``, ZVM_* environment, options) says which vCenter (vcenter_url,
vcenter_username, ZVM_VCENTER_PASSWORD, vcenter_verify / vcenter_thumbprint) and which HTTPS certificate the
ZVM serves on 9080 (tls_certificate). The manifest URL is ``https://<public_address>:<port>/plugin/plugin.json``
unless ``--manifest-url`` says otherwise. Every command is idempotent and prints one line (or ``--json``);
the installer runs ``register`` after installing and ``unregister`` when it uninstalls.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from zvm import __version__
from zvm.config import ZvmConfig, load_config
from zvm.errors import ConfigError

MANIFEST_PATH = "/plugin/plugin.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "plugin", help="register the vSphere Client plugin with vCenter (register|update|unregister|status)",
        description="Register, update, unregister the ZVM's vSphere Client remote plugin with the site's "
                    "vCenter (ExtensionManager), or show its registration. Idempotent.")
    p.add_argument("action", choices=["register", "update", "unregister", "status"])
    p.add_argument("--config", metavar="FILE", help="the ZVM's TOML configuration (see docs/OPERATIONS.md)")
    p.add_argument("--vcenter-url", help="the site's vCenter, e.g. https://vc.example/sdk")
    p.add_argument("--vcenter-username", help="vCenter user (password: ZVM_VCENTER_PASSWORD)")
    p.add_argument("--vcenter-verify", help="true, false (labs only) or a CA bundle file")
    p.add_argument("--vcenter-thumbprint", help="SHA-256 thumbprint pinning vCenter's certificate")
    p.add_argument("--tls-certificate", metavar="PEM", help="the ZVM's HTTPS certificate")
    p.add_argument("--public-address", help="host name or address the vSphere Client reaches the ZVM at")
    p.add_argument("--port", type=int, help="the ZVM's HTTPS port (default 9080)")
    p.add_argument("--manifest-url", help="full HTTPS URL of plugin.json (default: from address and port)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run)


def manifest_url(config: ZvmConfig) -> str:
    return f"https://{config.address}:{config.port}{MANIFEST_PATH}"


def registration(config: ZvmConfig, url: str | None = None):
    from zvm.vcenter.extension import PluginRegistration

    if not config.tls_certificate:
        raise ConfigError("the vSphere Client loads plugins over HTTPS only: set tls_certificate and tls_key "
                          "(the certificate the ZVM serves on its port) before registering the plugin")
    try:
        pem = Path(config.tls_certificate).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read the HTTPS certificate {config.tls_certificate}: {exc.strerror}") from exc
    return PluginRegistration(manifest_url=url or manifest_url(config), certificate_pem=pem, version=__version__)


def vcenter_config(config: ZvmConfig):
    from zvm.vcenter import VCenterConfig

    if not config.vcenter_url or not config.vcenter_username:
        raise ConfigError("say which vCenter to register with: vcenter_url and vcenter_username (options "
                          "--vcenter-url/--vcenter-username or the configuration), password in "
                          "ZVM_VCENTER_PASSWORD")
    verify: bool | str = {"true": True, "false": False}.get(config.vcenter_verify.lower(), config.vcenter_verify)
    return VCenterConfig(url=config.vcenter_url, username=config.vcenter_username,
                         password=config.vcenter_password, verify=verify,
                         thumbprint=config.vcenter_thumbprint or None)


def apply(action: str, config: ZvmConfig, url: str | None = None) -> dict:
    """Run one action against the configured vCenter; returns what to print."""
    from zvm.vcenter import VCenter
    from zvm.vcenter import extension as ext

    reg = registration(config, url) if action in ("register", "update") else None
    with VCenter(vcenter_config(config)) as vc:
        if action == "register":
            result = ext.register(vc, reg)
        elif action == "update":
            result = ext.update(vc, reg)
        elif action == "unregister":
            result = "unregistered" if ext.unregister(vc) else "not registered"
        else:
            result = "registered" if ext.status(vc) else "not registered"
        found = ext.status(vc)
    out = {"Result": result, "Key": ext.PLUGIN_KEY}
    if found:
        out.update(Version=found.version, ManifestUrl=found.manifest_url, ServerThumbprint=found.server_thumbprint)
    return out


def run(args: argparse.Namespace) -> int:
    keys = ["vcenter_url", "vcenter_username", "vcenter_verify", "vcenter_thumbprint", "public_address", "port"]
    config = load_config(args.config, **{k: getattr(args, k) for k in keys})
    if args.tls_certificate:  # registering needs the certificate, not its key: not load_config's pair check
        config = dataclasses.replace(config, tls_certificate=args.tls_certificate)
    out = apply(args.action, config, args.manifest_url)
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        detail = f" (version {out['Version']}, {out['ManifestUrl']})" if "Version" in out else ""
        print(f"plugin {out['Key']}: {out['Result']}{detail}")
    return 0
