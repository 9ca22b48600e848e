"""The vendor registry: every vendor comes through the `eventrelay.vendors` entry points, on
first use; a broken plugin is reported by its entry point name and harms no other vendor."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from eventrelay.worker.errors import InvalidJob
from eventrelay.worker.vendors import (
    BUILTIN_ENTRY_POINTS,
    ENTRY_POINT_GROUP,
    VENDOR_CLASSES,
    broken_vendors,
    get_vendor,
    refresh_vendors,
    vendor_names,
)

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = ["botsi", "gravityfield", "infobip", "vtcdn"]


def test_the_built_ins_register_through_the_entry_point_group_like_any_plugin() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert declared[ENTRY_POINT_GROUP] == BUILTIN_ENTRY_POINTS
    installed = {
        ep.name: ep.value
        for ep in metadata.distribution("eventrelay").entry_points
        if ep.group == ENTRY_POINT_GROUP
    }
    assert installed == BUILTIN_ENTRY_POINTS, "reinstall eventrelay: pip install -e ."
    assert set(BUILTINS) <= set(vendor_names())


def test_importing_the_registry_loads_no_vendor() -> None:
    code = textwrap.dedent(
        """
        import sys
        import eventrelay.worker.vendors as v
        assert not v.VENDOR_CLASSES.loaded, "entry points read at import"
        assert not [m for m in sys.modules if m.startswith("eventrelay.worker.vendors.")
                    and m != "eventrelay.worker.vendors.base"], sorted(sys.modules)
        assert "botsi" in v.VENDOR_CLASSES  # loaded on first use
        assert "eventrelay.worker.vendors.botsi" in sys.modules
        """
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder on sys.path where a test writes installed distributions (dist-info)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    monkeypatch.undo()
    for name in list(sys.modules):
        if name.startswith("plugin_"):
            del sys.modules[name]
    refresh_vendors()


def _install(site: Path, dist: str, entry_points: str, modules: dict[str, str]) -> None:
    info = site / f"{dist}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))


GOOD_VENDOR = """
    from eventrelay.worker.vendors.base import OutboundRequest, Vendor, VendorSettings
    from pydantic import BaseModel
    from pydantic_settings import SettingsConfigDict

    class S(VendorSettings):
        model_config = SettingsConfigDict(env_prefix="{prefix}", extra="ignore")

    class Op(BaseModel):
        pass

    class V(Vendor):
        name = "{name}"
        operations = {{"send_event": Op}}
        settings_class = S

        def build_request(self, operation, payloads):
            return OutboundRequest("POST", "http://127.0.0.1:9/", {{}}, payloads[0])
"""


def test_a_broken_plugin_is_reported_by_name_and_every_other_vendor_loads(
    plugins: Path,
) -> None:
    _install(
        plugins,
        "plugin_pack",
        "\n".join(
            [
                "missing = plugin_missing:Nope",
                "raises = plugin_raises:V",
                "wrongname = plugin_good:V",
                "notavendor = plugin_notvendor:V",
                "good = plugin_good:V",
                "botsi = plugin_taker:V",
            ]
        ),
        {
            "plugin_raises": "raise RuntimeError('plugin bug at import')",
            "plugin_good": GOOD_VENDOR.format(prefix="GOOD_", name="good"),
            "plugin_notvendor": "class V:\n    name = 'notavendor'\n",
            "plugin_taker": GOOD_VENDOR.format(prefix="BOTSI_", name="botsi"),
        },
    )
    refresh_vendors()
    assert set(BUILTINS + ["good"]) <= set(vendor_names())
    broken = broken_vendors()
    assert set(broken) == {"missing", "raises", "wrongname", "notavendor", "botsi"}
    assert "ModuleNotFoundError" in broken["missing"] and "plugin_missing" in broken["missing"]
    assert "plugin bug at import" in broken["raises"]
    assert "'good', not 'wrongname'" in broken["wrongname"]
    assert "not a subclass" in broken["notavendor"]
    assert "taken by eventrelay.worker.vendors.botsi.Botsi" in broken["botsi"]
    assert VENDOR_CLASSES["botsi"].__module__ == "eventrelay.worker.vendors.botsi"
    with pytest.raises(InvalidJob, match="'raises' failed to load .*plugin bug at import"):
        get_vendor("raises")
    assert get_vendor("good").name == "good"


def test_a_vendor_name_that_cannot_name_a_queue_is_refused(plugins: Path) -> None:
    _install(
        plugins,
        "plugin_badname",
        "Bad.Name = plugin_badname:V",
        {"plugin_badname": GOOD_VENDOR.format(prefix="BAD_", name="Bad.Name")},
    )
    refresh_vendors()
    assert "lower case letters" in broken_vendors()["Bad.Name"]


def test_the_stale_install_fallback_lists_the_same_built_ins(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # An editable install made before the entry points existed has none of them.
    monkeypatch.setattr(metadata, "entry_points", lambda group: [])
    refresh_vendors()
    try:
        assert set(BUILTINS) <= set(vendor_names())
        assert "reinstall eventrelay" in caplog.text
    finally:
        monkeypatch.undo()
        refresh_vendors()
