"""Dirty map sidecars: saved on clean stop, a generation marker while running, a crash detected."""

from __future__ import annotations

import json

from vra_appliance.iofilter import dirty_store


def test_first_start_then_clean_stop_then_restart(tmp_path):
    vol = tmp_path / "v.img"
    vol.write_bytes(b"")
    rec = dirty_store.open_volume("v", vol, 4096)
    assert rec.first_start and not rec.unclean and rec.generation == 1
    assert json.loads(dirty_store.sidecar_for(vol).read_text())["state"] == "running"
    dirty_store.save_clean(rec, 4096, {"extents": [[0, 512]], "over_coverage": 7}, unclean=False)
    again = dirty_store.open_volume("v", vol, 4096)
    assert not again.first_start and not again.unclean and again.generation == 2
    assert again.state == {"extents": [[0, 512]], "over_coverage": 7}


def test_a_running_marker_at_start_means_a_crash(tmp_path):
    vol = tmp_path / "v.img"
    dirty_store.open_volume("v", vol, 4096)  # and the process dies: no save_clean
    rec = dirty_store.open_volume("v", vol, 4096)
    assert rec.unclean and rec.generation == 2 and rec.state == {}
    # the crash is remembered across a clean stop until someone resyncs
    dirty_store.save_clean(rec, 4096, {"extents": []}, unclean=True)
    assert dirty_store.open_volume("v", vol, 4096).unclean


def test_unreadable_foreign_or_resized_sidecars_are_unclean(tmp_path):
    vol = tmp_path / "v.img"
    side = dirty_store.sidecar_for(vol)
    side.write_text("{not json")
    assert dirty_store.open_volume("v", vol, 4096).unclean
    rec = dirty_store.open_volume("v", vol, 4096)
    dirty_store.save_clean(rec, 4096, {"extents": [[0, 1]]}, unclean=False)
    assert dirty_store.open_volume("other", vol, 4096).unclean  # another volume's file
    rec = dirty_store.open_volume("v", vol, 4096)
    dirty_store.save_clean(rec, 4096, {"extents": [[0, 1]]}, unclean=False)
    assert dirty_store.open_volume("v", vol, 8192).unclean  # the volume was resized
