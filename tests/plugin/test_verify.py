"""Verifying a checkpoint from the web UI (Debian's chromium, Playwright, real labs): the VPG's action
"Verify checkpoint" opens a modal with the checkpoint picker; its button is disabled at once when pressed.
The plugin lab's ZVMs have no guest runner: the API refuses and the modal shows the refusal naming the
setting (``guest_runner``), and nothing was queued. A lab whose first VM runs the real guest (`zvm lab up
--guests 1`, its ZVMs with guest_runner = "local"): the check of the newest consistent checkpoint boots
it, the task is followed to its end in the modal, and the checkpoint's tag "Tested at ...: passed" shows in
the modal and on the timeline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.plugin.conftest import PluginLab, login, running_lab, shoot
from zvm.enums import TaskType


def test_verify_is_refused_without_a_guest_runner_naming_the_setting(plugin_lab, page):
    site = plugin_lab.recovery  # the check runs where the VPG recovers (its journal is there)
    vpg = plugin_lab.vpg["identifier"]
    before = site.api().get(f"{site.url}/v1/tasks?vpgIdentifier={vpg}&limit=500", timeout=30).json()
    login(page, site, f"/plugin/?poll=2000#/vpg/{vpg}")
    expect(page.get_by_test_id("vpg-name")).to_have_text("lab-vpg")
    page.get_by_test_id("actions-lab-vpg").select_option("verify")
    modal = page.get_by_test_id("modal")
    expect(modal.get_by_role("dialog")).to_be_visible()
    expect(modal.get_by_test_id("cp-mode")).to_have_value("latest")
    submit = modal.get_by_test_id("submit")
    expect(submit).to_be_enabled()
    # pressed: disabled and busy in the click's own turn of the event loop (a second click does nothing)
    assert submit.evaluate("b => { b.click(); return b.disabled && b.getAttribute('aria-busy') === 'true'; }")
    error = modal.get_by_test_id("form-error")
    expect(error).to_contain_text("guest_runner", timeout=30_000)
    expect(error).to_contain_text("no guest runner is configured")
    expect(submit).to_be_enabled()  # refused: it may be pressed again once the setting is made
    expect(modal.get_by_test_id("task")).to_have_count(0)
    shoot(page, "verify-refused")
    modal.get_by_role("button", name="Cancel").click()
    expect(modal).to_have_count(0)
    after = site.api().get(f"{site.url}/v1/tasks?vpgIdentifier={vpg}&limit=500", timeout=30).json()
    assert len(after) == len(before), "a refused check queued a task"


@pytest.fixture(scope="module")
def guest_lab(tmp_path_factory) -> Iterator[PluginLab]:
    """A lab of its own whose first VM runs the real guest (`zvm lab up --guests 1`): its ZVMs have the guest
    runner (guest_runner = "local") and the guests' reports, so a check boots it and judges it."""
    lab_dir = tmp_path_factory.mktemp("verify-lab") / "lab"
    with running_lab(lab_dir, "--disk-mb", "64", "--guests", "1", "--rate", "64k") as lab:
        reports = lab_dir / "guests"
        (name,) = json.loads((reports / "guests.json").read_text())
        log = reports / f"{name}-reports.log"
        deadline = time.monotonic() + 180
        while not (log.exists() and log.read_text().count("ZVR-COMMIT") >= 10):  # the guest's application runs
            assert time.monotonic() < deadline, "the protected guest committed nothing in 180 s"
            time.sleep(1)
        yield lab


