"""The enumerations of the public ZVM REST API: one table each, Zerto's numbers and names.

The API sends an enumeration as its number (``"Status": 1``) and takes the number or the name, in any case
(``1``, ``"MeetingSLA"``, ``"meetingsla"``), in bodies and query filters. The lookup lists
(``GET /v1/vpgs/statuses`` ...) are the names in number order. The schemas (zvm/api/schemas.py), the
renderer, the client, the CLI and the plugin's decoder (vsphere_plugin/src/enums.js, checked against this
module by a test) all read these tables.

The database keeps the product's own words (``Vpg.status = "MeetingSLA"``, ``Task.kind = "CreateVpg"``,
``Vra.state = "Uninstalling"``). Where a word differs from Zerto's name, ``ALIASES`` says which member it is;
``member.internal`` is the word back. Members past Zerto's last number are this product's additions (a
state Zerto does not have, e.g. a paused VPG's own status); they are listed in docs/API.md.

Pure: no Flask, no database.
"""

from __future__ import annotations

from enum import IntEnum


class ZertoEnum(IntEnum):
    """An enumeration sent as its number; parsed from the number or the (case-insensitive) name."""

    @classmethod
    def parse(cls, value) -> ZertoEnum:
        """``value``: a member, its number (int, or digits in a string), its name or the product's word for
        it, in any case. Raises ValueError saying what it takes."""
        if isinstance(value, cls):
            return value
        if isinstance(value, bool):
            raise ValueError(cls.expected())
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                raise ValueError(cls.expected()) from None
        if isinstance(value, str):
            text = value.strip()
            if text.lstrip("+-").isdigit():
                return cls.parse(int(text))
            member = _by_word(cls).get(text.lower())
            if member is not None:
                return member
        raise ValueError(cls.expected())

    @classmethod
    def of(cls, word: str | None) -> ZertoEnum:
        """The member for a word the database holds (its name or the product's word for it)."""
        member = _by_word(cls).get((word or "").lower())
        if member is None:
            # A word no table knows is a bug here, not the caller's: the table test lists every word used.
            raise KeyError(f"{cls.__name__} has no member for {word!r}: add it to zvm/enums.py")
        return member

    @classmethod
    def names(cls) -> list[str]:
        """The lookup list: names in number order (Zerto's numbers are 0..n without gaps)."""
        return [m.name for m in sorted(cls, key=int)]

    @classmethod
    def expected(cls) -> str:
        shown = ", ".join(f"{int(m)} ({m.name})" for m in sorted(cls, key=int))
        return f"one of {shown}"

    @property
    def internal(self) -> str:
        """The word the database keeps for this member."""
        return _INTERNAL.get(type(self), {}).get(self.name, self.name)


class VpgStatus(ZertoEnum):
    Initializing = 0
    MeetingSLA = 1
    NotMeetingSLA = 2
    HistoryNotMeetingSLA = 3
    RpoNotMeetingSLA = 4
    FailingOver = 5
    Moving = 6
    Deleting = 7
    Recovered = 8
    # additions
    Paused = 9
    Error = 10


class VpgSubStatus(ZertoEnum):
    # Zerto calls the first one "None"; a Python member cannot be named None
    NONE = 0
    InitialSync = 1
    Creating = 2
    VolumeInitialSync = 3
    Sync = 4
    RecoveryPossible = 5
    DeltaSync = 6
    NeedsConfiguration = 7
    Error = 8
    EmptyProtectionGroup = 9
    DisconnectedFromPeerNoRecoveryPoints = 10
    FullSync = 11
    VolumeDeltaSync = 12
    VolumeFullSync = 13
    FailingOverCommitting = 14
    FailingOverBeforeCommit = 15
    FailingOverRollingBack = 16
    Promoting = 17
    MovingCommitting = 18
    MovingBeforeCommit = 19
    MovingRollingBack = 20
    Deleting = 21
    PendingRemove = 22
    BitmapSync = 23
    DisconnectedFromPeer = 24
    ReplicationPausedUserInitiated = 25
    ReplicationPausedSystemInitiated = 26
    RecoveryStorageProfileError = 27
    Backup = 28
    RollingBack = 29
    RecoveryStorageError = 30
    JournalStorageError = 31
    VmNotProtectedError = 32
    # additions
    WaitingForVras = 33
    ConfiguringVras = 34
    Testing = 35
    StoppingTest = 36
    FailingOver = 37
    Moving = 38
    WaitingForPeer = 39
    VraUnreachable = 40


class VpgPriority(ZertoEnum):
    Low = 0
    Medium = 1
    High = 2


class EntityType(ZertoEnum):
    """What a VPG protects: this product protects vCenter VMs only (VCVpg)."""
    VCVpg = 0
    VCvApp = 1
    VCDvApp = 2
    AWS = 3
    HyperV = 4


class RetentionPolicy(ZertoEnum):
    """Standard: the journal only; Extended (long-term retention to a repository) is not supported."""
    Standard = 0
    Extended = 1


class CommitPolicy(ZertoEnum):
    Rollback = 0
    Commit = 1
    NONE = 2


