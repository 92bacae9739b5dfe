"""``zvm serve``: the ZVM service, run by gunicorn with nothing else installed.

The parent process loads and checks the configuration, brings the database schema up to date and creates
the first administrator (printing a generated password once, when none was given), then hands over to
gunicorn: ``workers`` processes of ``threads`` threads serve the API. The API speaks HTTPS: with the
configured certificate, else with one made at first start and signed by the site CA (zvm/https.py), whose
SHA-256 fingerprint is printed; plain HTTP only when asked for with ``--insecure-http``. Files the service
creates are its user's only (umask 077).
Exactly one worker at a time runs the background loops (tasks, inventory, monitoring, the peer service):
the one holding the data directory's ``engine.lock``; when it exits, another takes over.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from zvm import db as zdb
from zvm.config import ZvmConfig, load_config
from zvm.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="run the ZVM service (REST API on 9080, peer service on 9081)",
        description=(
            "Run the ZVM service under gunicorn. With only --data-dir it keeps everything there: an embedded "
            "SQLite database, the key that encrypts stored credentials, certificates. Options override the "
            "configuration file and ZVM_* environment variables (ZVM_PORT ...). Secrets never belong on the "
            "command line, where any user sees them in ps: give them by environment (ZVM_ADMIN_PASSWORD, "
            "ZVM_DATABASE_URL, ZVM_VCENTER_PASSWORD) or in a file of their own (--admin-password-file, "
            "--database-url-file, ZVM_VCENTER_PASSWORD_FILE). The API speaks HTTPS: without --tls-certificate, "
            "with a certificate made at first start and signed by the site CA (DATA_DIR/pki/ca.pem; its "
            "fingerprint is printed); plain HTTP only with --insecure-http. Each option's default is the one "
            "the service uses when neither the option, the file nor the environment sets it."))
    p.add_argument("--config", metavar="FILE", help="TOML configuration file (see docs/OPERATIONS.md)")
    p.add_argument("--data-dir", metavar="DIR", help="state directory (database, keys, certificates)")
    p.add_argument("--host", help="address to listen on")
    p.add_argument("--port", type=int, help="REST API port (default 9080)")
    p.add_argument("--peer-port", type=int, help="peer service port (default 9081)")
    p.add_argument("--public-address", help="address peers and VRAs use to reach this ZVM")
    p.add_argument("--database-url", help="postgresql://user:password@host:port/name (default: SQLite). "
                   "With a password, give it by environment (ZVM_DATABASE_URL) or --database-url-file "
                   "instead: options show in ps")
    p.add_argument("--database-url-file", metavar="FILE", help="read the database URL from this file's first line")
    p.add_argument("--site-name", help="this site's name")
    p.add_argument("--admin-password", help="the admin password (default: generated and shown once). Shows in "
                   "ps: prefer ZVM_ADMIN_PASSWORD or --admin-password-file")
    p.add_argument("--admin-password-file", metavar="FILE", help="read the admin password from this file's first line")
    p.add_argument("--tls-certificate", metavar="PEM", help="certificate for HTTPS (default: one made at first "
                   "start, signed by the site CA DATA_DIR/pki/ca.pem)")
    p.add_argument("--tls-key", metavar="PEM", help="private key for HTTPS")
    p.add_argument("--insecure-http", action="store_true", default=None,
                   help="serve plain HTTP: passwords and tokens travel in clear (labs on loopback only)")
    p.add_argument("--vcenter-url", help="the site's vCenter, e.g. https://vc.example/sdk")
    p.add_argument("--vcenter-username", help="vCenter user")
    p.add_argument("--vcenter-verify", help="true, false (labs only) or a CA bundle file")
    p.add_argument("--workers", type=int, help="gunicorn worker processes")
    p.add_argument("--threads", type=int, help="threads per worker")
    _true_defaults(p)
    p.set_defaults(func=run)


# options whose default the help says in its own words (no single value)
_SAID = {"config", "data_dir", "database_url", "database_url_file", "site_name", "admin_password",
         "admin_password_file", "tls_certificate", "tls_key", "public_address", "vcenter_url", "vcenter_username"}


def _true_defaults(parser: argparse.ArgumentParser) -> None:
    """Show in --help the default the service really uses: ZvmConfig's (the options default to None so that
    only what is given overrides the file and the environment; argparse would print None)."""
    import dataclasses

    defaults = {f.name: f.default for f in dataclasses.fields(ZvmConfig)}
    for action in parser._actions:
        if action.dest in defaults and action.dest not in _SAID and action.help:
            value = defaults[action.dest]
            shown = ("off" if value is False else "on") if isinstance(value, bool) else value
            action.help = f"{action.help.removesuffix(' (default 9080)').removesuffix(' (default 9081)')} " \
                          f"(default: {shown})"
    for action in parser._actions:
        if action.dest == "data_dir":
            action.help += " (required, unless --config or ZVM_DATA_DIR gives it)"


def config_from_args(args: argparse.Namespace, env=None) -> ZvmConfig:
    keys = ["data_dir", "host", "port", "peer_port", "public_address", "database_url", "database_url_file",
            "site_name", "admin_password", "admin_password_file", "tls_certificate", "tls_key", "insecure_http",
            "vcenter_url", "vcenter_username", "vcenter_verify", "workers", "threads"]
    overrides = {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}
    config = load_config(args.config, env=env, **overrides)
    if not args.data_dir and not args.config and "ZVM_DATA_DIR" not in (env or os.environ):
        raise ConfigError("say where the ZVM keeps its state: --data-dir DIR (or data_dir in --config)")
    return config


def run(args: argparse.Namespace) -> int:
    from zvm.service import Zvm

    os.umask(0o077)  # the database, keys and certificates are the service user's only
    for secret in ("admin_password", "database_url"):
        if getattr(args, secret, None) and (secret != "database_url" or "@" in args.database_url):
            print(f"zvm: --{secret.replace('_', '-')} on the command line shows in ps: use "
                  f"ZVM_{secret.upper()} or --{secret.replace('_', '-')}-file", file=sys.stderr, flush=True)
    config = config_from_args(args)
    from zvm.metrics_dir import prepare_multiprocess

    prepare_multiprocess(config.data_dir)  # the workers' API latency figures, added up by any scrape
    zvm = Zvm(config).open()
    if zvm.generated_admin_password:
        print(f"zvm: created user {config.admin_username!r} with password {zvm.generated_admin_password} "
              "(shown only this once: keep it, or set another with --admin-password-file)", flush=True)
    zdb.connect(zvm.db)
    site_name = zvm.local_site().name
    zvm.stop()  # close the database before gunicorn forks
    https_setup(config, site_name)
    ZvmGunicorn(config).run()
    return 0


def https_setup(config: ZvmConfig, site_name: str) -> None:
    """Make (or keep) the API's certificate when none is configured, and say how clients verify it."""
    if config.insecure_http:
        print(f"zvm: WARNING: plain HTTP on {config.host}:{config.port} (--insecure-http): passwords and "
              "session tokens travel in clear", flush=True)
        return
    if not config.tls:
        from zvm.https import ensure_api_certificate, host_names

        cert = ensure_api_certificate(config.data_dir, site_name, host_names(config.host, config.public_address))
        config.tls_certificate, config.tls_key = str(cert.cert), str(cert.key)
        print(f"zvm: HTTPS with a certificate signed by the site CA {cert.ca}; SHA-256 fingerprint "
              f"{cert.fingerprint()} (clients: --ca-file {cert.ca} or --fingerprint)", flush=True)


def _gunicorn_options(config: ZvmConfig) -> dict:
    options = {
        "bind": [f"{config.host}:{config.port}"],
        "workers": config.workers,
        "threads": config.threads,
        "worker_class": "zvm.serve_worker.ZvmWorker",
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
    from zvm.metrics import worker_exited

    worker_exited(worker.pid)
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
