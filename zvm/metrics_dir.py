"""Where the API workers of ``zvm serve`` keep their metric figures (prometheus_client's multiprocess mode).

prometheus_client reads ``PROMETHEUS_MULTIPROC_DIR`` once, when first imported: the gunicorn master sets it
here, before any worker starts (and without importing prometheus_client itself, whose state the workers
would inherit).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir(data_dir: Path) -> Path:
    return Path(data_dir) / "metrics"


def prepare_multiprocess(data_dir: Path) -> Path:
    """An empty directory for the workers' figures, named in the environment they inherit."""
    path = multiprocess_dir(data_dir)
    shutil.rmtree(path, ignore_errors=True)  # a former run's figures: its workers are gone
    path.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
