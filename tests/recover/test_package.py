"""The recover package is a pure core, and what it hands the NBD server is an ExportBackend."""

from __future__ import annotations

import subprocess
import sys

from vra_appliance.iofilter.nbd_backend import ExportBackend

from .helpers import Site


def test_recover_imports_no_grpc_flask_peewee_or_pyvmomi():
    code = (
        "import sys, vra_appliance.recover, vra_appliance.recover.vpg, vra_appliance.recover.filejournal\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'flask', 'peewee', 'pyVmomi'))\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == ""


def test_point_in_time_image_is_an_export_backend(tmp_path):
    site = Site(tmp_path, "memory", {"v": 4096})
    site.write("v", 0, b"abc")
    cid = site.checkpoint()
    site.flush()
    image = site.vpg.image("v", cid)
    assert isinstance(image, ExportBackend)
    image.close()
    site.close()
