"""The compiled hot path (switchboard/_native.py) is used only while it matches its source."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from switchboard import _native


def manifest_for_current_sources() -> dict[str, Any]:
    files = {m: f"{m}{_native._tag()}" for m in _native.MODULES}
    return {
        "ext_suffix": _native._tag(),
        "modules": list(_native.MODULES),
        "files": files,
        "sources": {m: _native._digest(m) for m in _native.dependencies()},
    }


def test_dependencies_follow_the_imports_of_the_compiled_modules() -> None:
    deps = _native.dependencies()
    assert set(_native.MODULES) <= set(deps)
    # proxy -> sip.fastpath -> sip.message: an edit two imports away still counts
    assert "switchboard.sip.message" in deps
    assert "switchboard.router.service" not in deps  # not read by the compiled code


def test_a_build_of_the_current_sources_is_accepted() -> None:
    assert _native._check(manifest_for_current_sources()) is None


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (
            lambda m: m["sources"].update({"switchboard.sip.message": "0" * 64}),
            "message.py changed",
        ),
        (lambda m: m["sources"].pop("switchboard.sip.uri"), "sources changed"),
        (lambda m: m.update(ext_suffix=".cpython-312-x86_64-linux-gnu.so"), "another Python"),
        (lambda m: m.update(modules=["switchboard.sip.fastpath"]), "another module list"),
    ],
)
def test_a_stale_or_foreign_build_is_refused_with_the_reason(
    change: Callable[[dict[str, Any]], object], why: str
) -> None:
    manifest = manifest_for_current_sources()
    change(manifest)
    reason = _native._check(manifest)
    assert reason is not None and why in reason


def test_the_switch_off_and_a_missing_build_mean_source(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(_native, "STATUS", _native.STATUS)
    monkeypatch.setattr(_native.sys, "meta_path", [])
    monkeypatch.setenv("SWITCHBOARD_NATIVE", "0")
    assert _native.install() == "pure Python (SWITCHBOARD_NATIVE=0)"
    monkeypatch.delenv("SWITCHBOARD_NATIVE")
    monkeypatch.setattr(_native, "MANIFEST", tmp_path / "manifest.json")
    assert _native.install().startswith("pure Python (no compiled build")
    (tmp_path / "manifest.json").write_text(json.dumps(manifest_for_current_sources()))
    monkeypatch.setattr(_native, "BUILD_DIR", tmp_path)
    assert _native.install() == "pure Python (compiled files missing (run `make native`))"
    assert _native.sys.meta_path == []  # nothing installed in front of the source


def test_the_running_modules_are_the_ones_the_status_names() -> None:
    proxy = importlib.import_module("switchboard.router.proxy")
    compiled = not str(proxy.__file__).endswith(".py")
    assert compiled == _native.STATUS.startswith("compiled"), (_native.STATUS, proxy.__file__)
