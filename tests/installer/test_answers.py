"""Answer files and the parts of the installer that need no vCenter: the schema, writing and reading back
(TOML and YAML, secrets only when asked), the unit's hardening, and the plain refusal on Windows."""

from __future__ import annotations

import stat
import tomllib

import pytest

from installer import answers, unit
from installer.errors import AnswerError, UnsupportedError
from installer.install import preflight
from installer.layout import Layout

COLLECTED = {"vcenter.address": "https://vc.example/sdk", "vcenter.thumbprint": "ab" * 32,
             "vcenter.username": "administrator@vsphere.local", "vcenter.password": "vc-secret",
             "site.name": "Site \"A\"\nnew line", "network.api_port": 9443, "plugin.register": False,
             "database.kind": "postgresql", "database.url": "postgresql://u:db-secret@h/zvm",
             "admin.password": "admin-secret"}


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_written_answers_read_back_and_leave_secrets_out_unless_asked(tmp_path, suffix):
    plain = tmp_path / f"plain{suffix}"
    answers.write(plain, COLLECTED)
    text = plain.read_text()
    assert "secret" not in text
    assert answers.read(plain) == {k: v for k, v in COLLECTED.items()
                                   if k not in ("vcenter.password", "database.url", "admin.password")}
    full = tmp_path / f"full{suffix}"
    answers.write(full, COLLECTED, with_secrets=True)
    assert stat.S_IMODE(full.stat().st_mode) == 0o600
    assert answers.read(full) == COLLECTED


def test_the_schema_names_the_key_of_a_wrong_type_or_an_unknown_key(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[network]\napi_port = "9080"\n')
    with pytest.raises(AnswerError) as exc:
        answers.read(path)
    assert exc.value.key == "network.api_port" and "integer" in exc.value.message
    path.write_text('[vcenter]\nadress = "vc"\n')
    with pytest.raises(AnswerError) as exc:
        answers.read(path)
    assert exc.value.key == "vcenter.adress" and "vcenter.address" in exc.value.message
    path.write_text('[vcenter\n')
    with pytest.raises(AnswerError) as exc:
        answers.read(path)
    assert exc.value.key == "--answers" and "not valid TOML" in exc.value.message


def test_the_unit_is_hardened_and_binds_low_ports_only_with_the_one_capability():
    high = unit.directives(unit.render(9080, 9081))
    for key, value in {"User": "zvm", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes",
                       "PrivateDevices": "yes", "StateDirectory": "zvm", "StateDirectoryMode": "0700",
                       "Restart": "on-failure", "CapabilityBoundingSet": "", "UMask": "0077"}.items():
        assert high[key] == value, key
    low = unit.directives(unit.render(443, 9081))
    assert low["CapabilityBoundingSet"] == low["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    words = unit.command_line(unit.render(9080, 9081), {"CONFIGURATION_DIRECTORY": "/etc/zvm",
                                                         "STATE_DIRECTORY": "/var/lib/zvm"})
    assert words[-8:] == ["--config", "/etc/zvm/zvm.toml", "--data-dir", "/var/lib/zvm", "--tls-certificate",
                          "/etc/zvm/tls/zvm.pem", "--tls-key", "/etc/zvm/tls/zvm.key"]
    assert "serve" in words


def test_windows_is_refused_plainly_before_any_question(tmp_path):
    with pytest.raises(UnsupportedError) as exc:
        preflight(Layout(tmp_path), system="Windows")
    assert "Windows is not supported yet" in str(exc.value) and "zvm serve" in str(exc.value)
    assert exc.value.exit_code == 3


def test_the_record_holds_no_secret(tmp_path):
    from installer.content import record_text

    text = record_text(COLLECTED, "AB")
    assert "vc-secret" not in text and "db-secret" not in text and "admin-secret" not in text
    assert tomllib.loads(text)["answers"]["network"]["api_port"] == 9443
