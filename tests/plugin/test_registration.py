"""The plugin's registration with vCenter (zvm.vcenter.extension and `zvm plugin`) against vcsim's
ExtensionManager: what vCenter holds after register, update, unregister; idempotence; refusals."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from zvm import tls
from zvm.config import load_config
from zvm.errors import ConfigError, NotFoundError, ValidationError
from zvm.plugin import registration
from zvm.vcenter import VCenter
from zvm.vcenter import extension as ext


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("plugin-certs")
    for name in ("a", "b"):
        tls.self_signed("zvm.example", ["zvm.example", "127.0.0.1"], d / f"{name}.pem", d / f"{name}.key")
    return d


def _reg(certs, name="a", version="1.0.0", url="https://zvm.example:9080/plugin/plugin.json"):
    return ext.PluginRegistration(manifest_url=url, certificate_pem=(certs / f"{name}.pem").read_text(),
                                  version=version)


def test_register_update_unregister_are_idempotent(vcsim_site, vcenter_config, certs):
    with VCenter(vcenter_config(vcsim_site)) as vc:
        ext.unregister(vc)
        assert ext.status(vc) is None
        assert ext.register(vc, _reg(certs)) == "registered"
        assert ext.register(vc, _reg(certs)) == "unchanged"
        found = vc.content.extensionManager.FindExtension(ext.PLUGIN_KEY)
        assert found.client[0].type == "vsphere-client-remote"
        assert found.client[0].url == "https://zvm.example:9080/plugin/plugin.json"
        assert found.server[0].url == "https://zvm.example:9080"
        assert found.server[0].serverThumbprint == ext.thumbprint((certs / "a.pem").read_text())
        assert len(found.server[0].serverThumbprint.split(":")) == 32  # SHA-256, not SHA-1
        assert found.company == "ZVR" and found.description.label

        # A new certificate or version is an update of the same key.
        assert ext.register(vc, _reg(certs, "b")) == "updated"
        assert ext.status(vc).server_thumbprint == ext.thumbprint((certs / "b.pem").read_text())
        assert ext.update(vc, _reg(certs, "b", version="1.1.0")) == "updated"
        assert ext.status(vc).version == "1.1.0"
        assert [e.key for e in vc.content.extensionManager.extensionList].count(ext.PLUGIN_KEY) == 1

        assert ext.unregister(vc) is True
        assert ext.unregister(vc) is False
        assert ext.status(vc) is None
        with pytest.raises(NotFoundError, match="register it first|not registered"):
            ext.update(vc, _reg(certs))


def test_bad_registration_is_refused_before_vcenter(certs):
    with pytest.raises(ValidationError, match="HTTPS") as err:
        _reg(certs, url="http://zvm.example:9080/plugin/plugin.json")
    assert err.value.field == "manifest_url"
    with pytest.raises(ValidationError, match="PEM certificate"):
        ext.PluginRegistration(manifest_url="https://zvm.example/plugin/plugin.json", certificate_pem="junk",
                               version="1")


def _zvm(*args, env):
    return subprocess.run([sys.executable, "-m", "zvm.cli", "plugin", *args], env=env, capture_output=True,
                          text=True, timeout=60)


def test_cli_register_status_unregister(vcsim_site, certs):
    env = {**os.environ, "ZVM_VCENTER_PASSWORD": vcsim_site.password}
    common = ["--vcenter-url", vcsim_site.url, "--vcenter-username", vcsim_site.username,
              "--public-address", "zvm.example", "--tls-certificate", str(certs / "a.pem")]
    out = _zvm("register", *common, "--json", env=env)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert got["Result"] == "registered"
    assert got["ManifestUrl"] == "https://zvm.example:9080/plugin/plugin.json"
    assert got["ServerThumbprint"] == ext.thumbprint((certs / "a.pem").read_text())
    assert vcsim_site.password not in out.stdout + out.stderr
    again = _zvm("register", *common, env=env)
    assert again.returncode == 0 and "unchanged" in again.stdout
    assert "plugin com.zvr.dr.plugin: registered" in _zvm("status", *common, env=env).stdout
    assert "unregistered" in _zvm("unregister", *common, env=env).stdout
    assert "not registered" in _zvm("unregister", *common, env=env).stdout
    assert "not registered" in _zvm("status", *common, env=env).stdout


def test_cli_says_what_is_missing(vcsim_site, certs):
    env = {**os.environ, "ZVM_VCENTER_PASSWORD": vcsim_site.password}
    out = _zvm("register", "--vcenter-url", vcsim_site.url, "--vcenter-username", vcsim_site.username, env=env)
    assert out.returncode == 1
    assert "tls_certificate" in out.stderr and "Traceback" not in out.stderr
    out = _zvm("status", env={k: v for k, v in env.items() if not k.startswith("ZVM_VCENTER")})
    assert out.returncode == 1 and "vcenter_url" in out.stderr
    with pytest.raises(ConfigError, match="cannot read"):
        registration(dataclasses.replace(load_config(env={}), tls_certificate=str(certs / "missing.pem")))
