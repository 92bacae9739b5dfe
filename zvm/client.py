"""``zvm.client``: the Python client of the ZVM REST API, for automation scripts.

    from zvm.client import ZvmClient

    with ZvmClient("https://zvm.example:9080", verify="/etc/zvm/ca.pem").login("admin", password) as zvm:
        task = zvm.create_vpg("web", vms=["vm-42", "vm-43"], recovery_site=site_id,
                              recovery_host="host-12", recovery_datastore="datastore-3")
        zvm.wait_for_task(task)

Every method is one API call (or a few, for the conveniences ``create_vpg`` and ``wait_for_task``) and
returns the API's JSON (dicts with the public ZVM field names; enumerations as Zerto's numbers: compare them
with the tables of zvm.enums, e.g. ``vpg["Status"] == VpgStatus.MeetingSLA``; long operations return the
task id, a string). Filters take an enumeration's number, name or member. Errors are the product's exceptions
(zvm.errors) carrying the server's stable ``code`` and the ``field`` at fault: ``ValidationError`` (400),
``SessionError``/``AuthenticationError`` (401), ``NotFoundError`` (404), ``ConflictError`` (409),
``TransientError`` (5xx, or the ZVM cannot be reached: retry). A task that ends ``Failed`` raises
``TaskFailedError`` from ``wait_for_task``.

The server is verified: by the system's CAs, by a CA bundle (``verify="/path/ca.pem"``, e.g. the site CA
``DATA_DIR/pki/ca.pem`` that signs the certificate a ZVM makes for itself), or by pinning the SHA-256
fingerprint of its certificate (``fingerprint="AB:CD:..."``, printed by ``zvm serve``). ``verify=False``
(no verification) is for labs only.

The HTTP seam is a ``requests.Session`` given to the constructor (tests mount an adapter on it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime

import requests
from requests.adapters import HTTPAdapter

from zvm.enums import TaskState, TaskType
from zvm.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PermanentError,
    SessionError,
    TooManyAttemptsError,
    TransientError,
    UnsupportedMediaTypeError,
    ValidationError,
    ZvmError,
)

SESSION_HEADER = "x-zerto-session"
_BY_STATUS = {400: ValidationError, 403: AuthorizationError, 404: NotFoundError, 409: ConflictError,
              415: UnsupportedMediaTypeError}


def _int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


# flat field -> where Zerto's settings document keeps it (outer, inner or None, key)
_NESTED = {"HardLimitInMB": ("Limitation", None, "HardLimitInMB"),
           "WarningThresholdInMB": ("Limitation", None, "WarningThresholdInMB"),
           "FailoverNetworkIdentifier": ("Failover", "Hypervisor", "DefaultNetworkIdentifier"),
           "FailoverTestNetworkIdentifier": ("FailoverTest", "Hypervisor", "DefaultNetworkIdentifier")}


class TaskFailedError(PermanentError):
    """A task ended Failed; ``task`` is its JSON, ``code`` the task's error code."""

    def __init__(self, task: dict):
        error = task.get("Error") or {}
        super().__init__(f"task {TaskType.parse(task['Type']).name} {task['TaskIdentifier']} failed: "
                         f"{error.get('Message', '')}",
                         code=error.get("Code") or "TaskFailed")
        self.task = task


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("give an aware datetime (with a time zone), e.g. datetime.now(UTC)")
    return value.isoformat()


def _params(**kw) -> dict:
    out = {}
    for key, value in kw.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, datetime):
            value = _iso(value)
        out[key] = value
    return out


def normalize_fingerprint(fingerprint: str) -> str:
    """A SHA-256 fingerprint as 64 lowercase hex digits (colons and case as people write them are fine)."""
    hexed = fingerprint.replace(":", "").replace(" ", "").lower()
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ConfigError(f"fingerprint {fingerprint!r}: give the SHA-256 of the certificate, 64 hex digits "
                         "(colons allowed), as 'zvm serve' prints it")
    return hexed


class PinnedAdapter(HTTPAdapter):
    """HTTPS accepted only from a server whose certificate has this SHA-256 fingerprint (whoever signed it)."""

    def __init__(self, fingerprint: str, **kw):
        self.fingerprint = normalize_fingerprint(fingerprint)
        super().__init__(**kw)

    def init_poolmanager(self, *args, **kwargs):
        kwargs["assert_fingerprint"] = self.fingerprint
        super().init_poolmanager(*args, **kwargs)


