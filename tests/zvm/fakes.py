"""Test doubles injected through the ZVM's seams, and a small API client over Flask's test client."""

from __future__ import annotations

import base64
import json

from zvm import models as m
from zvm.vcenter.inventory import (
    Cluster,
    Datacenter,
    Datastore,
    Disk,
    Folder,
    Host,
    Inventory,
    Network,
    VirtualMachine,
)


def fake_inventory(hosts: int = 3, vms: int = 6) -> Inventory:
    inv = Inventory(vcenter_uuid="fake-vc-uuid")
    inv.datacenters["datacenter-2"] = Datacenter("datacenter-2", "DC0")
    inv.clusters["domain-c7"] = Cluster("domain-c7", "Cluster0", "datacenter-2",
                                        [f"host-{i}" for i in range(hosts)])
    for ds in ("datastore-1", "datastore-2"):
        inv.datastores[ds] = Datastore(ds, f"DS-{ds[-1]}", "VMFS", 1 << 40, 1 << 39, f"ds:///{ds}/", None)
    for net in ("network-1", "dvportgroup-1"):
        inv.networks[net] = Network(net, f"Net-{net}", "Network")
    for i in range(hosts):
        inv.hosts[f"host-{i}"] = Host(f"host-{i}", f"esx{i}.lab", "domain-c7", "datacenter-2", "connected",
                                      "poweredOn", ["datastore-1", "datastore-2"], ["network-1", "dvportgroup-1"])
    inv.folders["group-v3"] = Folder("group-v3", "vm", None, "/DC0/vm")
    inv.folders["group-v9"] = Folder("group-v9", "Finance", "group-v3", "/DC0/vm/Finance")
    for i in range(vms):
        disks = [Disk(2000 + d, f"Hard disk {d + 1}", f"[DS-1] vm{i}/vm{i}_{d}.vmdk", "datastore-1",
                      (d + 1) << 30, None, None, None) for d in range(1 + i % 2)]
        inv.vms[f"vm-{i}"] = VirtualMachine(f"vm-{i}", f"vm{i}", f"uuid-{i}", f"iuuid-{i}", f"host-{i % hosts}",
                                            "poweredOn", "group-v9" if i < 2 else "group-v3",
                                            ["network-1"], disks)
    return inv


class FakeVCenter:
    """Stands for zvm.vcenter.VCenter: serves ``inventory`` (mutable) and records calls."""

    def __init__(self, inventory: Inventory | None = None):
        self.inv = inventory or fake_inventory()
        self.closed = 0

    def inventory(self) -> Inventory:
        return self.inv

    def close(self) -> None:
        self.closed += 1


class Response:
    def __init__(self, resp):
        self.status = resp.status_code
        self.headers = resp.headers
        self.json = json.loads(resp.data) if resp.data.strip() else None

    def __repr__(self) -> str:
        return f"<{self.status} {self.json}>"


class ApiClient:
    """Flask test client with the session header set; paths are relative to /v1."""

    def __init__(self, app, token: str | None):
        self.app = app
        self.client = app.test_client()
        self.token = token

    @classmethod
    def login(cls, app, user: str = "admin", password: str | None = None) -> ApiClient:
        from tests.zvm.conftest import ADMIN_PASSWORD

        client = cls(app, None)
        resp = client.client.post("/v1/session/add", headers=basic(user, password or ADMIN_PASSWORD))
        assert resp.status_code == 200, resp.data
        client.token = resp.headers["x-zerto-session"]
        return client

    def call(self, method: str, path: str, json_body=None, headers=None, **kw) -> Response:
        h = {"x-zerto-session": self.token} if self.token else {}
        h.update(headers or {})
        if json_body is not None:
            kw["json"] = json_body
        return Response(self.client.open("/v1" + path, method=method, headers=h, **kw))

    def get(self, path, **kw):
        return self.call("GET", path, **kw)

    def post(self, path, json_body=None, **kw):
        return self.call("POST", path, json_body, **kw)

    def put(self, path, json_body=None, **kw):
        return self.call("PUT", path, json_body, **kw)

    def delete(self, path, json_body=None, **kw):
        return self.call("DELETE", path, json_body, **kw)

    @property
    def zvm(self):
        return self.app.extensions["zvm"]

    def run_tasks(self) -> int:
        return self.zvm.tasks.run_once()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def db_snapshot() -> dict:
    """Every row of every table but the audit trail (and the revision counter its events bump) and the
    failed-login counts (a refused login counts, on purpose), to show that a refused request changed nothing."""
    out = {}
    for model in m.ALL_MODELS:
        if model in (m.Event, m.Revision, m.LoginFailure):
            continue
        rows = list(model.select().order_by(model._meta.primary_key).dicts())
        if model is m.Session:
            for r in rows:
                r.pop("last_used")
        out[model.__name__] = rows
    return out


