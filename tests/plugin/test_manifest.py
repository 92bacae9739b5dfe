"""plugin.json as the vSphere Client reads it: every key it names is defined in en-US, every icon is a cell of
the sprite sheets the build draws, every view is a page the ZVM serves, every menu action opens a modal."""

from __future__ import annotations

import json
import re
from pathlib import Path

from zvm.api.plugin import VIEWS

ROOT = Path(__file__).resolve().parents[2] / "vsphere_plugin"
MANIFEST = json.loads((ROOT / "plugin.json").read_text())


def _walk(node):
    if isinstance(node, dict):
        yield node
        for v in node.values():
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def test_every_key_is_translated_in_en_us():
    i18n = MANIFEST["definitions"]["i18n"]
    assert i18n["locales"][0] == "en-US"
    keys = {v for d in _walk(MANIFEST) for k, v in d.items() if k in ("nameKey", "labelKey", "titleKey")}
    assert keys and keys <= set(i18n["definitions"])
    for key, texts in i18n["definitions"].items():
        assert set(texts) == set(i18n["locales"]), key
        assert texts["en-US"].strip(), key


def test_icons_are_cells_of_the_built_sprite_sheets():
    sheet = MANIFEST["definitions"]["iconSpriteSheet"]
    assert sheet["uri"] == "assets/sprites.svg"
    assert sheet["themeOverrides"]["dark"]["uri"] == "assets/sprites-dark.svg"
    order = re.findall(r'\["([\w-]+)", "[\w-]+"\]', (ROOT / "src" / "icons.js").read_text())
    assert sheet["definitions"] == {name: {"x": 0, "y": 32 * i} for i, name in enumerate(order)}
    used = {d["icon"]["name"] for d in _walk(MANIFEST) if isinstance(d.get("icon"), dict)}
    assert used <= set(order)


def test_views_and_actions():
    assert MANIFEST["manifestVersion"] == "1.2.0"
    assert {"vsphere.client", "vcenter.server"} <= set(MANIFEST["requirements"])
    uris = [d["uri"] for d in _walk(MANIFEST) if isinstance(d.get("uri"), str) and d["uri"].startswith("views/")]
    assert uris and {u.split("?")[0].split("/")[1] for u in uris} <= VIEWS
    assert MANIFEST["global"]["view"]["uri"] == "views/dashboard"
    for kind in ("VirtualMachine", "HostSystem", "ClusterComputeResource", "Datacenter"):
        obj = MANIFEST["objects"][kind]
        assert obj["summary"]["view"]["uri"] and obj["monitor"]["views"] and obj["configure"]["views"], kind
        for action in obj["menu"]["actions"]:
            assert action["trigger"]["type"] == "modal" and action["trigger"]["uri"].startswith("views/modal?wizard=")
    protect = MANIFEST["objects"]["VirtualMachine"]["menu"]["actions"][0]
    assert protect["acceptsMultipleTargets"] is True  # several VMs at once
