"""The appliance's first-boot unit off the appliance (``configure=False``: no network or firewall changes),
against an in-process ZVM serving its REST API over HTTP and a vcsim it installed the VRA into: a wrong
token is named and retried with backoff, re-reading the environment each time; with the right one it
enrolls with the existing enrollment and writes `vra serve`'s arguments, without the token."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from tests.zvm.test_vra_enrollment import install, site_a  # noqa: F401
from vra_appliance.appliance import ovfenv
from vra_appliance.appliance.firstboot import BACKOFF_MAX_S, FirstBoot


def test_a_wrong_token_is_named_and_retried_with_backoff_until_the_environment_is_fixed(site_a, tmp_path, caplog):  # noqa: F811
    vra, props = install(site_a, 0, "127.0.0.1")
    token = props["enroll_token"]
    env = {**props, "zvm_address": "127.0.0.1", "zvm_port": str(urlsplit(site_a.url).port)}
    texts = iter([ovfenv.render({**env, "enroll_token": "x" + token})] * 7 + [ovfenv.render(env)])
    fb = FirstBoot(state_dir=tmp_path / "state", run_dir=tmp_path / "run", configure=False,
                   read_env=lambda: (next(texts), "iso"), consoles=())
    delays: list[float] = []
    with caplog.at_level(logging.INFO, logger="zvr-firstboot"):
        assert fb.run(sleep=delays.append) == 0
    assert delays == [2, 4, 8, 16, 32, BACKOFF_MAX_S, BACKOFF_MAX_S]
    errors = [r.getMessage() for r in caplog.records if "ERROR" in r.getMessage()]
    assert len(errors) == 7
    assert all("OVF property 'enroll_token': the ZVM refused the enrollment (401 EnrollmentTokenInvalid" in e
               for e in errors), errors
    assert token not in caplog.text
    assert (tmp_path / "state" / "tls" / "cert.pem").exists()
    assert fb.status.enrollment == "enrolled" and fb.status.last_error == ""
    assert "Enrollment:  enrolled" in (tmp_path / "run" / "issue").read_text()
    args = (tmp_path / "run" / "vra.env").read_text()
    assert f"--vra-id {vra.identifier}" in args and token not in args


def test_an_unusable_environment_configures_nothing_and_says_which_property(tmp_path):
    bad = ovfenv.render({"zvm_address": "10.0.2.2", "vra_id": "v1", "zvm_ca_fingerprint": "ab" * 32,
                         "ip_mode": "static", "ip_address": "10.0.2.15", "netmask": "255.0.255.0"})
    fb = FirstBoot(state_dir=tmp_path / "state", run_dir=tmp_path / "run", configure=False,
                   read_env=lambda: (bad, "iso"), consoles=())
    assert not fb.attempt()
    assert fb.status.last_error.startswith("OVF property 'netmask':")
    assert fb.status.enrollment == "waiting for a valid OVF environment"
    assert not (tmp_path / "state").exists() and not (tmp_path / "run" / "vra.env").exists()
