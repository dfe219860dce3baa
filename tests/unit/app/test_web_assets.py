"""The page's files: vendored libraries as the manifest pins them, licenses kept, all shipped in the wheel."""

from __future__ import annotations

import importlib.util
import json
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[3]
PACKAGE = ROOT / "app" / "gorkheavy"
STATIC = PACKAGE / "web" / "static"


def _vendor_script() -> object:
    spec = importlib.util.spec_from_file_location("vendor_web", ROOT / "scripts" / "vendor_web.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vendored_files_are_the_pinned_npm_releases_with_their_licenses() -> None:
    script = _vendor_script()
    assert script.check() == []  # type: ignore[attr-defined]
    manifest = json.loads((STATIC / "vendor" / "MANIFEST.json").read_text())
    for entry in manifest["packages"]:
        assert entry["version"].count(".") == 2
        assert entry["version"][0].isdigit()
        assert entry["origin"].startswith("npm registry")
        assert any("LICENSE" in target for target in entry["files"]), entry["name"]
    on_disk = {
        p.relative_to(STATIC / "vendor").as_posix() for p in (STATIC / "vendor").rglob("*") if p.is_file()
    }
    listed = {t for entry in manifest["packages"] for t in entry["files"]} | {"MANIFEST.json"}
    assert on_disk == listed  # nothing vendored without a record


def test_the_page_names_only_files_the_server_has() -> None:
    page = (STATIC / "index.html").read_text()
    for name in (
        "ui/app.js",
        "ui/style.css",
        "ui/vendor/preact/preact.mjs",
        "ui/vendor/chart.js/chart.umd.min.js",
    ):
        assert name in page
        assert (STATIC / name.removeprefix("ui/")).is_file()
    assert "http://" not in page
    assert "https://" not in page


def test_every_static_file_is_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "gorkheavy"
    ]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(PACKAGE)
            assert any(
                relative.match(pattern) and len(relative.parts) == len(Path(pattern).parts)
                for pattern in patterns
            ), relative
