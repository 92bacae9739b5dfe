"""The API's JSON schemas: request bodies are checked against them, responses are built to them, and the
OpenAPI document publishes them (``components.schemas``). Field names follow the public ZVM REST API.
"""

from __future__ import annotations

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


def date_time(description: str = "", *, nullable: bool = False) -> dict:
    return string(description, nullable=nullable, format="date-time")


IDENT = string(minLength=1, maxLength=255)


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
    "TaskId": obj({"TaskIdentifier": string("Follow it with GET /v1/tasks/{TaskIdentifier}.")}),
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
        "PairingStatus": string(enum=["Paired", "Unreachable", "Unpairing"]),
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
        "State": string(enum=VRA_STATES),
        "Reachable": boolean(),
        "DatastoreIdentifier": string(),
        "NetworkIdentifier": string(),
        "MemoryInGB": integer(),
        "VraNetworkDataApi": ref("VraNetwork"),
        "ControlAddress": string("host:port of the VRA's control service (4005)."),
        "Version": string(),
        "LastSeenAt": date_time(nullable=True),
        "ProtectedVmsCount": integer(),
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
        "RecoverySiteIdentifier": string(nullable=True, maxLength=255),
        "RpoInSeconds": integer("Alert when the actual RPO exceeds this.", minimum=10, maximum=86400),
        "JournalHistoryInHours": integer(minimum=1, maximum=720),
        "Priority": string(enum=PRIORITIES),
        "UseWanCompression": boolean(),
    }, closed=True),
    "VpgSettingsJournal": obj({
        "HardLimitInMB": integer("0: no limit.", minimum=0, maximum=2**40),
        "WarningThresholdInMB": integer("0: no warning.", minimum=0, maximum=2**40),
        "DatastoreIdentifier": string(nullable=True, maxLength=255),
    }, closed=True),
    "VpgSettingsRecovery": obj({
        "DefaultHostIdentifier": string(nullable=True, maxLength=255),
        "DefaultHostClusterIdentifier": string(nullable=True, maxLength=255),
        "DefaultDatastoreIdentifier": string(nullable=True, maxLength=255),
        "DefaultFolderIdentifier": string(nullable=True, maxLength=255),
    }, closed=True),
    "VpgSettingsNetworks": obj({
        "FailoverNetworkIdentifier": string(nullable=True, maxLength=255),
        "FailoverTestNetworkIdentifier": string(nullable=True, maxLength=255),
    }, closed=True),
    "VpgSettingsBootGroup": obj({
        "Name": string(minLength=1, maxLength=255),
        "BootDelayInSeconds": integer(minimum=0, maximum=3600),
    }, closed=True),
    "VpgSettingsNic": obj({
        "NicIdentifier": string("The NIC, e.g. 'Network adapter 1' (its order on the recovered VM).",
                                minLength=1, maxLength=255),
        "FailoverIp": ip_settings("Failover and move; null: DHCP."),
        "FailoverTestIp": ip_settings("Failover test; null: DHCP."),
    }, required=["NicIdentifier"], closed=True),
    "VpgSettingsVm": obj({
        "VmIdentifier": IDENT,
        "BootGroupName": string(nullable=True, maxLength=255),
        "Nics": {"type": "array", "items": ref("VpgSettingsNic"), "maxItems": 10,
                 "description": "Re-IP of the recovered VM's NICs, in order."},
    }, required=["VmIdentifier"], closed=True),
    "VpgSettingsInput": obj({
        "Basic": ref("VpgSettingsBasic"),
        "Journal": ref("VpgSettingsJournal"),
        "Recovery": ref("VpgSettingsRecovery"),
        "Networks": ref("VpgSettingsNetworks"),
        "BootGroups": {"type": "array", "items": ref("VpgSettingsBootGroup"), "maxItems": 64},
        "Vms": {"type": "array", "items": ref("VpgSettingsVm"), "maxItems": 1024},
    }, closed=True),
    "VpgSettings": obj({
        "VpgSettingsIdentifier": string(),
        "VpgIdentifier": string("The VPG this draft edits; null for a new VPG.", nullable=True),
        "CreatedBy": string(),
        "CreatedAt": date_time(),
        "Basic": ref("VpgSettingsBasic"),
        "Journal": ref("VpgSettingsJournal"),
        "Recovery": ref("VpgSettingsRecovery"),
        "Networks": ref("VpgSettingsNetworks"),
        "BootGroups": array_of("VpgSettingsBootGroup"),
        "Vms": array_of("VpgSettingsVm"),
    }),
    "VpgSettingsCreate": obj({
        "VpgIdentifier": string("Edit this VPG; leave out to create a new one.", minLength=1, maxLength=255),
    }, required=[], closed=True),
    "VpgSettingsId": obj({"VpgSettingsIdentifier": string()}),
    # --- VPGs
    "VpgVolume": obj({"VolumeIdentifier": string(), "DiskKey": integer(), "FileName": string(),
                      "ProvisionedSizeInBytes": integer(), "RecoveryDatastoreIdentifier": string(nullable=True)}),
    "Vpg": obj({
        "VpgIdentifier": string(),
        "VpgName": string(),
        "Status": string(enum=VPG_STATUSES),
        "SubStatus": string(enum=VPG_SUBSTATUSES),
        "Priority": string(enum=PRIORITIES),
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
        "Status": string(enum=VPG_STATUSES),
        "SubStatus": string(enum=VPG_SUBSTATUSES),
        "Priority": string(enum=PRIORITIES),
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
        "ScratchLimitInMB": integer("What the test VMs may write in all (scratch); past it the test is stopped "
                                    "with an alert. 0: no limit. Default: the journal's hard limit.",
                                    minimum=0, maximum=2**40),
    }, required=[], closed=True),
    "FailoverTestStopInput": obj({
        "FailoverTestSuccess": boolean("The test's result as you judged it (default true)."),
        "FailoverTestSummary": string("Notes kept with the test's result.", maxLength=4000),
    }, required=[], closed=True),
    "FailoverInput": obj({
        "CheckpointIdentifier": string("The checkpoint to recover to; leave out for the newest.", nullable=True,
                                       minLength=1, maxLength=255),
        "ShutdownPolicy": string("The source VMs, when their site answers: None (left as they are), Shutdown "
                                 "(graceful; the failover fails if one is not off in time), ForceShutdown "
                                 "(graceful, then powered off after the timeout).", enum=SHUTDOWN_POLICIES),
        "ShutdownTimeoutInSeconds": integer(minimum=1, maximum=86400),
        "CommitPolicy": string("After the VMs are up: Commit or Rollback once the timeout passed, or None "
                               "(wait for FailoverCommit or FailoverRollback).", enum=COMMIT_POLICIES),
        "CommitPolicyTimeoutInSeconds": integer(minimum=0, maximum=86400),
        "ReverseProtection": boolean("On commit, protect the recovered VMs back to the original site."),
    }, required=[], closed=True),
    "FailoverCommitInput": obj({
        "ReverseProtection": boolean("Protect the recovered VMs back to the original site (default: as ordered). "
                                     "Their source VMs then leave the original vCenter's inventory (their disks "
                                     "become the replicas); without it they stay there, powered off."),
    }, required=[], closed=True),
    "MoveInput": obj({
        "CommitPolicy": string("After the VMs are up: Commit (default) or Rollback once the timeout passed, or "
                               "None.", enum=COMMIT_POLICIES),
        "CommitPolicyTimeoutInSeconds": integer(minimum=0, maximum=86400),
        "ForceShutdown": boolean("Power the source VMs off when a graceful shutdown takes longer than the "
                                 "timeout (default true)."),
        "ShutdownTimeoutInSeconds": integer(minimum=1, maximum=86400),
        "ReverseProtection": boolean("On commit, protect the moved VMs back to the original site (default true)."),
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
        "Type": string(),
        "Status": obj({"State": string(enum=TASK_STATES), "Progress": integer(minimum=0, maximum=100)}),
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
    }),
    "Alert": obj({
        "AlertIdentifier": string(),
        "Code": string(),
        "Level": string(enum=["Warning", "Error"]),
        "Entity": string(enum=["Vpg", "Vra", "Site"]),
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
        "EventType": string("The operation, e.g. CreateVpg, PauseVpg, InstallVra, Login."),
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
