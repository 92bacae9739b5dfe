"""The VRA appliance package the ZVM deploys: the OVF descriptor and the appliance's disk that ovf/build.py
makes (a Debian VM running `vra serve`; built once per set of inputs and cached, see that module).

The package is linked into the data directory (``DATA_DIR/vra-ovf/``), so a read-only installation works.
``ovf_dir`` in the configuration points elsewhere (a prebuilt appliance: vra.ovf with its disk beside it,
and no build.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from zvm.errors import ConfigError

SOURCE = Path(__file__).resolve().parents[1] / "ovf"


def ensure_package(data_dir: Path, source: Path | None = None) -> Path:
    """The path of a ready vra.ovf (its disk next to it)."""
    source = source or SOURCE
    build_script = source / "build.py"
    if not (source / "vra.ovf").exists():
        raise ConfigError(f"the VRA package is missing: no {source / 'vra.ovf'}")
    if not build_script.exists():  # a prebuilt package: use it as is
        return source / "vra.ovf"
    spec = importlib.util.spec_from_file_location("zvr_ovf_build", build_script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.build(Path(data_dir) / "vra-ovf") / "vra.ovf"
    except module.ImageError as exc:
        raise ConfigError(f"building the VRA appliance failed: {exc}") from None
