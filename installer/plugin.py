"""The installer's side of the vSphere Client plugin registration: zvm/plugin.py and
zvm/vcenter/extension.py do the work (the manifest at https://<public address>:<port>/plugin/plugin.json,
the HTTPS certificate's thumbprint); this module gives them the installed ZVM's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from zvm.config import ZvmConfig


def zvm_config(answers: dict[str, Any], certificate: Path, vcenter_password: str) -> ZvmConfig:
    return ZvmConfig(public_address=answers["network.public_address"], port=answers["network.api_port"],
                     tls_certificate=str(certificate), vcenter_url=answers["vcenter.address"],
                     vcenter_username=answers["vcenter.username"], vcenter_password=vcenter_password,
                     vcenter_verify=answers.get("vcenter.ca_bundle") or
                     ("true" if answers["vcenter.address"].startswith("https:") else "false"),
                     vcenter_thumbprint=answers.get("vcenter.thumbprint", ""))


def apply(action: str, config: ZvmConfig) -> dict:
    """register | update | unregister | status -> {"Result": ..., "ManifestUrl": ..., ...}"""
    from zvm.plugin import apply as plugin_apply

    return plugin_apply(action, config)
