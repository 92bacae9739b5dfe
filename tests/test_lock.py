"""The lock (requirements/*.txt) covers pyproject.toml, pins with hashes, and is what is installed."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s\\;]+)")


def _pins(path: Path) -> dict[str, str]:
    """Name -> version of every requirement in a pip-compile lock; each must carry a hash."""
    pins: dict[str, str] = {}
    text = path.read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = PIN.match(block)
        if not m:
            continue
        assert "--hash=sha256:" in block, f"{path.name}: {m.group(1)} has no hash"
        pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def _declared(extra: str | None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    if extra:
        reqs += [Requirement(r) for r in project["optional-dependencies"][extra]]
    return reqs


def test_every_declared_dependency_is_locked_within_its_range() -> None:
    for lock, extra in (("test.txt", "test"), ("product.txt", None)):
        pins = _pins(ROOT / "requirements" / lock)
        for req in _declared(extra):
            name = canonicalize_name(req.name)
            assert name in pins, f"{req.name} is in pyproject.toml but not in {lock}: run ./run lock"
            assert req.specifier.contains(pins[name], prereleases=True), (
                f"{lock} pins {req.name}=={pins[name]}, outside {req.specifier}: run ./run lock"
            )


def test_product_lock_agrees_with_the_test_lock() -> None:
    test = _pins(ROOT / "requirements" / "test.txt")
    product = _pins(ROOT / "requirements" / "product.txt")
    assert set(product) <= set(test)
    assert {n: v for n, v in test.items() if n in product} == product


def test_the_environment_is_the_lock() -> None:
    pins = _pins(ROOT / "requirements" / "test.txt")
    installed = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if canonicalize_name(d.metadata["Name"]) not in {"zvr", "pip"}
    }
    assert installed == {n: v for n, v in pins.items() if n in installed}
    assert set(installed) == set(pins), f"not installed: {sorted(set(pins) - set(installed))}"
