"""Build the artifact directory a K3s release would give: ``k3s`` (amd64) or ``k3s-arm64``, the air-gap
images tarball ``k3s-airgap-images-<arch>.tar`` and ``sha256sum-<arch>.txt`` listing both (``<hex>  <name>``).

The ``k3s`` file is a Python zipapp (``#!/usr/bin/env python3``) holding this package and its data, with the
version it claims written into ``release.json``. The build is reproducible: the same version and arch give
the same bytes and so the same checksums."""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

from . import images
from .release import make_release

PACKAGE = Path(__file__).resolve().parent
STAMP = (2026, 8, 27, 0, 0, 0)
MAIN = "import sys\n\nfrom gorkheavy_lab.k3s.cli import main\n\nsys.exit(main(sys.argv))\n"


def _entry(zf: zipfile.ZipFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = zipfile.ZipInfo(name, STAMP)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    zf.writestr(info, data)


def zipapp_bytes(version: str, arch: str) -> bytes:
    rel = make_release(version, arch)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        _entry(zf, "__main__.py", MAIN.encode())
        _entry(zf, "gorkheavy_lab/__init__.py", (PACKAGE.parent / "__init__.py").read_bytes())
        files = sorted(
            p
            for p in PACKAGE.rglob("*")
            if p.is_file()
            and "__pycache__" not in p.parts
            and p.suffix in {".py", ".yaml", ".json", ".md"}
            and p.name != "release.json"
        )
        for path in files:
            _entry(zf, f"gorkheavy_lab/k3s/{path.relative_to(PACKAGE).as_posix()}", path.read_bytes())
        # the Ollama stand-in, which the kubelet runs as the ollama/ollama image's `ollama` CLI
        ollama = PACKAGE.parent / "ollama"
        for path in sorted(p for p in ollama.glob("*.py") if p.is_file()):
            _entry(zf, f"gorkheavy_lab/ollama/{path.name}", path.read_bytes())
        _entry(zf, "gorkheavy_lab/k3s/release.json", rel.to_json().encode() + b"\n")
    return b"#!/usr/bin/env python3\n" + buf.getvalue()


def build(out: Path, version: str, arch: str) -> dict[str, str]:
    """Write the assets into ``out``; returns asset name -> sha256."""
    make_release(version, arch)  # refuses a bad version or arch before anything is written
    out.mkdir(parents=True, exist_ok=True)
    binary = "k3s" if arch == "amd64" else f"k3s-{arch}"
    assets = {
        binary: zipapp_bytes(version, arch),
        f"k3s-airgap-images-{arch}.tar": images.airgap_tar(arch),
    }
    sums = {}
    for name, data in assets.items():
        path = out / name
        tmp = path.with_name(f".{name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, 0o755 if name == binary else 0o644)
        os.replace(tmp, path)
        sums[name] = hashlib.sha256(data).hexdigest()
    (out / f"sha256sum-{arch}.txt").write_text("".join(f"{h}  {n}\n" for n, h in sorted(sums.items())))
    return sums
