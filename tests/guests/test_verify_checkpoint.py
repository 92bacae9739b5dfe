"""The product's recoverability check (zvm/orchestration/recoverability.py) ordered through the API: a ZVM
whose guest runner is this machine boots a checkpoint of a protected guest from its recovery VRA's session
(real `vra serve`, QEMU, the guest's own checks), tags the checkpoint "Tested at ...: passed", records an
event; a checkpoint whose image holds a damaged database block is tagged FAILED, fails the task and raises
the alert, which a later passing check clears. Without a guest runner the API refuses, naming the setting."""

from __future__ import annotations

import subprocess

from guests.image import FS_BLOCK
from tests.replication.lab import SECRET
from tests.zvm.fakes import ApiClient
from zvm import db as zdb
from zvm import models as m
from zvm.enums import TaskState

from .rows import VM, register_vpg, store_checkpoints
from .site import VOL, VPG, GuestSite

# --- the raw API shapes this test reads: here only (the API's shape change adapts them) ---------------------

def _verify(api: ApiClient, app, checkpoint_id: str) -> dict:
    """Order the check, run it, return the task as GET /tasks/{id} gives it."""
    resp = api.post(f"/vpgs/{VPG}/checkpoints/{checkpoint_id}/verify")
    assert resp.status == 202, resp
    task_id = resp.json["TaskIdentifier"] if isinstance(resp.json, dict) else resp.json
    app.extensions["zvm"].tasks.run_once()
    return api.get(f"/tasks/{task_id}").json


def _state(task: dict) -> str:
    """The task's state as the product names it (the API sends Zerto's number)."""
    return TaskState(task["Status"]["State"]).name


def _tag(api: ApiClient, checkpoint_id: str) -> str:
    (cp,) = [c for c in api.get(f"/vpgs/{VPG}/checkpoints").json if c["CheckpointIdentifier"] == checkpoint_id]
    return cp["Tag"] or ""


def _alerts(api: ApiClient) -> list[str]:
    """The descriptions of the active VpgCheckpointVerifyFailed alerts."""
    return [a["Description"] for a in api.get("/alerts").json
            if a["Code"] == "VpgCheckpointVerifyFailed" and not a.get("ClearedAt")]


def _events(api: ApiClient) -> list[dict]:
    return [e for e in api.get("/events").json if "CheckpointVerified" in str(e)]


# ----------------------------------------------------------------------------------------------------------


def test_a_checkpoint_is_checked_by_the_product_and_a_damaged_one_raises_the_alert(short_tmp, guest_image,
                                                                                   make_app) -> None:
    site = GuestSite(short_tmp, guest_image)
    try:
        site.protect()
        site.wait_streaming()
        guest = site.start_guest(VM)  # its reports log: short_tmp/web-db-reports.log
        guest.ready()
        guest.wait_commits(120)  # past a WAL checkpoint: the rows are in the database file
        acknowledged, good = site.checkpoint(guest, "before-damage")
        guest.kill()

        app = make_app(guest_runner="local", guest_image_dir=str(guest_image.dir),
                       guest_reports_dir=str(short_tmp), vra_pairing_secret=SECRET)
        api = ApiClient.login(app)
        vpg = register_vpg(site)
        store_checkpoints(vpg, site)

        task = _verify(api, app, good.checkpoint_id)
        assert _state(task) == "Completed", task
        (vm,) = task["Result"]["Vms"]
        assert vm["Passed"] and vm["ExpectedTransactions"] >= acknowledged > 0, vm
        assert _tag(api, good.checkpoint_id).startswith("before-damage | Tested at ")
        assert _tag(api, good.checkpoint_id).endswith(": passed")
        assert not _alerts(api)

        # damage one block of the database on the protected volume (through the filter, as a failing disk
        # or a stray write would), then a checkpoint: its image holds the damage
        copy = short_tmp / "source-copy.img"
        subprocess.run(["cp", "--sparse=always", str(site.source), str(copy)], check=True)
        subprocess.run(["e2fsck", "-E", "journal_only", "-p", str(copy)], check=True, capture_output=True)
        blocks = [int(b) for b in subprocess.run(["debugfs", "-R", "blocks /data/app.db", str(copy)],
                                                 capture_output=True, text=True, check=True).stdout.split()]
        victim = blocks[len(blocks) // 2] * FS_BLOCK
        subprocess.run(["qemu-io", "-f", "raw", "-c", f"write -P 0x5a {victim} {FS_BLOCK}", site.filter.uri(VOL)],
                       check=True, capture_output=True)
        _, damaged = site.checkpoint(guest, "damaged")
        store_checkpoints(vpg, site)

        task = _verify(api, app, damaged.checkpoint_id)
        assert _state(task) == "Failed", task
        assert "FAILED its recoverability check" in str(task)
        assert _tag(api, damaged.checkpoint_id).endswith(": FAILED")
        (alert,) = _alerts(api)
        assert damaged.checkpoint_id in alert and "FAILED" in alert
        assert len(_events(api)) == 2

        # a later check that passes clears the alert
        task = _verify(api, app, good.checkpoint_id)
        assert _state(task) == "Completed", task
        assert not _alerts(api)
    finally:
        site.close()


def test_without_a_guest_runner_the_check_is_refused_naming_the_setting(short_tmp, guest_image, make_app) -> None:
    app = make_app()
    api = ApiClient.login(app)
    resp = api.post("/vpgs/any/checkpoints/any/verify")
    assert resp.status == 404  # no such VPG: said first
    with zdb.transaction():
        local = m.Site.get(m.Site.is_local == True)  # noqa: E712
        m.Vpg.create(identifier=VPG, name="guests", protected_site=m.Site.create(name="A"), recovery_site=local)
    resp = api.post(f"/vpgs/{VPG}/checkpoints/cp-1/verify")
    assert resp.status == 409, resp
    assert "no guest runner is configured" in str(resp.json) and "guest_runner" in str(resp.json)

