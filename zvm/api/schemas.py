"""The API's JSON schemas: request bodies are checked against them, responses are built to them, and the
OpenAPI document publishes them (``components.schemas``). Field names follow the public ZVM REST API.
"""

from __future__ import annotations

from zvm import enums
from zvm.api.validate import ENUM_KEYWORD
from zvm.models import ROLES as USER_ROLES


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def array_of(name: str) -> dict:
    return {"type": "array", "items": ref(name)}


def string(description: str = "", *, nullable: bool = False, **kw) -> dict:
    out: dict = {"type": "string", **kw}
    if nullable:
        out["nullable"] = True
    if description:
        out["description"] = description
    return out


def integer(description: str = "", *, nullable: bool = False, **kw) -> dict:
    out: dict = {"type": "integer", **kw}
    if nullable:
        out["nullable"] = True
    if description:
        out["description"] = description
    return out


def number(description: str = "", *, nullable: bool = False) -> dict:
    out: dict = {"type": "number"}
    if nullable:
        out["nullable"] = True
    if description:
        out["description"] = description
    return out


def boolean(description: str = "") -> dict:
    return {"type": "boolean", **({"description": description} if description else {})}


def obj(properties: dict, *, required: list[str] | None = None, closed: bool = False,
        description: str = "", nullable: bool = False) -> dict:
    """``required`` defaults to every property (responses always carry every field)."""
    out: dict = {"type": "object", "properties": properties,
                 "required": list(properties) if required is None else required}
    if closed:
        out["additionalProperties"] = False
    if description:
        out["description"] = description
    if nullable:
        out["nullable"] = True
    return out


def enum(table: type[enums.ZertoEnum], description: str = "", *, nullable: bool = False) -> dict:
    """A Zerto enumeration: answered as its number, taken as the number or the name (any case)."""
    values = ", ".join(f"{int(m)} {m.name}" for m in sorted(table, key=int))
    out: dict = {ENUM_KEYWORD: table.__name__,
                 "description": f"{description + ' ' if description else ''}{table.__name__}: {values} "
                                "(the name, in any case, is taken too)."}
    if nullable:
        out["nullable"] = True
    return out


def date_time(description: str = "", *, nullable: bool = False) -> dict:
    return string(description, nullable=nullable, format="date-time")


IDENT = string(minLength=1, maxLength=255)
BOOT_GROUP_LIST = {"type": "array", "items": ref("VpgSettingsBootGroup"), "maxItems": 64}
BOOT_GROUPS = {"anyOf": [BOOT_GROUP_LIST, obj({"BootGroups": BOOT_GROUP_LIST}, closed=True)],
               "description": "Zerto's {\"BootGroups\": [...]} or the list alone."}
VM_IDENTIFIERS = {"type": "array", "items": IDENT, "minItems": 1, "maxItems": 1024,
                  "description": "Some VMs of the VPG (their VmIdentifier); leave out for all of them."}


def ip_settings(description: str) -> dict:
    """A static IP set through a vSphere guest customization spec when the VM recovers (null: DHCP)."""
    return obj({
        "IpAddress": string(minLength=1, maxLength=64),
        "SubnetMask": string(minLength=1, maxLength=64),
        "Gateway": string(maxLength=64, nullable=True),
        "DnsServers": {"type": "array", "items": string(minLength=1, maxLength=64), "maxItems": 4},
    }, required=["IpAddress", "SubnetMask"], closed=True, description=description, nullable=True)
PRIORITIES = ["Low", "Medium", "High"]
VPG_STATUSES = ["Initializing", "MeetingSLA", "NotMeetingSLA", "RpoNotMeetingSLA", "HistoryNotMeetingSLA",
                "FailingOver", "Moving", "Deleting", "Recovered", "Paused", "Error"]
VPG_SUBSTATUSES = ["None", "InitialSync", "BitmapSync", "DeltaSync", "ReplicationPausedUserInitiated",
                   "WaitingForVras", "ConfiguringVras", "Deleting", "Error", "Testing", "StoppingTest",
                   "FailingOver", "FailingOverBeforeCommit", "FailingOverCommitting", "FailingOverRollingBack",
                   "Moving", "MovingBeforeCommit", "MovingCommitting", "MovingRollingBack", "WaitingForPeer",
                   "NeedsConfiguration", "DisconnectedFromPeer"]
