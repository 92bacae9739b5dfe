"""The ZVM's state, as peewee models bound to ``zvm.db.database_proxy``.

    Site ──< PeerSite                 this ZVM's own site (is_local) and each paired site
    Site ──< InvHost, InvCluster,     the vCenter inventory of a site (the local one from vCenter, a peer's
             InvDatastore, InvNetwork,  from the peer over 9081); keyed by (site, moid)
             InvFolder, InvVm
    Site ──< Vra                      one replication appliance per ESXi host
    Vpg ──< VpgVm ──< VpgVolume       protection groups, their VMs and the VMs' disks
    Vpg ──< Checkpoint
    RecoveryOperation                 a failover test, failover or move of a VPG (its recovery site's ZVM runs it)
    VpgSettings                       a draft of a VPG's settings (vpgSettings create-edit-commit)
    Task, Alert, Event                long operations, raised conditions, the audit trail
    VpgSample                         per-VPG monitoring history: RPO, throughput, IOPS, journal (zvm.monitoring.history)
    User ──< Session                  API users (scrypt password hashes, a role) and their sessions (token hashes)
    LoginFailure                      failed logins per user name and per client address (login throttling)
    Revision                          a counter bumped by triggers on every change (API response cache)
    PairingToken                      tokens this site handed out for a peer to pair with (hashes only)
    SchemaVersion                     migrations applied (zvm/migrations.py)

Times are UTC seconds since the epoch (floats). Identifiers shown to users are UUID strings. No secret is
stored in clear: passwords as scrypt hashes, session and pairing tokens as SHA-256 hashes, vCenter and peer
credentials encrypted (zvm.db.SecretBox).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import time
import uuid

import peewee
from peewee import (
    BooleanField,
    CharField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    JSONField,
    TextField,
)

from zvm.db import database_proxy


def new_id() -> str:
    return str(uuid.uuid4())


def now() -> float:
    return time.time()


class BaseModel(peewee.Model):
    class Meta:
        database = database_proxy
        legacy_table_names = False


class SchemaVersion(BaseModel):
    version = IntegerField(primary_key=True)
    description = TextField()
    applied_at = DoubleField(default=now)


class Revision(BaseModel):
    """One row whose value grows with every committed change to the state the API shows (database
    triggers bump it, see zvm.migrations.install_revision_triggers): a cheap "has anything changed?"."""

    id = IntegerField(primary_key=True)
    value = peewee.BigIntegerField(default=0)


# --- users and sessions ----------------------------------------------------------------------------------

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` (base64): slow on purpose, so a stolen database resists guessing."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


@functools.cache
def unusable_password_hash() -> str:
    """What an unknown user name's password is checked against: the hash of a random secret no one knows, at
    the same cost as a real one, so an unknown user takes the same single scrypt run as a wrong password.
    (The caller still refuses an unknown user whatever this check says.)"""
    return hash_password(base64.b64encode(os.urandom(24)).decode())


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                         dklen=32)
    return hmac.compare_digest(got, base64.b64decode(digest))


def token_hash(token: str) -> str:
    """Tokens are random (128+ bits), so a fast hash is enough to keep them out of the database."""
    return hashlib.sha256(token.encode()).hexdigest()


ROLES = ("viewer", "operator", "admin")  # each may do what the ones before it may


def role_allows(role: str, needed: str) -> bool:
    """Whether a user with ``role`` may call an operation that needs ``needed`` (an unknown role: nothing)."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


class User(BaseModel):
    username = CharField(unique=True, max_length=128)
    password_hash = CharField(max_length=255)
    role = CharField(default="admin", max_length=32)  # one of ROLES
    disabled = BooleanField(default=False)  # a disabled user cannot log in; its sessions were ended
    created_at = DoubleField(default=now)
    updated_at = DoubleField(null=True)

    def set_password(self, password: str) -> None:
        self.password_hash = hash_password(password)

    def check_password(self, password: str) -> bool:
        return verify_password(password, self.password_hash)