class ShutdownPolicy(ZertoEnum):
    NONE = 0
    Shutdown = 1
    ForceShutdown = 2


class TaskState(ZertoEnum):
    FirstUnusedValue = 0
    InProgress = 1
    WaitingForUserInput = 2
    Paused = 3
    Failed = 4
    Stopped = 5
    Completed = 6
    Cancelling = 7
    # addition: queued, not started yet
    Pending = 8


class TaskType(ZertoEnum):
    CreateProtectionGroup = 0
    RemoveProtectionGroup = 1
    FailOver = 2
    FailOverTest = 3
    StopFailOverTest = 4
    Move = 5
    GetCheckpointList = 6
    ProtectVM = 7
    UnprotectVM = 8
    AddVMToProtectionGroup = 9
    RemoveVMFromProtectionGroup = 10
    InstallVra = 11
    UninstallVra = 12
    GetVMSettings = 13
    UpdateProtectionGroup = 14
    InsertTaggedCP = 15
    WaitForCP = 16
    HandleMirrorPromotion = 17
    ActivateAllMirrors = 18
    LogCollection = 19
    ClearCheckpoints = 20
    ForceReconfigurationOfNewVM = 21
    ClearSite = 22
    ForceRemoveProtectionGroup = 23
    ForceUpdateProtectionGroup = 24
    ForceKillProtectionGroup = 25
    PrePostScript = 26
    InitFullSync = 27
    Pair = 28
    Unpair = 29
    AddPeerVraInfo = 30
    RemovePeerVraInfo = 31
    InstallCloudConnector = 32
    UninstallCloudConnector = 33
    HandleFirstSyncDone = 34
    Clone = 35
    MoveBeforeCommit = 36
    MoveRollback = 37
    MoveCommit = 38
    UpgradeVRA = 39
    MaintainHost = 40
    NotSupportedInThisVersion = 41
    MoveProtectionGroupToManualOperationNeeded = 42
    FailoverBeforeCommit = 43
    FailoverCommit = 44
    # additions
    FailoverRollback = 45
    PauseProtectionGroup = 46
    ResumeProtectionGroup = 47
    UpdateVraTrust = 48
    VerifyCheckpoint = 49


class PairingStatus(ZertoEnum):
    Paired = 0
    Pairing = 1
    Unpaired = 2
    # additions
    Unreachable = 3
    Unpairing = 4


class VraStatus(ZertoEnum):
    Installed = 0
    UnsupportedEsxVersion = 1
    NotInstalled = 2
    Installing = 3
    Removing = 4
    InstallationError = 5
    HostPasswordChanged = 6
    UpdatingIpSettings = 7
    DuringChangeHost = 8


class VraIpConfigType(ZertoEnum):
    Dhcp = 0
    Static = 1


class AlertLevel(ZertoEnum):
    Warning = 0
    Error = 1


class AlertEntity(ZertoEnum):
    Zvm = 0
    Vra = 1
    Vpg = 2
    CloudConnector = 3
    Storage = 4
    License = 5
    Zcm = 6
    FileRecoveryComponent = 7


class EventCategory(ZertoEnum):
    All = 0
    Events = 1
    Alerts = 2


class EventType(ZertoEnum):
    Unknown = 0
    CreateProtectionGroup = 1
    RemoveProtectionGroup = 2
    FailOver = 3
    FailOverTest = 4
    StopFailOverTest = 5
    Move = 6
    ProtectVM = 7
    UnprotectVM = 8
    InstallVra = 9
    UninstallVra = 10
    UpdateProtectionGroup = 11
    InsertTaggedCP = 12
    HandleMirrorPromotion = 13
    ActivateAllMirrors = 14
    LogCollection = 15
    ForceReconfigurationOfNewVM = 16
    ClearSite = 17
    ForceRemoveProtectionGroup = 18
    ForceUpdateProtectionGroup = 19
    ForceKillProtectionGroup = 20
    PrePostScript = 21
    InitFullSync = 22
    Pair = 23
    Unpair = 24
    InstallCloudConnector = 25
    UninstallCloudConnector = 26
    RedeployCloudConnector = 27
    ScriptExecutionFailure = 28
    SetAdvancedSiteSettings = 29
    Clone = 30
    KeepDisk = 31
    FailoverBeforeCommit = 32
    FailoverCommit = 33
    FailoverRollback = 34
    MoveBeforeCommit = 35
    MoveRollback = 36
    MoveCommit = 37
    MaintainHost = 38
    UpgradeVra = 39
    MoveProtectionGroupToManualOperationNeeded = 40
    ChangeVraIpSettings = 41
    PauseProtectionGroup = 42
    ResumeProtectionGroup = 43
    UpgradeZVM = 44
    BulkUpgradeVras = 45
    BulkUninstallVras = 46
    AlertTurnedOn = 47
    AlertTurnedOff = 48
    ChangeVraPassword = 49
    ChangeRecoveryHost = 50
    BackupProtectionGroup = 51
    CleanupProtectionGroupVipDiskbox = 52
    RestoreProtectionGroup = 53
    PreScript = 54
    PostScript = 55
    RemoveVmFromVc = 56
    ChangeVraPasswordIpSettings = 57
    FlrJournalMount = 58
    FlrJournalUnmount = 59
    Login = 60