RECOVERY_TYPES = ["FailoverTest", "Failover", "Move"]
RECOVERY_STATES = ["Starting", "Running", "BeforeCommit", "Stopping", "Committing", "RollingBack", "Stopped",
                   "Committed", "RolledBack", "Failed"]
COMMIT_POLICIES = ["Commit", "Rollback", "None"]
SHUTDOWN_POLICIES = ["None", "Shutdown", "ForceShutdown"]
TASK_STATES = ["Pending", "InProgress", "Completed", "Failed"]
VRA_STATES = ["Installing", "Installed", "Uninstalling", "Error"]
ERROR_CODES = ["InvalidRequest", "UnsupportedMediaType", "SessionRequired", "AuthenticationFailed",
               "NotFound", "VpgNotFound", "VraNotFound", "SiteNotFound", "TaskNotFound", "AlertNotFound",
               "EventNotFound", "VmNotFound", "VpgSettingsNotFound", "Conflict", "MethodNotAllowed",
               "Unavailable", "InvalidConfiguration", "Refused", "Corruption", "InternalError",
               "PayloadTooLarge", "NotImplemented", "Interrupted", "PeerUnreachable", "OperationNotFound",
               "NotPermitted", "TooManyAttempts", "UserNotFound", "UriTooLong", "RequestHeaderTooLarge",
               "BadRequest"]
ROLES = list(USER_ROLES)
USER_NAME = string("Letters, digits and . _ @ -", minLength=1, maxLength=128, pattern=r"^[A-Za-z0-9._@-]+$")
PASSWORD = string("At least 8 characters.", minLength=8, maxLength=1024)

