"""Fixtures of the installer tests: a vCenter that speaks https (vcsim -tls), a staging tree to install
into (``--root``), the installer run as a command, and the Python environment the service runs from.

The service runs as the ``zvm`` user the installer creates, so its Python environment must be readable by
that user. On a Debian machine ./run's .venv is (its interpreter is /usr/bin/python3); where .venv's
interpreter sits in a directory closed to others (a pyenv under /root), ``service_python`` is a venv of
Debian's own python3 of the same version whose site-packages are .venv's (copies of them and of the
checkout when those are closed to others too): the same packages, an interpreter the zvm user can run.
The installer itself refuses an environment its user cannot run.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from installer.layout import Layout
from installer.service import Direct
from installer.unit import blocked_for_others
from tests.zvm.pg import free_port
from zvm.lab.vcsim import Vcsim, VcsimSpec

REPO = Path(__file__).resolve().parents[2]


def service_environment(force_copy: bool = False) -> tuple[Path, Path | None]:
    """(a Python the zvm user can run with .venv's packages, the directory to remove afterwards or None).

    .venv as it is when the zvm user can run its interpreter and read its packages and the checkout;
    otherwise a venv of Debian's python3 of the same version (in /tmp, readable) over .venv's packages, and,
    when those or the checkout are closed to other users (a checkout under /root), over copies of them."""
    venv_site = next(p for p in map(Path, sys.path) if p.name == "site-packages" and str(p).startswith(sys.prefix))
    readable = force_copy is False and all(
        blocked_for_others(path, need=mode) is None
        for path, mode in ((REPO / "zvm" / "__init__.py", 0o004), (REPO, 0o005), (venv_site, 0o005)))
    if readable and blocked_for_others(Path(sys.executable)) is None:
        return Path(sys.executable), None
    system = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not system.is_file():
        raise pytest.UsageError(f"{sys.executable} is closed to other users and there is no {system} to run the "
                                "service with: make .venv from Debian's python3 (apt-get install python3-venv)")
    env = Path(tempfile.mkdtemp(prefix="zvm-service-env-"))
    env.chmod(0o755)
    subprocess.run([str(system), "-m", "venv", "--without-pip", str(env)], check=True)
    site = env / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    lines = []
    if not readable:
        source, packages = env / "src", env / "venv-site-packages"
        shutil.copytree(REPO, source, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".venv", ".cache", "__pycache__", "node_modules"))
        shutil.copytree(venv_site, packages, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(["chmod", "-R", "go+rX", str(env)], check=True)
        venv_site = packages
        lines.append(f"import sys; sys.path.insert(0, {str(source)!r})")
    lines.append(f"import site; site.addsitedir({str(venv_site)!r})")
    (site / "zvr-venv.pth").write_text("\n".join(lines) + "\n")
    return env / "bin" / "python", env


@pytest.fixture(scope="session")
def service_python() -> Iterator[Path]:
    python, made = service_environment()
    yield python
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="module")
def https_vcenter(tmp_path_factory) -> Iterator[Vcsim]:
    sim = Vcsim.start("installer", tmp_path_factory.mktemp("vcsim-installer"),
                      VcsimSpec(tls=True, hosts_per_cluster=1, vms_per_pool=1))
    yield sim
    sim.stop()


def vcenter_fingerprint(sim: Vcsim) -> str:
    import socket
    import ssl

    host, port = sim.host_port.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(raw) as tls:
        return hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()


@dataclass
class Stage:
    """A staging tree, readable by the zvm user (pytest's own temporary directories are closed to it)."""

    root: Path
    python: Path

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def path(self, p: str) -> Path:
        return self.layout.host(p)

    def install(self, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.python), "-m", "installer.wizard", "--root", str(self.root), *args],
                              capture_output=True, text=True, cwd="/", timeout=timeout,
                              env={**os.environ, **(env or {})})

    def install_answers(self, text: str, directory: Path, *args: str) -> tuple[subprocess.CompletedProcess, int]:
        """Install silently from the answer file ``text``; returns the run and the API port it printed."""
        answers = directory / "answers.toml"
        answers.write_text(text)
        out = self.install("--answers", str(answers), *args)
        assert out.returncode == 0, out.stdout + out.stderr
        return out, int(re.search(r"https://127\.0\.0\.1:(\d+)/", out.stdout).group(1))

    def session(self, port: int, password: str) -> dict:
        """Log in as admin over HTTPS, trusting only the installed certificate; the session header."""
        import requests

        resp = requests.post(f"https://127.0.0.1:{port}/v1/session/add", auth=("admin", password),
                             verify=str(self.path("/etc/zvm/tls/zvm.pem")), timeout=30)
        assert resp.status_code == 200, resp.text
        return {"x-zerto-session": resp.headers["x-zerto-session"]}

    def changed(self) -> list[str]:
        """Everything in the tree (nothing, for a run that installed nothing)."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*"))


@pytest.fixture
def stage(service_python) -> Iterator[Stage]:
    root = Path(tempfile.mkdtemp(prefix="zvm-stage-"))
    root.chmod(0o755)
    yield Stage(root, service_python)
    Direct(Layout(root)).stop()  # a test that failed half way must not leave its ZVM running
    shutil.rmtree(root, ignore_errors=True)


def answers_toml(sim: Vcsim, api_port: int | None = None, peer_port: int | None = None, **sections) -> str:
    """A complete answer file for ``sim``; ``sections`` override: site={"name": ...}, or None to drop a key."""
    base = {
        "vcenter": {"address": sim.url, "thumbprint": vcenter_fingerprint(sim), "username": sim.username,
                    "password": sim.password},
        "site": {"name": "Site A", "location": "Lab, rack 4", "contact": "ops@example.com"},
        "network": {"public_address": "127.0.0.1", "listen_address": "127.0.0.1",
                    "api_port": api_port or free_port(), "peer_port": peer_port or free_port()},
        "admin": {"password": "Adm1n-pass-1"},
    }
    for section, values in sections.items():
        table = base.setdefault(section, {})
        for key, value in values.items():
            if value is None:
                table.pop(key, None)
            else:
                table[key] = value
    from installer.answers import toml_value

    return "".join(f"[{s}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in t.items()) for s, t in base.items())


def printed_fingerprint(output: str) -> str:
    found = re.search(r"HTTPS certificate:\s+SHA-256 ([0-9A-F:]{95})", output)
    assert found, output
    return found.group(1).replace(":", "").lower()
