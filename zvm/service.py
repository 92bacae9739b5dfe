"""One ZVM: its configuration, database, local site, users, and the background loops that do the work.

``Zvm.open()`` prepares the state (database schema, the local site row, the first administrator) and is
idempotent; ``start()`` / ``stop()`` run the background loops (task runner, inventory watcher,
monitoring); tests call each loop's ``run_once()`` / ``sync_once()`` instead, so they never wait on a timer.

vCenter is reached through ``vcenter_factory(site_row) -> zvm.vcenter.VCenter``-like object: the seam a
test replaces by injection.
"""

from __future__ import annotations

import fcntl
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable

import peewee

from zvm import __version__
from zvm import db as zdb
from zvm import models as m
from zvm.config import ZvmConfig
from zvm.errors import ConfigError, NotFoundError
from zvm.inventory import InventorySync
from zvm.migrations import current_version, latest_version, migrate
from zvm.monitoring.monitor import Monitor
from zvm.orchestration import handlers  # noqa: F401 - registers the task handlers
from zvm.orchestration.peers import probe_peer
from zvm.orchestration.tasks import TaskRunner
from zvm.orchestration.verify_schedule import VerifySchedule
from zvm.orchestration.watch import RecoveryWatch
from zvm.peer.enrollment import control_tls_for
from zvm.peer.pki import ensure_pki
from zvm.peer.service import PeerServer
from zvm.vcenter import VCenter, VCenterConfig
from zvm.vra_control import GrpcVraControl

log = logging.getLogger("zvm")


def default_vcenter_factory(zvm: Zvm):
    def connect(site: m.Site):
        if not site.vcenter_url:
            raise ConfigError("no vCenter is configured for this site: set vcenter_url, vcenter_username "
                              "and vcenter_password (ZVM_VCENTER_PASSWORD)")
        verify: bool | str = site.vcenter_verify
        if verify.lower() in ("true", "false"):
            verify = verify.lower() == "true"
        password = zvm.secrets.decrypt(site.vcenter_password_enc) if site.vcenter_password_enc else ""
        return VCenter(VCenterConfig(url=site.vcenter_url, username=site.vcenter_username, password=password,
                                     verify=verify, thumbprint=site.vcenter_thumbprint or None))

    return connect