class ZvmClient:
    def __init__(self, url: str, *, verify: bool | str = True, fingerprint: str | None = None,
                 timeout: float = 60.0, session: requests.Session | None = None):
        """``url``: ``https://host:9080`` (the /v1 prefix is added). ``verify``: True (system CAs), a CA
        bundle path, or False (labs only). ``fingerprint``: the server certificate's SHA-256 (hex, colons
        allowed): then that certificate alone is accepted, whoever signed it."""
        self.url = url.rstrip("/")
        if self.url.endswith("/v1"):
            self.url = self.url[:-3]
        self.timeout = timeout
        self.http = session or requests.Session()
        # Given with every request: a Session's own verify gives way to REQUESTS_CA_BUNDLE in the environment.
        self.verify = verify
        if fingerprint:
            # The pin replaces chain verification (the certificate may be signed by a CA the client lacks).
            self.http.mount("https://", PinnedAdapter(fingerprint))
            self.verify = False
        self.token: str | None = None

    # --- plumbing -------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json=None, params: dict | None = None, auth=None):
        """One API call; returns the decoded JSON (None for 204)."""
        headers = {SESSION_HEADER: self.token} if self.token else {}
        try:
            resp = self.http.request(method, f"{self.url}/v1{path}", json=json, params=params, auth=auth,
                                     headers=headers, timeout=self.timeout, verify=self.verify)
        except requests.exceptions.SSLError as exc:
            # a TransientError as any failure to reach the ZVM, with its own code: a retry will not help until
            # the trust is given (the CLI exits 1 for it, not 4)
            raise TransientError(f"the ZVM at {self.url} answered with a certificate this client does not "
                                 f"trust ({exc}): give its site CA (--ca-file / verify=) or pin its fingerprint",
                                 code="CertificateRefused") from exc
        except requests.RequestException as exc:
            raise TransientError(f"the ZVM at {self.url} cannot be reached ({exc}): check the address and "
                                 "that it runs, then retry") from exc
        if resp.status_code >= 400:
            raise self._error(resp)
        self._last_response = resp
        if resp.status_code == 204 or not resp.content.strip():
            return None
        return resp.json()

    def _error(self, resp: requests.Response) -> ZvmError:
        try:
            body = resp.json()
            code, message, field = body.get("Code"), body.get("Message", ""), body.get("Field")
        except ValueError:
            code, message, field = None, resp.text[:200], None
        if resp.status_code == 401:
            cls = SessionError if code == "SessionRequired" else AuthenticationError
        elif resp.status_code == 429:
            return TooManyAttemptsError(message or "HTTP 429", code=code,
                                        retry_after=_int(resp.headers.get("Retry-After"), 1))
        elif resp.status_code >= 500:
            cls = TransientError
        else:
            cls = _BY_STATUS.get(resp.status_code, PermanentError)
        return cls(message or f"HTTP {resp.status_code}", code=code, field=field)

    # --- session --------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> ZvmClient:
        self.token = None
        self.request("POST", "/session/add", auth=(username, password))
        self.token = self._last_response.headers[SESSION_HEADER]
        return self

    def logout(self) -> None:
        if self.token:
            try:
                self.request("DELETE", "/session")
            finally:
                self.token = None

    def session(self) -> dict:
        return self.request("GET", "/session")

    def close(self) -> None:
        try:
            self.logout()
        except ZvmError:
            pass
        self.http.close()

    def __enter__(self) -> ZvmClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def openapi(self) -> dict:
        return self.request("GET", "/openapi.json")

    # --- users (admin) --------------------------------------------------------------------------------

    def users(self) -> list[dict]:
        return self.request("GET", "/users")

    def user(self, username: str) -> dict:
        return self.request("GET", f"/users/{username}")

    def create_user(self, username: str, password: str, role: str = "viewer") -> dict:
        return self.request("POST", "/users", json={"UserName": username, "Password": password, "Role": role})

    def update_user(self, username: str, *, role: str | None = None, enabled: bool | None = None) -> dict:
        body = {k: v for k, v in (("Role", role), ("Enabled", enabled)) if v is not None}
        return self.request("PUT", f"/users/{username}", json=body)

    def reset_password(self, username: str, password: str) -> dict:
        return self.request("POST", f"/users/{username}/resetPassword", json={"Password": password})

    # --- sites and inventory --------------------------------------------------------------------------

    def local_site(self) -> dict:
        return self.request("GET", "/localsite")

    def peer_sites(self) -> list[dict]:
        return self.request("GET", "/peersites")

    def peer_site(self, site_identifier: str) -> dict:
        return self.request("GET", f"/peersites/{site_identifier}")

    def generate_pairing_token(self, expiration_minutes: int | None = None) -> dict:
        body = {"ExpirationInMinutes": expiration_minutes} if expiration_minutes else None
        return self.request("POST", "/peersites/generatetoken", json=body)

    def pair(self, host_name: str, token: str, port: int = 9081) -> str:
        """Pair with the ZVM at host_name:port; returns the task id."""
        return self.request("POST", "/peersites", json={"HostName": host_name, "Port": port,
                                                        "Token": token})

    def unpair(self, site_identifier: str) -> str:
        return self.request("DELETE", f"/peersites/{site_identifier}")

    def virtualization_sites(self) -> list[dict]:
        return self.request("GET", "/virtualizationsites")

    def hosts(self, site_identifier: str) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/hosts")

    def host_clusters(self, site_identifier: str) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/hostclusters")

    def datastores(self, site_identifier: str) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/datastores")

    def networks(self, site_identifier: str) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/networks")

    def folders(self, site_identifier: str) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/folders")

    def vms(self, site_identifier: str, *, folder: str | None = None, host: str | None = None,
            name: str | None = None) -> list[dict]:
        return self.request("GET", f"/virtualizationsites/{site_identifier}/vms",
                            params=_params(folderIdentifier=folder, hostIdentifier=host, vmName=name))

    # --- VRAs -----------------------------------------------------------------------------------------

    def vras(self, *, state: str | None = None, host: str | None = None) -> list[dict]:
        return self.request("GET", "/vras", params=_params(state=state, hostIdentifier=host))

    def vra(self, vra_identifier: str) -> dict:
        return self.request("GET", f"/vras/{vra_identifier}")

    def install_vra(self, host: str, datastore: str, network: str, *, memory_gb: int | None = None,
                    ip_address: str | None = None, subnet_mask: str | None = None,
                    gateway: str | None = None) -> str:
        """DHCP unless ``ip_address`` (and ``subnet_mask``) are given. Returns the task id."""
        body: dict = {"HostIdentifier": host, "DatastoreIdentifier": datastore, "NetworkIdentifier": network}
        if memory_gb:
            body["MemoryInGB"] = memory_gb
        if ip_address:
            body["VraNetworkDataApi"] = {"VraIPConfigurationTypeApi": "Static", "VraIPAddress": ip_address,
                                         "SubnetMask": subnet_mask or "", "DefaultGateway": gateway or ""}
        return self.request("POST", "/vras", json=body)

    def uninstall_vra(self, vra_identifier: str) -> str:
        return self.request("DELETE", f"/vras/{vra_identifier}")

    # --- vpgSettings ------------------------------------------------------------------------------------

    def create_vpg_settings(self, vpg_identifier: str | None = None) -> str:
        body = {"VpgIdentifier": vpg_identifier} if vpg_identifier else None
        return self.request("POST", "/vpgSettings", json=body)

    def vpg_settings(self, settings_identifier: str) -> dict:
        return self.request("GET", f"/vpgSettings/{settings_identifier}")

    def put_vpg_settings(self, settings_identifier: str, settings: dict) -> dict:
        keys = ("Basic", "Journal", "Recovery", "Networks", "BootGroups", "Vms")
        return self.request("PUT", f"/vpgSettings/{settings_identifier}", json={k: settings[k] for k in keys})

    def update_vpg_settings(self, settings_identifier: str, section: str, **fields) -> dict:
        """Change some fields of one section (basic, journal, recovery, networks), keeping the others."""
        path = f"/vpgSettings/{settings_identifier}/{section.lower()}"
        current = self.request("GET", path)
        for name, (outer, inner, key) in _NESTED.items():  # the older flat names, into Zerto's nesting
            if name in fields and outer in current:
                place = current[outer] if inner is None else current[outer].setdefault(inner, {}) or {}
                if inner is not None:
                    current[outer][inner] = place
                place[key] = fields.pop(name)
        return self.request("PUT", path, json={**current, **fields})

    def set_boot_groups(self, settings_identifier: str, groups: list[dict]) -> list[dict]:
        return self.request("PUT", f"/vpgSettings/{settings_identifier}/bootgroups", json=groups)

    def add_vm_to_settings(self, settings_identifier: str, vm: str, boot_group: str | None = None) -> list:
        return self.request("POST", f"/vpgSettings/{settings_identifier}/vms",
                            json={"VmIdentifier": vm, "BootGroupName": boot_group})

    def remove_vm_from_settings(self, settings_identifier: str, vm: str) -> list:
        return self.request("DELETE", f"/vpgSettings/{settings_identifier}/vms/{vm}")

    def commit_vpg_settings(self, settings_identifier: str) -> str:
        return self.request("POST", f"/vpgSettings/{settings_identifier}/commit")

    def delete_vpg_settings(self, settings_identifier: str) -> None:
        self.request("DELETE", f"/vpgSettings/{settings_identifier}")

    def create_vpg(self, name: str, vms: Iterable[str], *, recovery_site: str, recovery_datastore: str,
                   recovery_host: str | None = None, recovery_cluster: str | None = None,
                   recovery_folder: str | None = None, failover_network: str | None = None,
                   test_network: str | None = None, rpo_seconds: int = 300, history_hours: int = 24,
                   priority: str = "Medium", wan_compression: bool = True, journal_hard_limit_mb: int = 0,
                   journal_warning_mb: int = 0) -> str:
        """Draft, fill and commit a new VPG in one go; returns the commit's task id. A refused commit
        discards the draft and raises the refusal."""
        sid = self.create_vpg_settings()
        try:
            doc = self.vpg_settings(sid)
            doc["Basic"].update(Name=name, RecoverySiteIdentifier=recovery_site, RpoInSeconds=rpo_seconds,
                                JournalHistoryInHours=history_hours, Priority=priority,
                                UseWanCompression=wan_compression)
            doc["Journal"]["Limitation"].update(HardLimitInMB=journal_hard_limit_mb,
                                                WarningThresholdInMB=journal_warning_mb)
            doc["Recovery"].update(DefaultHostIdentifier=recovery_host, DefaultHostClusterIdentifier=recovery_cluster,
                                   DefaultDatastoreIdentifier=recovery_datastore,
                                   DefaultFolderIdentifier=recovery_folder)
            doc["Networks"]["Failover"]["Hypervisor"] = {"DefaultNetworkIdentifier": failover_network}
            doc["Networks"]["FailoverTest"]["Hypervisor"] = {"DefaultNetworkIdentifier": test_network}
            doc["Vms"] = [{"VmIdentifier": vm} for vm in vms]
            self.put_vpg_settings(sid, doc)
            return self.commit_vpg_settings(sid)
        except ZvmError:
            try:
                self.delete_vpg_settings(sid)
            except ZvmError:
                pass
            raise

    # --- VPGs -----------------------------------------------------------------------------------------

    def vpgs(self, *, name: str | None = None, status: str | None = None, sub_status: str | None = None,
             priority: str | None = None, protected_site: str | None = None,
             recovery_site: str | None = None) -> list[dict]:
        return self.request("GET", "/vpgs", params=_params(
            name=name, status=status, subStatus=sub_status, priority=priority,
            protectedSiteIdentifier=protected_site, recoverySiteIdentifier=recovery_site))

    def vpg(self, vpg_identifier: str) -> dict:
        return self.request("GET", f"/vpgs/{vpg_identifier}")

    def vpg_by_name(self, name: str) -> dict:
        found = self.vpgs(name=name)
        if not found:
            raise NotFoundError(f"no VPG named {name!r}", code="VpgNotFound")
        return found[0]

    def delete_vpg(self, vpg_identifier: str, *, keep_recovery_volumes: bool = False, force: bool = False) -> str:
        return self.request("DELETE", f"/vpgs/{vpg_identifier}", json={
            "KeepRecoveryVolumes": keep_recovery_volumes, "Force": force})

    def pause_vpg(self, vpg_identifier: str) -> str:
        return self.request("POST", f"/vpgs/{vpg_identifier}/pause")

    def resume_vpg(self, vpg_identifier: str) -> str:
        return self.request("POST", f"/vpgs/{vpg_identifier}/resume")

    def force_sync_vpg(self, vpg_identifier: str) -> str:
        return self.request("POST", f"/vpgs/{vpg_identifier}/forcesync")

    def checkpoints(self, vpg_identifier: str, *, start: datetime | str | None = None,
                    end: datetime | str | None = None, tagged_only: bool | None = None,
                    consistent_only: bool | None = None, limit: int | None = None) -> list[dict]:
        return self.request("GET", f"/vpgs/{vpg_identifier}/checkpoints", params=_params(
            startDate=start, endDate=end, taggedOnly=tagged_only, consistentOnly=consistent_only, limit=limit))

    def take_checkpoint(self, vpg_identifier: str, tag: str) -> str:
        return self.request("POST", f"/vpgs/{vpg_identifier}/checkpoints",
                            json={"CheckpointName": tag})

    def protected_vms(self, *, vpg: str | None = None, name: str | None = None,
                      status: str | None = None) -> list[dict]:
        return self.request("GET", "/vms", params=_params(vpgIdentifier=vpg, vmName=name, status=status))

    def protected_vm(self, vm_identifier: str) -> dict:
        return self.request("GET", f"/vms/{vm_identifier}")

    # --- recovery operations (ordered on the ZVM of the site the VPG recovers to) -----------------------

    @staticmethod
    def _body(**fields) -> dict | None:
        body = {k: v for k, v in fields.items() if v is not None}
        return body or None

    def _action(self, vpg_identifier: str, action: str, body: dict | None = None) -> str:
        return self.request("POST", f"/vpgs/{vpg_identifier}/{action}", json=body)

    def failover_test(self, vpg_identifier: str, *, checkpoint: str | None = None,
                      scratch_limit_mb: int | None = None, vms: Iterable[str] | None = None) -> str:
        """Start a failover test at the checkpoint (the newest when None), of every VM or of ``vms``;
        returns the task."""
        return self._action(vpg_identifier, "failoverTest", self._body(
            CheckpointIdentifier=checkpoint, ScratchLimitInMB=scratch_limit_mb,
            VmIdentifiers=list(vms) if vms is not None else None))

    def failover_test_stop(self, vpg_identifier: str, *, success: bool | None = None,
                           summary: str | None = None) -> str:
        return self._action(vpg_identifier, "failoverTestStop", self._body(
            FailoverTestSuccess=success, FailoverTestSummary=summary))

    def failover(self, vpg_identifier: str, *, checkpoint: str | None = None, shutdown_policy: str | None = None,
                 shutdown_timeout: int | None = None, commit_policy: str | None = None,
                 commit_timeout: int | None = None, reverse_protection: bool | None = None) -> str:
        """Fail over (``shutdown_policy``: None, Shutdown, ForceShutdown; ``commit_policy``: Commit, Rollback,
        None); returns the task, which ends when the VMs are up (before commit)."""
        return self._action(vpg_identifier, "Failover", self._body(
            CheckpointIdentifier=checkpoint, ShutdownPolicy=shutdown_policy, ShutdownTimeoutInSeconds=shutdown_timeout,
            CommitPolicy=commit_policy, TimeToWaitBeforeShutdownInSec=commit_timeout,
            ReverseProtection=reverse_protection))

    def failover_commit(self, vpg_identifier: str, *, reverse_protection: bool | None = None) -> str:
        return self._action(vpg_identifier, "FailoverCommit", self._body(IsReverseProtection=reverse_protection))

    def failover_rollback(self, vpg_identifier: str) -> str:
        return self._action(vpg_identifier, "FailoverRollback")

    def move(self, vpg_identifier: str, *, commit_policy: str | None = None, commit_timeout: int | None = None,
             force_shutdown: bool | None = None, shutdown_timeout: int | None = None,
             reverse_protection: bool | None = None) -> str:
        """Move the VPG (shut down, final checkpoint, recover, commit, reverse protection by default)."""
        return self._action(vpg_identifier, "move", self._body(
            CommitPolicy=commit_policy, CommitPolicyTimeout=commit_timeout, ForceShutdown=force_shutdown,
            ShutdownTimeoutInSeconds=shutdown_timeout, ReverseProtection=reverse_protection))

    def move_commit(self, vpg_identifier: str, *, reverse_protection: bool | None = None) -> str:
        return self._action(vpg_identifier, "moveCommit", self._body(IsReverseProtection=reverse_protection))

    def move_rollback(self, vpg_identifier: str) -> str:
        return self._action(vpg_identifier, "moveRollback")

    def recovery_reports(self, *, vpg: str | None = None, type: str | None = None, state: str | None = None,
                         limit: int | None = None) -> list[dict]:
        return self.request("GET", "/reports/recovery", params=_params(vpgIdentifier=vpg, type=type, state=state,
                                                                       limit=limit))

    def recovery_report(self, operation_identifier: str) -> dict:
        return self.request("GET", f"/reports/recovery/{operation_identifier}")

    # --- tasks, alerts, events --------------------------------------------------------------------------

    def tasks(self, *, state: str | None = None, type: str | None = None, vpg: str | None = None,
              vra: str | None = None, limit: int | None = None) -> list[dict]:
        return self.request("GET", "/tasks", params=_params(state=state, type=type, vpgIdentifier=vpg,
                                                            vraIdentifier=vra, limit=limit))

    def task(self, task_identifier: str) -> dict:
        return self.request("GET", f"/tasks/{task_identifier}")

    def wait_for_task(self, task_identifier: str, *, timeout: float = 900.0, poll: float = 1.0,
                      on_progress=None) -> dict:
        """Poll the task until it ends; returns it when Completed, raises TaskFailedError when Failed and
        TransientError when ``timeout`` passes first. ``on_progress(task)`` is called on each change."""
        deadline = time.monotonic() + timeout
        last = None
        delay = min(0.1, poll)
        while True:
            task = self.task(task_identifier)
            state = (task["Status"]["State"], task["Status"]["Progress"], task["Step"])
            if on_progress is not None and state != last:
                on_progress(task)
            last = state
            if task["Status"]["State"] == TaskState.Completed:
                return task
            if task["Status"]["State"] == TaskState.Failed:
                raise TaskFailedError(task)
            if time.monotonic() >= deadline:
                raise TransientError(f"task {task_identifier} did not end within {timeout:.0f} s (now "
                                     f"{TaskState.parse(task['Status']['State']).name}, "
                                     f"{task['Status']['Progress']} %: {task['Step']})")
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(poll, delay * 2)

    def alerts(self, *, level: str | None = None, entity: str | None = None, entity_identifier: str | None = None,
               code: str | None = None, active: bool | None = None, dismissed: bool | None = None,
               limit: int | None = None) -> list[dict]:
        return self.request("GET", "/alerts", params=_params(
            level=level, entity=entity, entityIdentifier=entity_identifier, code=code, isActive=active,
            isDismissed=dismissed, limit=limit))

    def alert(self, alert_identifier: str) -> dict:
        return self.request("GET", f"/alerts/{alert_identifier}")

    def dismiss_alert(self, alert_identifier: str) -> dict:
        return self.request("POST", f"/alerts/{alert_identifier}/dismiss")

    def undismiss_alert(self, alert_identifier: str) -> dict:
        return self.request("POST", f"/alerts/{alert_identifier}/undismiss")

    def events(self, *, category: str | None = None, event_type: str | None = None, user: str | None = None,
               entity_identifier: str | None = None, result: str | None = None,
               start: datetime | str | None = None, end: datetime | str | None = None,
               limit: int | None = None) -> list[dict]:
        return self.request("GET", "/events", params=_params(
            category=category, eventType=event_type, user=user, entityIdentifier=entity_identifier,
            result=result, startDate=start, endDate=end, limit=limit))

    def event(self, event_identifier: str) -> dict:
        return self.request("GET", f"/events/{event_identifier}")
