#!/usr/bin/env python3
"""Vendor the web page's front-end libraries from the npm registry, pinned, with their licenses.

    python scripts/vendor_web.py            # fetch with `npm pack`, write the files and MANIFEST.json
    python scripts/vendor_web.py --check    # the files on disk match MANIFEST.json (sha256), nothing fetched

The page loads nothing from elsewhere at run time: every file below is served by ``gorkheavy serve`` from
``app/gorkheavy/web/static/vendor/``. To update a library, change its version here, run the script, and check
the page (``pytest tests/integration/web``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR = Path(__file__).resolve().parent.parent / "app" / "gorkheavy" / "web" / "static" / "vendor"

# name, exact version, {file in the package: file under vendor/}, license, why it is here
PACKAGES: list[tuple[str, str, dict[str, str], str, str]] = [
    (
        "preact",
        "11.2.0",
        {
            "package/dist/preact.mjs": "preact/preact.mjs",
            "package/hooks/dist/hooks.mjs": "preact/hooks.mjs",
            "package/LICENSE": "preact/LICENSE",
        },
        "MIT",
        "components and state of the page",
    ),
    (
        "htm",
        "3.1.1",
        {"package/dist/htm.mjs": "htm/htm.mjs", "package/LICENSE": "htm/LICENSE"},
        "Apache-2.0",
        "HTML-like templates for preact without a build step",
    ),
    (
        "chart.js",
        "4.6.1",
        {
            "package/dist/chart.umd.min.js": "chart.js/chart.umd.min.js",
            "package/LICENSE.md": "chart.js/LICENSE.md",
        },
        "MIT",
        "the Performance view's charts",
    ),
    (
        "@kurkle/color",
        "0.3.2",
        {"package/LICENSE.md": "chart.js/LICENSE-kurkle-color.md"},
        "MIT",
        "bundled inside chart.umd.min.js (chart.js's one dependency); only its license is copied",
    ),
]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch() -> dict[str, object]:
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, version, files, license_id, purpose in PACKAGES:
            spec = f"{name}@{version}"
            out = subprocess.run(
                ["npm", "pack", spec, "--json", "--pack-destination", tmp],
                check=True,
                capture_output=True,
                text=True,
            )
            info = json.loads(out.stdout)[0]
            with tarfile.open(Path(tmp) / info["filename"]) as tar:
                for source, target in files.items():
                    member = tar.extractfile(source)
                    if member is None:
                        raise SystemExit(f"{spec}: {source} is not a file in the package")
                    dest = VENDOR / target
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(member.read())
            entries.append(
                {
                    "name": name,
                    "version": version,
                    "origin": f"npm registry: npm pack {spec}",
                    "integrity": info["integrity"],
                    "license": license_id,
                    "purpose": purpose,
                    "files": {
                        target: {"from": source.removeprefix("package/"), "sha256": _sha256(VENDOR / target)}
                        for source, target in files.items()
                    },
                }
            )
    return {"packages": entries}


def check() -> list[str]:
    manifest = json.loads((VENDOR / "MANIFEST.json").read_text())
    problems = []
    for entry in manifest["packages"]:
        for target, info in entry["files"].items():
            path = VENDOR / target
            if not path.is_file():
                problems.append(f"{target}: missing (run python scripts/vendor_web.py)")
            elif _sha256(path) != info["sha256"]:
                problems.append(f"{target}: differs from {entry['name']}@{entry['version']}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only verify the files against MANIFEST.json")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    manifest = fetch()
    (VENDOR / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendored {len(PACKAGES)} packages into {VENDOR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