class WsgiAdapter:
    """A requests transport adapter that calls a WSGI app in-process (the client's HTTP seam in tests)."""

    def __init__(self, app):
        import requests.adapters

        class _Adapter(requests.adapters.BaseAdapter):
            def send(self, request, **kwargs):
                import requests
                from werkzeug.test import Client

                client = Client(app)
                url = requests.utils.urlparse(request.url)
                path = url.path + (f"?{url.query}" if url.query else "")
                resp = client.open(path, method=request.method, headers=dict(request.headers),
                                   data=request.body)
                out = requests.Response()
                out.status_code = resp.status_code
                out.headers = requests.structures.CaseInsensitiveDict(resp.headers)
                out._content = resp.get_data()
                if out.headers.get("Content-Encoding") == "gzip":  # as urllib3 does on a real connection
                    import gzip

                    out._content = gzip.decompress(out._content)
                out.url = request.url
                out.request = request
                return out

            def close(self):
                pass

        self.adapter = _Adapter()


def wsgi_client(app, url: str = "http://zvm.test"):
    """A zvm.client.ZvmClient whose HTTP goes straight to ``app``."""
    import requests

    from zvm.client import ZvmClient

    session = requests.Session()
    session.mount(url, WsgiAdapter(app).adapter)
    return ZvmClient(url, session=session)


class FakeVraControl:
    """Stands for zvm.vra_control.GrpcVraControl: records what the ZVM asks, answers from ``statuses``
    ({vra_id: {vpg: {role: status}}}; a vra_id missing means it does not answer) and ``checkpoints``."""

    def __init__(self):
        self.calls: list[tuple] = []
        self.statuses: dict[str, dict] = {}
        self.checkpoints: dict[str, list] = {}

    def configure_protect(self, vra, plan):
        self.calls.append(("protect", vra.vra_id, plan))
        return "ok"

    def configure_recover(self, vra, plan):
        self.calls.append(("recover", vra.vra_id, plan))
        return "ok"

    def remove_vpg(self, vra, vpg):
        self.calls.append(("remove", vra.vra_id, vpg))
        return "ok"

    def checkpoint(self, vra, vpg, tag, wait_durable=True):
        from zvm.vra_control import CheckpointEntry

        self.calls.append(("checkpoint", vra.vra_id, vpg, tag))
        return CheckpointEntry(f"cp-{len(self.calls)}", 1_700_000_000.0, tag or None, True)

    def list_checkpoints(self, vra, vpg):
        return list(self.checkpoints.get(vpg, []))

    def pause(self, vra, vpg, paused):
        self.calls.append(("pause" if paused else "resume", vra.vra_id, vpg))
        return "ok"

    def force_sync(self, vra, vpg, volumes=None):
        self.calls.append(("forcesync", vra.vra_id, vpg))
        return "ok"

    def status(self, vra, timeout=None):
        from zvm.errors import TransientError

        if vra.vra_id not in self.statuses:
            raise TransientError(f"VRA {vra.vra_id} does not answer")
        return self.statuses[vra.vra_id]