def test_verify_the_newest_checkpoint_boots_the_guest_and_tags_it_passed(guest_lab, page):
    site = guest_lab.recovery
    vpg = guest_lab.vpg["identifier"]
    login(page, site, f"/plugin/?poll=2000#/vpg/{vpg}")
    expect(page.get_by_test_id("vpg-name")).to_have_text(guest_lab.vpg["name"])
    page.get_by_test_id(f"actions-{guest_lab.vpg['name']}").select_option("verify")
    modal = page.get_by_test_id("modal")
    submit = modal.get_by_test_id("submit")
    expect(submit).to_be_enabled()
    assert submit.evaluate("b => { b.click(); return b.disabled && b.getAttribute('aria-busy') === 'true'; }")
    expect(modal.get_by_test_id("task")).to_be_visible(timeout=30_000)  # the task, followed in the modal
    ended = modal.locator("[data-testid=task-done], [data-testid=task-failed], [data-testid=form-error] .alert")
    expect(ended.first).to_be_visible(timeout=240_000)
    assert modal.get_by_test_id("task-done").count() == 1, ended.first.inner_text()
    expect(submit).to_be_disabled()  # done for good: it cannot order the check twice
    verdict = modal.get_by_test_id("verify-tag")
    expect(verdict).to_contain_text("Tested at ")
    expect(verdict).to_contain_text(": passed")
    shoot(page, "verify-passed")
    modal.get_by_role("button", name="Close").click()
    expect(modal).to_have_count(0)
    tested = page.locator("[data-testid=timeline] text[data-tag$=': passed']")
    expect(tested).to_have_count(1, timeout=30_000)
    assert tested.get_attribute("data-tag").startswith("Tested at ")
    tasks = site.api().get(f"{site.url}/v1/tasks?vpgIdentifier={vpg}&limit=50", timeout=30).json()
    checks = [t for t in tasks if t["Type"] == TaskType.VerifyCheckpoint]
    assert len(checks) == 1 and checks[0]["InitiatedBy"] == "admin", checks


def test_a_check_that_finds_a_lost_transaction_shows_failed_with_its_alert(guest_lab, page):
    """The guest's reports say a transaction was acknowledged before the checkpoint that the image does not
    hold (a line added to the reports log, as if the application had acknowledged it and the write was lost):
    the check boots the guest, which finds it missing; the modal shows the failed task and the checkpoint's
    "Tested at ...: FAILED" tag, and the dashboard the VpgCheckpointVerifyFailed alert."""
    site = guest_lab.recovery
    vpg = guest_lab.vpg["identifier"]
    reports = Path(guest_lab.state["lab_dir"]) / "guests"
    (name,) = json.loads((reports / "guests.json").read_text())
    with open(reports / f"{name}-reports.log", "a") as log:  # the follower appends too (O_APPEND: whole lines)
        log.write(f"{time.time() - 30:.3f} ZVR-COMMIT 99999999 lost\n")
    login(page, site, f"/plugin/?poll=2000#/vpg/{vpg}")
    expect(page.get_by_test_id("vpg-name")).to_have_text(guest_lab.vpg["name"])
    page.get_by_test_id(f"actions-{guest_lab.vpg['name']}").select_option("verify")
    modal = page.get_by_test_id("modal")
    modal.get_by_test_id("submit").click()
    failed = modal.get_by_test_id("task-failed")
    expect(failed).to_be_visible(timeout=240_000)
    expect(failed).to_contain_text("FAILED its recoverability check")
    expect(failed).to_contain_text(name)
    assert modal.get_by_test_id("task-done").count() == 0
    verdict = modal.get_by_test_id("verify-tag")
    expect(verdict).to_contain_text(": FAILED")
    assert "alert-danger" in verdict.get_attribute("class")
    shoot(page, "verify-failed")
    modal.get_by_role("button", name="Close").click()
    alerts = site.api().get(f"{site.url}/v1/alerts?isActive=true", timeout=30).json()
    assert [a["EntityIdentifier"] for a in alerts if a["Code"] == "VpgCheckpointVerifyFailed"] == [vpg], alerts
    page.goto(f"{site.url}/plugin/?poll=2000#/")
    expect(page.get_by_test_id("alerts-table")).to_contain_text("FAILED", timeout=30_000)