class LoginFailure(BaseModel):
    """Recent failed logins of one key: ``user:NAME`` or ``addr:ADDRESS`` (zvm/api/throttle.py)."""

    key = CharField(primary_key=True, max_length=300)
    failures = IntegerField(default=0)
    last_failure_at = DoubleField(default=now)
    blocked_until = DoubleField(default=0.0)
    alerted = BooleanField(default=False)  # the lockout of this streak was reported already


class Session(BaseModel):
    token_hash = CharField(unique=True, max_length=64)
    user = ForeignKeyField(User, backref="sessions", on_delete="CASCADE")
    created_at = DoubleField(default=now)
    last_used = DoubleField(default=now)
    client = CharField(default="", max_length=255)


# --- sites ---------------------------------------------------------------------------------------------

class Site(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    name = CharField(max_length=255)
    location = CharField(default="", max_length=255)
    contact = CharField(default="", max_length=255)
    is_local = BooleanField(default=False)
    zvm_address = CharField(default="", max_length=255)
    api_port = IntegerField(default=9080)
    peer_port = IntegerField(default=9081)
    vcenter_url = CharField(default="", max_length=512)
    vcenter_username = CharField(default="", max_length=255)
    vcenter_password_enc = TextField(default="")
    vcenter_verify = CharField(default="true", max_length=512)  # "true", "false" or a CA bundle path
    vcenter_thumbprint = CharField(default="", max_length=128)
    vcenter_uuid = CharField(default="", max_length=255)
    version = CharField(default="", max_length=32)
    inventory_loaded_at = DoubleField(null=True)
    inventory_version = CharField(default="", max_length=255)  # the PropertyCollector's last version


class PeerSite(BaseModel):
    """A site this ZVM is paired with; ``certificate_pem`` authenticates it on 9081 (mutual TLS)."""

    site = ForeignKeyField(Site, unique=True, backref="peer", on_delete="CASCADE")
    host_name = CharField(max_length=255)
    port = IntegerField(default=9081)
    certificate_pem = TextField(default="")
    state = CharField(default="Paired", max_length=32)  # Paired, Unreachable, Unpairing
    paired_at = DoubleField(default=now)
    last_seen = DoubleField(null=True)
    inventory_loaded_at = DoubleField(null=True)


class PairingToken(BaseModel):
    token_hash = CharField(unique=True, max_length=64)
    created_at = DoubleField(default=now)
    expires_at = DoubleField()
    used_at = DoubleField(null=True)
    created_by = CharField(default="", max_length=128)


# --- inventory (a copy of each site's vCenter inventory, kept current by the watcher) ---------------------

class _InventoryModel(BaseModel):
    site = ForeignKeyField(Site, on_delete="CASCADE")
    moid = CharField(max_length=255)
    name = CharField(max_length=255)


class InvCluster(_InventoryModel):
    datacenter = CharField(default="", max_length=255)

    class Meta:
        indexes = ((("site", "moid"), True),)


class InvHost(_InventoryModel):
    cluster = CharField(null=True, max_length=255)
    datacenter = CharField(default="", max_length=255)
    connection_state = CharField(default="", max_length=32)
    power_state = CharField(default="", max_length=32)
    datastores = JSONField(default=list)
    networks = JSONField(default=list)

    class Meta:
        indexes = ((("site", "moid"), True),)


class InvDatastore(_InventoryModel):
    type = CharField(default="", max_length=32)
    capacity = peewee.BigIntegerField(default=0)
    free_space = peewee.BigIntegerField(default=0)
    url = CharField(default="", max_length=1024)

    class Meta:
        indexes = ((("site", "moid"), True),)


class InvNetwork(_InventoryModel):
    kind = CharField(default="Network", max_length=255)

    class Meta:
        indexes = ((("site", "moid"), True),)


class InvFolder(_InventoryModel):
    parent = CharField(null=True, max_length=255)
    path = CharField(default="", max_length=1024)  # "/DC0/vm/Finance"

    class Meta:
        indexes = ((("site", "moid"), True),)


class InvVm(_InventoryModel):
    uuid = CharField(default="", max_length=255)
    instance_uuid = CharField(default="", max_length=255)
    host = CharField(null=True, max_length=255)
    power_state = CharField(default="", max_length=32)
    folder = CharField(null=True, max_length=255)
    networks = JSONField(default=list)
    disks = JSONField(default=list)  # [{key, label, file_name, datastore, capacity, uuid}]

    class Meta:
        indexes = ((("site", "moid"), True),)


INVENTORY_MODELS = [InvCluster, InvHost, InvDatastore, InvNetwork, InvFolder, InvVm]


# --- VRAs ----------------------------------------------------------------------------------------------

class Vra(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    site = ForeignKeyField(Site, backref="vras", on_delete="CASCADE")
    host_moid = CharField(max_length=255)
    host_name = CharField(max_length=255)
    name = CharField(max_length=255)  # Z-VRA-<host>
    vm_moid = CharField(null=True, max_length=255)
    state = CharField(default="Installing", max_length=32)  # Installing, Installed, Uninstalling, Error
    datastore_moid = CharField(max_length=255)
    network_moid = CharField(max_length=255)
    ip_mode = CharField(default="Dhcp", max_length=16)  # Dhcp, Static
    ip_address = CharField(default="", max_length=255)
    subnet_mask = CharField(default="", max_length=255)
    gateway = CharField(default="", max_length=255)
    control_address = CharField(default="", max_length=255)  # host:port of the VRA's gRPC (4005)
    memory_gb = IntegerField(default=3)
    version = CharField(default="", max_length=32)
    reachable = BooleanField(default=False)
    last_seen = DoubleField(null=True)
    created_at = DoubleField(default=now)

    class Meta:
        indexes = ((("site", "host_moid"), True),)


# --- VPGs ----------------------------------------------------------------------------------------------

class Vpg(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    name = CharField(unique=True, max_length=255)
    protected_site = ForeignKeyField(Site, backref="protected_vpgs", on_delete="CASCADE")
    recovery_site = ForeignKeyField(Site, backref="recovery_vpgs", on_delete="CASCADE")
    status = CharField(default="Initializing", max_length=32)
    substatus = CharField(default="None", max_length=32)
    priority = CharField(default="Medium", max_length=16)
    rpo_threshold_seconds = IntegerField(default=300)
    journal_history_hours = IntegerField(default=24)
    journal_hard_limit_mb = IntegerField(default=0)  # 0: unlimited
    journal_warning_mb = IntegerField(default=0)
    journal_datastore = CharField(null=True, max_length=255)
    wan_compression = BooleanField(default=True)
    recovery_host = CharField(null=True, max_length=255)
    recovery_cluster = CharField(null=True, max_length=255)
    recovery_datastore = CharField(null=True, max_length=255)
    recovery_folder = CharField(null=True, max_length=255)
    failover_network = CharField(null=True, max_length=255)
    test_network = CharField(null=True, max_length=255)
    boot_groups = JSONField(default=list)  # [{"Name": ..., "BootDelayInSeconds": ...}]
    paused = BooleanField(default=False)
    recovery_vra = CharField(null=True, max_length=255)  # the recovery site's VRA holding the recover role
    # monitoring figures, updated from the VRAs' reports
    actual_rpo_seconds = IntegerField(null=True)
    throughput_mb = DoubleField(default=0.0)
    iops = IntegerField(default=0)
    journal_used_mb = DoubleField(default=0.0)
    history_seconds = IntegerField(default=0)
    last_checkpoint_at = DoubleField(null=True)
    last_report_at = DoubleField(null=True)
    created_at = DoubleField(default=now)
    updated_at = DoubleField(default=now)


class VpgVm(BaseModel):
    vpg = ForeignKeyField(Vpg, backref="vms", on_delete="CASCADE")
    vm_moid = CharField(max_length=255)
    name = CharField(max_length=255)
    boot_group = CharField(default="", max_length=255)
    recovery_host = CharField(null=True, max_length=255)
    recovery_datastore = CharField(null=True, max_length=255)
    # [{"NicIdentifier", "FailoverIp": {...} | None, "FailoverTestIp": {...} | None}]: re-IP on recovery
    nics = JSONField(default=list)

    class Meta:
        # moids are per vCenter: the recovery site's ZVM also keeps the VMs of the VPGs it recovers (from the
        # other vCenter); "protected by one VPG at most" is checked per protected site (zvm.vpg_settings)
        indexes = ((("vpg", "vm_moid"), True),)


class VpgVolume(BaseModel):
    vm = ForeignKeyField(VpgVm, backref="volumes", on_delete="CASCADE")
    volume_id = CharField(unique=True, default=new_id, max_length=255)  # the id replication uses
    disk_key = IntegerField()
    file_name = CharField(max_length=1024)
    capacity = peewee.BigIntegerField(default=0)
    recovery_datastore = CharField(null=True, max_length=255)
    # the replica volume on the recovery site as a datastore path ("[ds] zvr/<vpg>/<volume>.img"): the
    # recovered VM's disk after a commit
    recovery_path = CharField(null=True, max_length=1024)


class Checkpoint(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    vpg = ForeignKeyField(Vpg, backref="checkpoints", on_delete="CASCADE")
    timestamp = DoubleField(default=now, index=True)
    tag = CharField(null=True, max_length=255)
    consistent = BooleanField(default=True)


class RecoveryOperation(BaseModel):
    """A failover test, failover or move of a VPG, run by the ZVM of the site the VMs recover to. Its
    tasks (zvm.orchestration.recovery) keep what they did here, step by step, so that a restarted ZVM
    resumes them from it (or rolls them back).

    ``state``: Starting, Running (test VMs up), BeforeCommit (failover or move VMs up), Stopping,
    Committing, RollingBack; then Stopped (test ended), Committed, RolledBack or Failed.
    """

    identifier = CharField(unique=True, default=new_id, max_length=255)
    vpg = CharField(max_length=255, index=True)  # the VPG's identifier (an operation outlives its VPG)
    vpg_name = CharField(default="", max_length=255)
    kind = CharField(max_length=32)  # FailoverTest, Failover, Move
    state = CharField(default="Starting", max_length=32)
    session = CharField(default=new_id, max_length=255)  # the recovery VRA's session (point-in-time images)
    recovery_vra = CharField(null=True, max_length=255)
    protected_site = CharField(default="", max_length=255)  # site identifiers
    recovery_site = CharField(default="", max_length=255)
    checkpoint = CharField(null=True, max_length=255)  # asked for (None: the newest), then the one used
    checkpoint_time = DoubleField(null=True)
    checkpoint_consistent = BooleanField(default=True)
    params = JSONField(default=dict)  # the order's options (policies, timeouts, scratch limit, ...)
    vms = JSONField(default=list)  # per VM: source, name, boot group, recovery VM moid, disks and exports, power
    sources = JSONField(default=dict)  # source VM moid -> power state before the operation shut it down
    nbd = JSONField(default=dict)  # where the recovery VRA serves the session: {"unix": ..., "tcp": ...}
    phases = JSONField(default=dict)  # seconds per phase of the order, and the boot schedule
    commit_deadline = DoubleField(null=True)  # when the commit policy acts (BeforeCommit)
    peer_pending = CharField(default="", max_length=32)  # a step the protected site still has to do
    result = CharField(default="", max_length=64)  # Succeeded, Failed, Committed, RolledBack, ...
    summary = TextField(default="")
    task = CharField(null=True, max_length=255)  # the task working on it now
    initiated_by = CharField(default="", max_length=128)
    started_at = DoubleField(default=now, index=True)
    ready_at = DoubleField(null=True)  # every VM powered on with its disks reachable
    ended_at = DoubleField(null=True)


class VpgSettings(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    vpg = ForeignKeyField(Vpg, null=True, backref="drafts", on_delete="CASCADE")
    body = JSONField()
    created_by = CharField(default="", max_length=128)
    created_at = DoubleField(default=now)
    updated_at = DoubleField(default=now)


# --- tasks, alerts, events -----------------------------------------------------------------------------

class Task(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    kind = CharField(max_length=255)  # InstallVra, CreateVpg, ...
    state = CharField(default="Pending", max_length=32)  # Pending, InProgress, Completed, Failed
    progress = IntegerField(default=0)  # percent
    step = CharField(default="", max_length=512)
    initiated_by = CharField(default="", max_length=128)
    params = JSONField(default=dict)
    result = JSONField(default=dict)
    error_code = CharField(default="", max_length=255)
    error_message = TextField(default="")
    vpg = CharField(null=True, max_length=255)  # identifiers, not foreign keys: a task outlives its object
    vra = CharField(null=True, max_length=255)
    site = CharField(null=True, max_length=255)
    created_at = DoubleField(default=now, index=True)
    started_at = DoubleField(null=True)
    completed_at = DoubleField(null=True)


class Alert(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    code = CharField(max_length=255)  # VpgRpoOverThreshold, VraUnreachable, ...
    level = CharField(default="Warning", max_length=16)  # Warning, Error
    entity = CharField(max_length=32)  # Vpg, Vra, Site
    entity_id = CharField(max_length=255)
    description = TextField()
    raised_at = DoubleField(default=now, index=True)
    updated_at = DoubleField(default=now)
    cleared_at = DoubleField(null=True)
    dismissed = BooleanField(default=False)


class Event(BaseModel):
    identifier = CharField(unique=True, default=new_id, max_length=255)
    kind = CharField(max_length=255)  # the operation: CreateVpg, PauseVpg, Login, ...
    category = CharField(max_length=32)  # Vpg, Vra, Site, Session, Alert
    user = CharField(default="", max_length=128)
    description = TextField(default="")
    entity_id = CharField(default="", max_length=255)
    task = CharField(null=True, max_length=255)
    result = CharField(default="Succeeded", max_length=16)  # InProgress, Succeeded, Failed, Refused
    detail = TextField(default="")
    client = CharField(default="", max_length=255)  # where the request came from (address), when one did
    started_at = DoubleField(default=now, index=True)
    completed_at = DoubleField(null=True)


class VpgSample(BaseModel):
    """One bucket of a VPG's monitoring history at one resolution (5 s, 60 s or 900 s; see
    zvm.monitoring.history): the RPO's min, max and average over the bucket, the average rates, and the journal
    as last seen in it. A bucket with no report is absent, never a row of zeros."""

    vpg = CharField(max_length=255)  # the VPG's identifier: its history is pruned with it, not by a cascade
    resolution = IntegerField()  # seconds per bucket
    bucket = DoubleField()  # the bucket's start, a multiple of the resolution
    count = IntegerField(default=1)  # monitoring passes folded into it (the weight of its averages)
    rpo_min = DoubleField(default=0.0)  # seconds
    rpo_max = DoubleField(default=0.0)
    rpo_avg = DoubleField(default=0.0)
    iops = DoubleField(default=0.0)  # writes per second by the VMs
    throughput_mb = DoubleField(default=0.0)  # MB/s the VMs wrote (before compression)
    wan_throughput_mb = DoubleField(default=0.0)  # MB/s sent to the recovery site (after compression)
    journal_used_mb = DoubleField(default=0.0)
    history_minutes = DoubleField(default=0.0)

    class Meta:
        indexes = ((("vpg", "resolution", "bucket"), True),)


ALL_MODELS = [
    SchemaVersion, Revision, User, LoginFailure, Session, Site, PeerSite, PairingToken, *INVENTORY_MODELS, Vra,
    Vpg, VpgVm, VpgVolume, Checkpoint, VpgSettings, Task, Alert, Event, RecoveryOperation, VpgSample,
]
