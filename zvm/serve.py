"""``zvm serve``: the ZVM service, run by gunicorn with nothing else installed.

The parent process loads and checks the configuration, brings the database schema up to date and creates
the first administrator (printing a generated password once, when none was given), then hands over to
gunicorn: ``workers`` processes of ``threads`` threads serve the API (HTTPS when a certificate is set).
Exactly one worker at a time runs the background loops (tasks, inventory, monitoring, the peer service):
the one holding the data directory's ``engine.lock``; when it exits, another takes over.
"""

from __future__ import annotations

import argparse
import logging
import os

from zvm.config import ZvmConfig, load_config
from zvm.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the ZVM service (REST API on 9080, peer service on 9081)",
        description=(
            "Run the ZVM service under gunicorn. With only --data-dir it keeps everything there: an embedded "
            "SQLite database, the key that encrypts stored credentials, certificates. Options override the "
            "configuration file, which overrides ZVM_* environment variables' defaults; secrets are best "
            "given by environment (ZVM_ADMIN_PASSWORD, ZVM_VCENTER_PASSWORD)."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (see docs/OPERATIONS.md)")
    p.add_argument("--data-dir", metavar="DIR", help="state directory (database, keys, certificates)")
    p.add_argument("--host", help="address to listen on")
    p.add_argument("--port", type=int, help="REST API port (default 9080)")
    p.add_argument("--peer-port", type=int, help="peer service port (default 9081)")
    p.add_argument("--public-address", help="address peers and VRAs use to reach this ZVM")
    p.add_argument("--database-url", help="postgresql://user:password@host:port/name (default: SQLite)")
    p.add_argument("--site-name", help="this site's name")
    p.add_argument("--admin-password", help="the admin password (default: generated and shown once)")
    p.add_argument("--tls-certificate", metavar="PEM", help="certificate for HTTPS")
    p.add_argument("--tls-key", metavar="PEM", help="private key for HTTPS")
    p.add_argument("--vcenter-url", help="the site's vCenter, e.g. https://vc.example/sdk")
    p.add_argument("--vcenter-username", help="vCenter user")
    p.add_argument("--vcenter-verify", help="true, false (labs only) or a CA bundle file")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, help="threads per worker")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace, env=None) -> ZvmConfig:
    keys = ["data_dir", "host", "port", "peer_port", "public_address", "database_url", "site_name",
            "admin_password", "tls_certificate", "tls_key", "vcenter_url", "vcenter_username", "vcenter_verify",
            "workers", "threads"]
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    config = load_config(args.config, env=env, **overrides)
    if not args.data_dir and not args.config and "ZVM_DATA_DIR" not in (env or os.environ):
        raise ConfigError("say where the ZVM keeps its state: --data-dir DIR (or data_dir in --config)")
    return config


def run(args: argparse.Namespace) -> int:
    from zvm.service import Zvm

    config = config_from_args(args)
    zvm = Zvm(config).open()
    if zvm.generated_admin_password:
        print(f"zvm: created user {config.admin_username!r} with password {zvm.generated_admin_password} "
              "(shown only this once: keep it, or set another with --admin-password)", flush=True)
    zvm.stop()  # close the database before gunicorn forks
    ZvmGunicorn(config).run()
    return 0


def _gunicorn_options(config: ZvmConfig) -> dict:
    options = {
        "bind": [f"{config.host}:{config.port}"],
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 20,
        "loglevel": config.log_level,
        "errorlog": "-",
        "proc_name": "zvm",
        "post_worker_init": _post_worker_init,
        "worker_exit": _worker_exit,
    }
    if config.tls:
        options.update(certfile=config.tls_certificate, keyfile=config.tls_key)
    return options


def _post_worker_init(worker) -> None:
    zvm = worker.app.callable.extensions["zvm"]
    zvm.run_engine_when_leader()


def _worker_exit(server, worker) -> None:
    app = getattr(worker.app, "callable", None)
    if app is not None:
        app.extensions["zvm"].stop()


try:
    from gunicorn.app.base import BaseApplication
except ImportError:  # pragma: no cover - gunicorn is a dependency; this keeps `zvm --help` working without it
    BaseApplication = object


class ZvmGunicorn(BaseApplication):
    """gunicorn, configured from the ZvmConfig instead of its command line."""

    def __init__(self, config: ZvmConfig):
        self.zvm_config = config
        super().__init__()

    def load_config(self) -> None:
        options = _gunicorn_options(self.zvm_config)
        if "control_socket_disable" in self.cfg.settings:
            options["control_socket_disable"] = True  # gunicornc is not part of the product
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self):
        from zvm.api import create_app

        app = create_app(self.zvm_config)
        logger = logging.getLogger("gunicorn.error")
        zlog = logging.getLogger("zvm")
        zlog.handlers = logger.handlers
        zlog.setLevel(logger.level)
        return app
