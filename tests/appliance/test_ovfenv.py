"""The appliance's OVF environment, network, firewall and banner texts, off the appliance: every bad property
is named, the firewall opens 4005 alone unless SSH or NBD are asked for."""

from __future__ import annotations

import pytest

from vra_appliance.appliance import banner, ovfenv, system
from vra_appliance.appliance.firstboot import failing_property, vra_args

FP = "ab" * 32
GOOD = {"zvm_address": "10.0.2.2", "zvm_port": "9080", "zvm_scheme": "https", "vra_id": "3f2a-vra",
        "enroll_token": "tok-123", "zvm_ca_fingerprint": FP, "ip_mode": "dhcp"}


def parse(**changes) -> ovfenv.Settings:
    props = {**GOOD, **changes}
    return ovfenv.parse(ovfenv.render({k: v for k, v in props.items() if v is not None}))


def test_a_good_environment_round_trips():
    s = parse()
    assert (s.zvm_url, s.vra_id, s.enroll_token, s.ip_mode, s.control_port) == \
        ("https://10.0.2.2:9080", "3f2a-vra", "tok-123", "dhcp", 4005)
    assert s.hostname == "zvra-3f2a-vra"
    assert "tok-123" not in str(s.redacted())
    s = parse(ip_mode="static", ip_address="10.0.2.15", netmask="255.255.255.0", gateway="10.0.2.2",
              dns="10.0.2.3, 1.1.1.1", zvm_ca_fingerprint=":".join(["AB"] * 32), hostname="vra-a")
    assert (s.ip_address, s.prefix, s.gateway, s.dns, s.zvm_ca_fingerprint, s.hostname) == \
        ("10.0.2.15", 24, "10.0.2.2", ("10.0.2.3", "1.1.1.1"), FP, "vra-a")
    assert parse(ip_mode="static", ip_address="10.0.2.15", prefix="20").prefix == 20
    assert parse(zvm_address="zvm.example.com", zvm_port="").zvm_url == "https://zvm.example.com:9080"


@pytest.mark.parametrize("changes, prop", [
    ({"zvm_address": None}, "zvm_address"),
    ({"zvm_address": "not a host!"}, "zvm_address"),
    ({"zvm_port": "99999"}, "zvm_port"),
    ({"zvm_scheme": "ftp"}, "zvm_scheme"),
    ({"vra_id": ""}, "vra_id"),
    ({"vra_id": "a b"}, "vra_id"),
    ({"zvm_ca_fingerprint": "12ab"}, "zvm_ca_fingerprint"),
    ({"enroll_token": "a b"}, "enroll_token"),
    ({"ip_mode": "bootp"}, "ip_mode"),
    ({"ip_mode": "static"}, "ip_address"),
    ({"ip_mode": "static", "ip_address": "10.0.2.300", "netmask": "24"}, "ip_address"),
    ({"ip_mode": "static", "ip_address": "10.0.2.15"}, "netmask"),
    ({"ip_mode": "static", "ip_address": "10.0.2.15", "netmask": "255.0.255.0"}, "netmask"),
    ({"ip_mode": "static", "ip_address": "10.0.2.15", "netmask": "24", "gateway": "gw"}, "gateway"),
    ({"dns": "1.1.1.1,dns.example"}, "dns"),
    ({"hostname": "-bad-"}, "hostname"),
    ({"ssh_public_key": "not a key"}, "ssh_public_key"),
    ({"nbd_port": "x"}, "nbd_port"),
])
def test_each_bad_property_is_named(changes, prop):
    with pytest.raises(ovfenv.EnvError) as err:
        parse(**changes)
    assert err.value.prop == prop
    assert str(err.value).startswith(f"OVF property '{prop}':")


def test_a_garbled_document_says_so():
    with pytest.raises(ovfenv.EnvError, match="not valid XML") as err:
        ovfenv.parse("<Environment><PropertySection>")
    assert err.value.prop is None
    with pytest.raises(ovfenv.EnvError, match="not an OVF environment"):
        ovfenv.parse("<foo/>")


def test_the_firewall_opens_4005_alone_by_default():
    rules = system.ruleset(parse())
    assert "policy drop" in rules and "tcp dport { 4005 } accept" in rules
    assert system.ruleset(None) == rules  # the image's default is the same
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx1 test@host"
    assert "tcp dport { 22, 4005, 10809 } accept" in system.ruleset(parse(ssh_public_key=key, nbd_port="10809"))


def test_network_units():
    assert "DHCP=yes" in system.network_unit(parse())
    unit = system.network_unit(parse(ip_mode="static", ip_address="10.0.2.15", netmask="255.255.255.0",
                                     gateway="10.0.2.2", dns="10.0.2.3"))
    assert "Address=10.0.2.15/24" in unit and "Gateway=10.0.2.2" in unit and "DNS=10.0.2.3" in unit
    assert "DHCP" not in unit


def test_vra_serve_arguments_have_no_token():
    args = vra_args(parse(nbd_port="10809"), banner.RUN_DIR)
    assert "tok-123" not in " ".join(args)
    assert args[args.index("--enroll-url") + 1] == "https://10.0.2.2:9080"
    assert args[args.index("--nbd-tcp") + 1] == "0.0.0.0:10809"


def test_enrollment_failures_name_the_property():
    assert failing_property("the ZVM refused the enrollment (401 EnrollmentTokenInvalid: ...)") == "enroll_token"
    assert failing_property("cannot reach the ZVM at https://x:9080/v1 (refused): check --enroll-url") == "zvm_address"
    assert failing_property("the CA the ZVM sent is not the one this VRA was installed with") == "zvm_ca_fingerprint"
    assert failing_property("the certificate the ZVM sent is not for this VRA's id and key") == "vra_id"


def test_banner(tmp_path):
    st = banner.Status(vra_id="v1", addresses=["10.0.2.15/24"], ip_mode="static", enrollment="enrolling",
                       attempt=3, retry_in_s=8, last_error="OVF property 'enroll_token': refused")
    (tmp_path / "console").write_bytes(b"")  # a console device exists; the banner does not create one
    banner.show(st, tmp_path, consoles=(str(tmp_path / "console"),))
    text = (tmp_path / "issue").read_text()
    assert "10.0.2.15/24 (static)" in text and "attempt 3, next in 8 s" in text
    assert "OVF property 'enroll_token': refused" in text
    assert (tmp_path / "console").read_bytes().replace(b"\r\n", b"\n").strip() == text.strip().encode()
