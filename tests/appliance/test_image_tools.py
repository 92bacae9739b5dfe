"""The reusable image tooling's small parts: which apt sources an image is made from, the cache keyed by
inputs, and the OVF environment's ISO."""

from __future__ import annotations

import subprocess
import threading

import pytest

from ovf.debian_image import ImageError, cached, debian_sources, input_hash
from ovf.qemu import iso


def test_only_the_debian_repositories_of_this_machine_are_used(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\n# a snapshot\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n")
    (d / "node.sources").write_text("Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
                                    "Components: main\n")
    (d / "old.list").write_text("deb http://security.debian.org/debian-security bookworm-security main\n"
                                "deb [arch=amd64] https://packages.cloud.google.com/apt cloud-sdk main\n")
    text = debian_sources((d,))
    assert text.count("Types: deb\n") == 2
    assert "Suites: bookworm bookworm-updates" in text and "debian-archive-keyring" in text
    assert "URIs: http://security.debian.org/debian-security\nSuites: bookworm-security" in text
    assert "nodesource" not in text and "google" not in text and "deb-src" not in text
    (d / "debian.sources").unlink()
    (d / "old.list").unlink()
    with pytest.raises(ImageError, match="no Debian repository"):
        debian_sources((d,))


def test_the_cache_makes_each_key_once_and_never_shows_half_a_build(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("1")
    key = input_hash(src, "x")
    (src / "a").write_text("2")
    assert input_hash(src, "x") != key and input_hash(src, "y") != input_hash(src, "x")
    made = []

    def make(d):
        made.append(d)
        (d / "out").write_text("built")

    results = []
    threads = [threading.Thread(target=lambda: results.append(cached(tmp_path / "cache", key, make)))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(set(results)) == 1 and (results[0] / "out").read_text() == "built"

    def fail(d):
        (d / "out").write_text("half")
        raise RuntimeError("the build broke")

    with pytest.raises(RuntimeError):
        cached(tmp_path / "cache", "other", fail)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [".lock", key]


def test_the_environment_iso_has_the_label_and_the_file(tmp_path):
    out = iso({"ovf-env.xml": "<Environment/>"}, tmp_path / "env.iso", "OVF ENV")
    listing = subprocess.run(["xorriso", "-indev", str(out), "-pvd_info", "-ls", "/"], capture_output=True,
                             text=True, check=True)
    assert "Volume Id    : OVF ENV" in listing.stdout
    assert "ovf-env.xml" in listing.stdout
    extracted = tmp_path / "x.xml"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(out), "-extract", "/ovf-env.xml", str(extracted)],
                   capture_output=True, check=True)
    assert extracted.read_text() == "<Environment/>"