# The product's word -> the member's name, where they differ (read by ``of``, ``parse`` and ``internal``).
ALIASES: dict[type[ZertoEnum], dict[str, str]] = {
    VpgSubStatus: {"None": "NONE"},
    CommitPolicy: {"None": "NONE"},
    ShutdownPolicy: {"None": "NONE"},
    TaskType: {"CreateVpg": "CreateProtectionGroup", "DeleteVpg": "RemoveProtectionGroup",
               "Failover": "FailOver", "FailoverTest": "FailOverTest", "FailoverTestStop": "StopFailOverTest",
               "UpdateVpg": "UpdateProtectionGroup", "CheckpointVpg": "InsertTaggedCP",
               "ForceSyncVpg": "InitFullSync", "PairSite": "Pair", "UnpairSite": "Unpair",
               "PauseVpg": "PauseProtectionGroup", "ResumeVpg": "ResumeProtectionGroup"},
    VraStatus: {"Uninstalling": "Removing", "Error": "InstallationError"},
    AlertEntity: {"Site": "Zvm"},
    EventType: {"CreateVpg": "CreateProtectionGroup", "CommitVpgSettings": "CreateProtectionGroup",
                "DeleteVpg": "RemoveProtectionGroup", "UpdateVpg": "UpdateProtectionGroup",
                "Failover": "FailOver", "FailoverTest": "FailOverTest", "FailoverTestStop": "StopFailOverTest",
                "InsertTaggedCheckpoint": "InsertTaggedCP", "PauseVpg": "PauseProtectionGroup",
                "ResumeVpg": "ResumeProtectionGroup", "ForceSyncVpg": "InitFullSync", "PairSite": "Pair",
                "UnpairSite": "Unpair", "AlertRaised": "AlertTurnedOn", "AlertCleared": "AlertTurnedOff"},
}

# What the lookup routes serve: path under /v1 -> table
LOOKUPS: dict[str, type[ZertoEnum]] = {
    "/vpgs/statuses": VpgStatus,
    "/vpgs/substatuses": VpgSubStatus,
    "/vpgs/priorities": VpgPriority,
    "/vpgs/entitytypes": EntityType,
    "/vpgs/retentionpolicies": RetentionPolicy,
    "/vpgs/failovercommitpolicies": CommitPolicy,
    "/vpgs/failovershutdownpolicies": ShutdownPolicy,
    "/tasks/types": TaskType,
    "/tasks/states": TaskState,
    "/localsite/pairingstatuses": PairingStatus,
    "/peersites/pairingstatuses": PairingStatus,
    "/vras/statuses": VraStatus,
    "/vras/ipconfigurationtypes": VraIpConfigType,
    "/alerts/levels": AlertLevel,
    "/alerts/entities": AlertEntity,
    "/events/types": EventType,
    "/events/categories": EventCategory,
}

_WORDS: dict[type, dict[str, ZertoEnum]] = {}
_INTERNAL: dict[type, dict[str, str]] = {}


def _by_word(cls: type[ZertoEnum]) -> dict[str, ZertoEnum]:
    words = _WORDS.get(cls)
    if words is None:
        words = {m.name.lower(): m for m in cls}
        for word, name in ALIASES.get(cls, {}).items():
            words.setdefault(word.lower(), cls[name])
        _WORDS[cls] = words
    return words


for _cls, _aliases in ALIASES.items():
    # the word stored for a member: the first alias naming it (None for NONE; CreateVpg for the task type)
    _INTERNAL[_cls] = {}
    for _word, _name in _aliases.items():
        _INTERNAL[_cls].setdefault(_name, _word)


def event_type(kind: str) -> EventType:
    """An audit event's kind (the operation's name, e.g. PauseVpg, Login) -> Zerto's event type, Unknown for
    the product's own operations that Zerto has no type for (the kind stays in the event's EventKind)."""
    try:
        return EventType.of(kind)
    except KeyError:
        return EventType.Unknown


TABLES: dict[str, type[ZertoEnum]] = {cls.__name__: cls for cls in ZertoEnum.__subclasses__()}


# The plugin's tables (vsphere_plugin/src/enums.js): per table, the product's word for each number, which
# is what its views show and compare. tests/compat/test_enums.py checks the file against this.
JS_TABLES = ("VpgStatus", "VpgSubStatus", "VpgPriority", "TaskState", "TaskType", "PairingStatus", "VraStatus",
             "AlertLevel", "AlertEntity", "EventType", "CommitPolicy", "ShutdownPolicy")


def render_js() -> str:
    lines = ["// Generated from zvm/enums.py (render_js): the API's enumerations, number -> the word the views use.",
             "// Regenerate with: ./run python -c 'from zvm.enums import render_js; print(render_js(), end=\"\")' "
             "> vsphere_plugin/src/enums.js", ""]
    for name in JS_TABLES:
        table = TABLES[name]
        words = ", ".join(f'"{m.internal}"' for m in sorted(table, key=int))
        lines.append(f"export const {name} = [{words}];")
    return "\n".join(lines) + "\n"