class Zvm:
    def __init__(self, config: ZvmConfig, *, vcenter_factory: Callable | None = None):
        self.config = config
        self.db: peewee.Database | None = None
        self.secrets: zdb.SecretBox | None = None
        self.vcenter_factory = vcenter_factory or default_vcenter_factory(self)
        self.generated_admin_password: str | None = None
        self._local_site_id: int | None = None
        self._loops: list = []
        self._started = False
        self._stopping = threading.Event()
        self._lock_fd: int | None = None
        self.response_cache = None  # the API's GET answers (zvm.api.cache), made by the app that serves it
        self.tasks = TaskRunner(self)
        self.add_loop(self.tasks)
        self.inventory = InventorySync(self)
        self.add_loop(self.inventory)
        self.peer_server = PeerServer(self, config.host, config.peer_port)
        self.add_loop(self.peer_server)
        self.vra_control = GrpcVraControl(config.vra_pairing_secret or None, tls=control_tls_for(self))
        self.monitor = Monitor(self, peer_probe=lambda peer: probe_peer(self, peer))
        self.add_loop(self.monitor)
        self.recovery_watch = RecoveryWatch(self)
        self.add_loop(self.recovery_watch)
        self.verify_schedule = VerifySchedule(self)  # scheduled recoverability checks
        if config.verify_every_minutes > 0:
            self.add_loop(self.verify_schedule)
        self._pki = None

    # --- state ------------------------------------------------------------------------------------------

    def open(self, *, run_migrations: bool = True) -> Zvm:
        zdb.private_dir(self.config.data_dir)
        self.secrets = zdb.SecretBox.in_dir(self.config.data_dir)
        self.db = zdb.bind(zdb.open_database(self.config.database))
        zdb.connect(self.db)
        try:
            if run_migrations:
                migrate(self.db)
            else:
                if current_version(self.db) != latest_version():
                    raise ConfigError("the database schema is not current: run 'zvm serve' once (it migrates)")
            self._ensure_local_site()
            self._ensure_admin()
        finally:
            self.db.close()
        return self

    def _ensure_local_site(self) -> None:
        c = self.config
        with zdb.transaction(self.db):
            site = m.Site.get_or_none(m.Site.is_local == True)  # noqa: E712 - peewee expression
            if site is None:
                site = m.Site(is_local=True, name=c.site_name or socket.gethostname())
            site.name = c.site_name or site.name
            site.location = c.site_location or site.location
            site.contact = c.site_contact or site.contact
            site.zvm_address = c.address
            site.api_port = c.port
            site.peer_port = c.peer_port
            site.version = __version__
            if c.vcenter_url:
                changed = (site.vcenter_url, site.vcenter_username) != (c.vcenter_url, c.vcenter_username)
                site.vcenter_url = c.vcenter_url
                site.vcenter_username = c.vcenter_username
                site.vcenter_verify = c.vcenter_verify
                site.vcenter_thumbprint = c.vcenter_thumbprint
                if c.vcenter_password:
                    site.vcenter_password_enc = self.secrets.encrypt(c.vcenter_password)
                if changed:
                    site.inventory_version = ""
            site.save()
            self._local_site_id = site.id

    def _ensure_admin(self) -> None:
        c = self.config
        with zdb.transaction(self.db):
            user = m.User.get_or_none(m.User.username == c.admin_username)
            if user is None:
                password = c.admin_password or secrets.token_urlsafe(12)
                if not c.admin_password:
                    self.generated_admin_password = password
                user = m.User(username=c.admin_username)
                user.set_password(password)
                user.save()
            elif c.admin_password and not user.check_password(c.admin_password):
                user.set_password(c.admin_password)
                user.save()

    def local_site(self) -> m.Site:
        site = m.Site.get_or_none(m.Site.id == self._local_site_id) if self._local_site_id else None
        if site is None:
            site = m.Site.get_or_none(m.Site.is_local == True)  # noqa: E712
        if site is None:
            raise NotFoundError("the local site is not set up: start the ZVM with 'zvm serve'")
        self._local_site_id = site.id
        return site

    def peer_pki(self):
        """This site's CA and peer-service certificate (zvm/peer/pki.py), made on first use."""
        if self._pki is None:
            site = self.local_site()
            names = [self.config.public_address] if self.config.public_address else []
            self._pki = ensure_pki(self.config.data_dir, site.name, site.identifier, names)
        return self._pki

    def local_site_id(self) -> int:
        if self._local_site_id is None:
            self.local_site()
        return self._local_site_id

    # --- background loops -----------------------------------------------------------------------------

    def add_loop(self, loop) -> None:
        """A loop has ``start()`` and ``stop()``; it is started by ``start`` and stopped by ``stop``."""
        self._loops.append(loop)

    def wake_tasks(self) -> None:
        self.tasks.wake()

    def start(self) -> None:
        self._started = True
        self.tasks.fail_interrupted()
        for loop in self._loops:
            loop.start()

    def run_engine_when_leader(self) -> None:
        """Start the loops once this process holds the data directory's engine lock (one process of the
        service at a time runs them; the lock is released when the process exits, for another to take)."""

        def wait_for_lock():
            fd = os.open(self.config.data_dir / "engine.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # blocks until the current leader exits
            except OSError:
                os.close(fd)
                return
            self._lock_fd = fd
            if not self._stopping.is_set():
                log.info("this process runs the ZVM's background loops (pid %d)", os.getpid())
                self.start()

        threading.Thread(target=wait_for_lock, name="zvm-engine-lock", daemon=True).start()

    def stop(self) -> None:
        self._stopping.set()
        if self._started:
            for loop in reversed(self._loops):
                loop.stop()
            self._started = False
        self.inventory.reset()  # its vCenter session, also when a test drove it by hand
        close = getattr(self.vra_control, "close", None)  # its cached channels (a test double may have none)
        if close is not None:
            close()
        if self.db is not None:
            self.db.close()
            if hasattr(self.db, "close_all"):
                self.db.close_all()