COMPONENTS: dict[str, dict] = {
    "Error": obj({
        "Code": string("Stable, machine-readable error name.", enum=ERROR_CODES),
        "Message": string("What went wrong and what to do about it."),
        "Field": string("The request field at fault, when there is one.", nullable=True),
    }),
    "TaskId": string("The task's identifier, a bare JSON string: follow it with GET /v1/tasks/{taskIdentifier}."),
    "Session": obj({
        "User": string(),
        "Role": string(enum=ROLES),
        "CreatedAt": date_time(),
        "LastUsedAt": date_time(),
        "IdleTimeoutInSeconds": integer(),
    }),
    "LocalSite": obj({
        "SiteIdentifier": string(),
        "SiteName": string(),
        "Location": string(),
        "ContactInfo": string(),
        "Version": string(),
        "IpAddress": string("The address peers and VRAs use to reach this ZVM."),
        "Port": integer(),
        "PeerPort": integer(),
        "VCenterUrl": string(),
        "VCenterUuid": string(),
        "InventoryLoadedAt": date_time(nullable=True),
        "IsReplicationToSelfEnabled": boolean(),
    }),
    "PeerSite": obj({
        "SiteIdentifier": string(),
        "PeerSiteName": string(),
        "Location": string(),
        "HostName": string(),
        "Port": integer(),
        "PairingStatus": enum(enums.PairingStatus),
        "PairedAt": date_time(),
        "LastSeenAt": date_time(nullable=True),
        "Version": string(),
    }),
    "PairingToken": obj({"Token": string("Give it to the protected site's ZVM (POST /v1/peersites)."),
                         "ExpiresAt": date_time()}),
    "VirtualizationSite": obj({
        "SiteIdentifier": string(),
        "VirtualizationSiteName": string(),
        "IsLocal": boolean(),
        "InventoryLoadedAt": date_time(nullable=True),
    }),
    "Host": obj({
        "HostIdentifier": string(),
        "VirtualizationHostName": string(),
        "ClusterIdentifier": string(nullable=True),
        "ConnectionState": string(),
        "PowerState": string(),
        "DatastoreIdentifiers": {"type": "array", "items": string()},
        "NetworkIdentifiers": {"type": "array", "items": string()},
    }),
    "HostCluster": obj({"ClusterIdentifier": string(), "VirtualizationClusterName": string()}),
    "Datastore": obj({
        "DatastoreIdentifier": string(),
        "DatastoreName": string(),
        "Type": string(),
        "CapacityInBytes": integer(),
        "FreeSpaceInBytes": integer(),
    }),
    "Network": obj({"NetworkIdentifier": string(), "VirtualizationNetworkName": string(), "Kind": string()}),
    "Folder": obj({"FolderIdentifier": string(), "FolderName": string(),
                   "ParentIdentifier": string(nullable=True), "Path": string()}),
    "VmDisk": obj({"DiskKey": integer(), "Label": string(), "FileName": string(),
                   "DatastoreIdentifier": string(nullable=True), "CapacityInBytes": integer()}),
    "VirtualizationVm": obj({
        "VmIdentifier": string(),
        "VmName": string(),
        "HostIdentifier": string(nullable=True),
        "FolderIdentifier": string(nullable=True),
        "PowerState": string(),
        "ProvisionedStorageInBytes": integer(),
        "Disks": array_of("VmDisk"),
        "VpgIdentifier": string("The VPG protecting it, if any.", nullable=True),
    }),
    "VraNetwork": obj({
        "VraIPConfigurationTypeApi": string(enum=["Dhcp", "Static"]),
        "VraIPAddress": string(maxLength=64),
        "SubnetMask": string(maxLength=64),
        "DefaultGateway": string(maxLength=64),
    }, required=["VraIPConfigurationTypeApi"], closed=True),
    "Vra": obj({
        "VraIdentifier": string(),
        "VraName": string(),
        "SiteIdentifier": string(),
        "HostIdentifier": string(),
        "HostName": string(),
        "VmIdentifier": string(nullable=True),
        "State": enum(enums.VraStatus),
        "Reachable": boolean(),
        "DatastoreIdentifier": string(),
        "NetworkIdentifier": string(),
        "MemoryInGB": integer(),
        "VraNetworkDataApi": ref("VraNetwork"),
        "ControlAddress": string("host:port of the VRA's control service (4005)."),
        "Version": string(),
        "LastSeenAt": date_time(nullable=True),
        "ProtectedVmsCount": integer(),
        "InventoryHostIdentifier": string("The host the site's vCenter inventory has the VRA's VM on; null until "
                                          "the inventory lists it (VRAs are never in the VM lists).", nullable=True),
    }),
    "VraInstall": obj({
        "HostIdentifier": IDENT,
        "DatastoreIdentifier": IDENT,
        "NetworkIdentifier": IDENT,
        "MemoryInGB": integer(minimum=1, maximum=16),
        "VraNetworkDataApi": ref("VraNetwork"),
    }, required=["HostIdentifier", "DatastoreIdentifier", "NetworkIdentifier"], closed=True),
    # --- vpgSettings
    "VpgSettingsBasic": obj({
        "Name": string(minLength=1, maxLength=255, pattern=r"\S"),
        "ProtectedSiteIdentifier": string("This site (read-only).", nullable=True, maxLength=255),
        "RecoverySiteIdentifier": string(nullable=True, maxLength=255),
        "RpoInSeconds": integer("Alert when the actual RPO exceeds this.", minimum=10, maximum=86400),
        "JournalHistoryInHours": integer(minimum=1, maximum=720),
        "Priority": enum(enums.VpgPriority),
        "UseWanCompression": boolean(),
        "TestIntervalInMinutes": integer("Not supported: only null.", nullable=True),
        "ServiceProfileIdentifier": string("Not supported: only null.", nullable=True),
        "ZorgIdentifier": string("Not supported: only null.", nullable=True),
    }, required=[], closed=True),
    "VpgSettingsJournalLimitation": obj({
        "HardLimitInMB": integer("0: no limit.", minimum=0, maximum=2**40),
        "WarningThresholdInMB": integer("0: no warning.", minimum=0, maximum=2**40),
        "HardLimitInPercent": integer("Not supported: only null or 0.", nullable=True),
        "WarningThresholdInPercent": integer("Not supported: only null or 0.", nullable=True),
    }, required=[], closed=True),
    "VpgSettingsJournal": obj({
        "DatastoreIdentifier": string(nullable=True, maxLength=255),
        "Limitation": ref("VpgSettingsJournalLimitation"),
        "DatastoreClusterIdentifier": string("Not supported: only null.", nullable=True),
        "HardLimitInMB": integer("The same as Limitation.HardLimitInMB (this API's older form).", minimum=0,
                                 maximum=2**40),
        "WarningThresholdInMB": integer("The same as Limitation.WarningThresholdInMB (older form).", minimum=0,
                                        maximum=2**40),
    }, required=[], closed=True),
    "VpgSettingsRecovery": obj({
        "DefaultHostIdentifier": string(nullable=True, maxLength=255),
        "DefaultHostClusterIdentifier": string(nullable=True, maxLength=255),
        "DefaultDatastoreIdentifier": string(nullable=True, maxLength=255),
        "DefaultFolderIdentifier": string(nullable=True, maxLength=255),
        "DefaultDatastoreClusterIdentifier": string("Not supported: only null.", nullable=True),
        "ResourcePoolIdentifier": string("Not supported: only null.", nullable=True),
    }, required=[], closed=True),
    "VpgSettingsNetwork": obj({
        "Hypervisor": obj({"DefaultNetworkIdentifier": string(nullable=True, maxLength=255)}, closed=True,
                          nullable=True),
        "VCD": {"description": "Not supported: only null.", "nullable": True, "type": "object"},
        "PublicCloud": {"description": "Not supported: only null.", "nullable": True, "type": "object"},
    }, required=[], closed=True),
    "VpgSettingsNetworks": obj({
        "Failover": ref("VpgSettingsNetwork"),
        "FailoverTest": ref("VpgSettingsNetwork"),
        "FailoverNetworkIdentifier": string("The same as Failover.Hypervisor.DefaultNetworkIdentifier (this API's "
                                            "older form).", nullable=True, maxLength=255),
        "FailoverTestNetworkIdentifier": string("The same as FailoverTest.Hypervisor.DefaultNetworkIdentifier "
                                                "(older form).", nullable=True, maxLength=255),
    }, required=[], closed=True),
    "VpgSettingsBootGroup": obj({
        "Name": string(minLength=1, maxLength=255),
        "BootDelayInSeconds": integer(minimum=0, maximum=3600),
        "BootGroupIdentifier": string("The group's name (boot groups are named here).", nullable=True),
    }, required=["Name", "BootDelayInSeconds"], closed=True),
    "VpgSettingsNic": obj({
        "NicIdentifier": string("The NIC, e.g. 'Network adapter 1' (its order on the recovered VM).",
                                minLength=1, maxLength=255),
        "FailoverIp": ip_settings("Failover and move; null: DHCP."),
        "FailoverTestIp": ip_settings("Failover test; null: DHCP."),
    }, required=["NicIdentifier"], closed=True),
    "VpgSettingsVm": obj({
        "VmIdentifier": IDENT,
        "BootGroupName": string(nullable=True, maxLength=255),
        "BootGroupIdentifier": string("The boot group's name (the same as BootGroupName).", nullable=True,
                                      maxLength=255),
        "Nics": {"type": "array", "items": ref("VpgSettingsNic"), "maxItems": 10,
                 "description": "Re-IP of the recovered VM's NICs, in order."},
        "Recovery": {"description": "Not supported (per-VM recovery settings): only null.", "nullable": True,
                     "type": "object"},
        "Journal": {"description": "Not supported (per-VM journal): only null.", "nullable": True,
                    "type": "object"},
        "Volumes": {"description": "Not supported (per-volume settings): only null or empty.", "nullable": True,
                    "type": "array"},
    }, required=["VmIdentifier"], closed=True),
    "VpgSettingsInput": obj({
        "Basic": ref("VpgSettingsBasic"),
        "Journal": ref("VpgSettingsJournal"),
        "Recovery": ref("VpgSettingsRecovery"),
        "Networks": ref("VpgSettingsNetworks"),
        "BootGroups": BOOT_GROUPS,
        "Vms": {"type": "array", "items": ref("VpgSettingsVm"), "maxItems": 1024},
        "VpgSettingsIdentifier": string("Read-only.", nullable=True),
        "VpgIdentifier": string("Read-only.", nullable=True),
        "CreatedBy": string("Read-only.", nullable=True),
        "CreatedAt": string("Read-only.", nullable=True),
        "Scripting": {"description": "Not supported (pre/post-recovery scripts): only null commands.",
                      "nullable": True, "type": "object"},
        "Backup": {"description": "Not supported: only null.", "nullable": True, "type": "object"},
        "LongTermRetention": {"description": "Not supported: only null.", "nullable": True, "type": "object"},
        "Protected": {"description": "Not supported: only null.", "nullable": True, "type": "object"},
    }, required=[], closed=True),
    "VpgSettings": obj({
        "VpgSettingsIdentifier": string(),
        "VpgIdentifier": string("The VPG this draft edits; null for a new VPG.", nullable=True),
        "CreatedBy": string(),
        "CreatedAt": date_time(),
        "Basic": ref("VpgSettingsBasic"),
        "Journal": ref("VpgSettingsJournal"),
        "Recovery": ref("VpgSettingsRecovery"),
        "Networks": ref("VpgSettingsNetworks"),
        "BootGroups": obj({"BootGroups": array_of("VpgSettingsBootGroup")}),
        "Vms": array_of("VpgSettingsVm"),
        "Scripting": {"nullable": True, "type": "object"},
    }),
    "VpgSettingsCreate": obj({
        "VpgIdentifier": string("Edit this VPG; leave out to create a new one.", minLength=1, maxLength=255),
    }, required=[], closed=True),
    # --- VPGs
    "VpgVolume": obj({"VolumeIdentifier": string(), "DiskKey": integer(), "FileName": string(),
                      "ProvisionedSizeInBytes": integer(), "RecoveryDatastoreIdentifier": string(nullable=True)}),
    "Vpg": obj({
        "VpgIdentifier": string(),
        "VpgName": string(),
        "Status": enum(enums.VpgStatus),
        "SubStatus": enum(enums.VpgSubStatus),
        "Priority": enum(enums.VpgPriority),
        "ProtectedSite": obj({"SiteIdentifier": string(), "SiteName": string()}),
        "RecoverySite": obj({"SiteIdentifier": string(), "SiteName": string()}),
        "VmsCount": integer(),
        "ConfiguredRpoSeconds": integer(),
        "ActualRPO": integer("Seconds; null until the first checkpoint.", nullable=True),
        "ThroughputInMB": number(),
        "IOPs": integer(),
        "ProvisionedStorageInMB": integer(),
        "JournalUsedStorageMb": number(),
        "HistoryStatusApi": obj({"ActualHistoryInMinutes": integer(), "ConfiguredHistoryInMinutes": integer()}),
        "JournalHardLimitInMB": integer(),
        "JournalWarningThresholdInMB": integer(),
        "UseWanCompression": boolean(),
        "IsPaused": boolean(),
        "LastCheckpointAt": date_time(nullable=True),
        "CreatedAt": date_time(),
    }),
    "VpgDelete": obj({
        "KeepRecoveryVolumes": boolean("Leave the replica disks on the recovery datastore."),
        "Force": boolean("Delete even if the VRAs cannot be reached."),
    }, required=[], closed=True),
    "Checkpoint": obj({
        "CheckpointIdentifier": string(),
        "VpgIdentifier": string(),
        "TimeStamp": date_time(),
        "Tag": string(nullable=True),
        "IsConsistent": boolean(),
    }),
    "CheckpointCreate": obj({"CheckpointName": string(minLength=1, maxLength=255)}, closed=True),
    "ProtectedVm": obj({
        "VmIdentifier": string(),
        "VmName": string(),
        "VpgIdentifier": string(),
        "VpgName": string(),
        "Status": enum(enums.VpgStatus),
        "SubStatus": enum(enums.VpgSubStatus),
        "Priority": enum(enums.VpgPriority),
        "ActualRPO": integer(nullable=True),
        "ProtectedSite": obj({"SiteIdentifier": string(), "SiteName": string()}),
        "RecoverySite": obj({"SiteIdentifier": string(), "SiteName": string()}),
        "BootGroupName": string(),
        "ProvisionedStorageInMB": integer(),
        "Volumes": array_of("VpgVolume"),
    }),
    # --- recovery operations
    "FailoverTestInput": obj({
        "CheckpointIdentifier": string("The checkpoint to test; leave out for the newest.", nullable=True,
                                       minLength=1, maxLength=255),
        "VmIdentifiers": VM_IDENTIFIERS,
        "ScratchLimitInMB": integer("What the test VMs may write in all (scratch); past it the test is stopped "
                                    "with an alert. 0: no limit. Default: the journal's hard limit (an "
                                    "addition).", minimum=0, maximum=2**40),
    }, required=[], closed=True),
    "FailoverTestStopInput": obj({
        "FailoverTestSuccess": boolean("The test's result as you judged it (default true)."),
        "FailoverTestSummary": string("Notes kept with the test's result.", maxLength=4000, nullable=True),
    }, required=[], closed=True),
    "FailoverInput": obj({
        "CheckpointIdentifier": string("The checkpoint to recover to; leave out for the newest.", nullable=True,
                                       minLength=1, maxLength=255),
        "CommitPolicy": enum(enums.CommitPolicy, "After the VMs are up: Commit or Rollback once "
                             "TimeToWaitBeforeShutdownInSec passed, or None (wait for FailoverCommit or "
                             "FailoverRollback; the default)."),
        "TimeToWaitBeforeShutdownInSec": integer("How long the failover waits before commit before the commit "
                                                 "policy applies (default 3600).", minimum=0, maximum=86400),
        "ShutdownPolicy": enum(enums.ShutdownPolicy, "The source VMs, when their site answers: None (left as "
                               "they are), Shutdown (graceful; the failover fails if one is not off in time), "
                               "ForceShutdown (graceful, then powered off after ShutdownTimeoutInSeconds)."),
        "ShutdownTimeoutInSeconds": integer("How long a graceful shutdown may take (an addition; default 300).",
                                            minimum=1, maximum=86400),
        "ReverseProtection": boolean("On commit, protect the recovered VMs back to the original site."),
        "VmIdentifiers": VM_IDENTIFIERS,
        "CommitPolicyTimeoutInSeconds": integer("The same as TimeToWaitBeforeShutdownInSec (this API's older "
                                                "name).", minimum=0, maximum=86400),
    }, required=[], closed=True),
    "FailoverCommitInput": obj({
        "IsReverseProtection": boolean("Protect the recovered VMs back to the original site (default: as "
                                       "ordered). Their source VMs then leave the original vCenter's inventory "
                                       "(their disks become the replicas); without it they stay there, powered "
                                       "off."),
        "ReverseProtection": boolean("The same as IsReverseProtection."),
        "KeepSourceVms": boolean("Not supported: only false (the source VMs are kept powered off without "
                                 "reverse protection, removed with it)."),
    }, required=[], closed=True),
    "MoveInput": obj({
        "CommitPolicy": enum(enums.CommitPolicy, "After the VMs are up: Commit (default) or Rollback once "
                             "CommitPolicyTimeout passed, or None."),
        "CommitPolicyTimeout": integer("Seconds before commit before the commit policy applies (default 0).",
                                       minimum=0, maximum=86400),
        "ForceShutdown": boolean("Power the source VMs off when a graceful shutdown takes longer than the "
                                 "timeout (default true)."),
        "ShutdownTimeoutInSeconds": integer("How long a graceful shutdown may take (an addition).", minimum=1,
                                            maximum=86400),
        "ReverseProtection": boolean("On commit, protect the moved VMs back to the original site (default true)."),
        "KeepSourceVms": boolean("Not supported: only false."),
        "ContinueOnPreScriptFailure": boolean("Not supported: only false (no pre-recovery scripts run)."),
        "CommitPolicyTimeoutInSeconds": integer("The same as CommitPolicyTimeout (this API's older name).",
                                                minimum=0, maximum=86400),
    }, required=[], closed=True),
    "RecoveryDisk": obj({"VolumeIdentifier": string(), "Export": string(nullable=True),
                         "Uri": string("The NBD URI the recovered VM's disk is served at (before commit).",
                                       nullable=True),
                         "File": string("The replica volume: the VM's disk after a commit.", nullable=True)}),
    "RecoveryVm": obj({"SourceVmIdentifier": string(), "VmName": string(),
                       "RecoveryVmIdentifier": string(nullable=True), "BootGroupName": string(),
                       "PoweredOn": boolean(), "Disks": array_of("RecoveryDisk")}),
    "RecoveryReport": obj({
        "OperationIdentifier": string(),
        "VpgIdentifier": string(),
        "VpgName": string(),
        "Type": string(enum=RECOVERY_TYPES),
        "State": string(enum=RECOVERY_STATES),
        "Result": string("Succeeded, Failed, ScratchLimit (test); Committed, RolledBack, Failed (failover, move)."),
        "Summary": string(),
        "CheckpointIdentifier": string(nullable=True),
        "CheckpointTime": date_time(nullable=True),
        "InitiatedBy": string(),
        "StartedAt": date_time(),
        "ReadyAt": date_time("Every VM powered on with its disks served.", nullable=True),
        "EndedAt": date_time(nullable=True),
        "RtoInSeconds": number("From the order to every VM up.", nullable=True),
        "DurationInSeconds": number(nullable=True),
        "PhasesInSeconds": {"type": "object", "additionalProperties": {"type": "number"}},
        "CommitDeadline": date_time(nullable=True),
        "WaitingForPeer": string("The protected site's part still to do (it did not answer), or empty."),
        "ProtectedSiteIdentifier": string(),
        "RecoverySiteIdentifier": string(),
        "TaskIdentifier": string(nullable=True),
        "Vms": array_of("RecoveryVm"),
    }),
    # --- tasks, alerts, events
    "Task": obj({
        "TaskIdentifier": string(),
        "Type": enum(enums.TaskType),
        "Status": obj({"State": enum(enums.TaskState), "Progress": integer(minimum=0, maximum=100)}),
        "Step": string("What the task is doing, or why it stopped."),
        "InitiatedBy": string(),
        "Created": date_time(),
        "Started": date_time(nullable=True),
        "Completed": date_time(nullable=True),
        "RelatedEntities": obj({"Vpgs": {"type": "array", "items": string()},
                                "Vras": {"type": "array", "items": string()},
                                "Sites": {"type": "array", "items": string()}}),
        "Result": {"type": "object", "description": "What the task produced (identifiers)."},
        "Error": obj({"Code": string(), "Message": string()}, nullable=True),
        "CompleteReason": string("Why a failed task failed; empty otherwise."),
        "IsCancellable": boolean("Tasks cannot be cancelled here."),
    }),
    "Alert": obj({
        "AlertIdentifier": string(),
        "Code": string(),
        "Level": enum(enums.AlertLevel),
        "Entity": enum(enums.AlertEntity),
        "EntityIdentifier": string(),
        "Description": string(),
        "TurnedOn": date_time(),
        "LastUpdated": date_time(),
        "ClearedAt": date_time(nullable=True),
        "IsActive": boolean(),
        "IsDismissed": boolean(),
    }),
    "Event": obj({
        "EventIdentifier": string(),
        "EventType": enum(enums.EventType, "Zerto's event type; Unknown (0) for this product's own operations."),
        "EventKind": string("The operation, e.g. CreateVpg, PauseVpg, InstallVra, Login (an addition)."),
        "Category": string(),
        "User": string(),
        "Description": string(),
        "EntityIdentifier": string(),
        "TaskIdentifier": string(nullable=True),
        "Result": string(enum=["InProgress", "Succeeded", "Failed", "Refused"]),
        "Detail": string(),
        "ClientAddress": string("Where the request came from, when one did."),
        "Started": date_time(),
        "Completed": date_time(nullable=True),
    }),
    "User": obj({
        "UserName": string(),
        "Role": string(enum=ROLES),
        "Enabled": boolean(),
        "CreatedAt": date_time(),
        "UpdatedAt": date_time(nullable=True),
        "ActiveSessions": integer(),
    }),
    "UserCreate": obj({
        "UserName": USER_NAME,
        "Password": PASSWORD,
        "Role": string("viewer: read only; operator: also failover tests, failover, move, checkpoints, pause "
                       "and resume; admin: everything.", enum=ROLES),
    }, closed=True),
    "UserUpdate": obj({
        "Role": string(enum=ROLES),
        "Enabled": boolean("false: the user cannot log in and its sessions end."),
    }, required=[], closed=True),
    "PasswordReset": obj({"Password": PASSWORD}, closed=True),
}
