"""Air-gap images: the builder writes ``k3s-airgap-images-<arch>.tar``, a small but real OCI image layout
(``oci-layout``, ``index.json``, blobs for one image: config, one layer, manifest); at start the stand-in
imports every ``*.tar``/``*.tar.gz`` in ``<data-dir>/agent/images/`` as K3s does, records the image names it
found under ``<data-dir>/agent/containerd/images.json`` and logs the import."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

from .logs import Logger

IMAGES = ("docker.io/rancher/mirrored-pause:3.6",)
EPOCH = 1756252800  # fixed mtime so that a build is byte-for-byte reproducible


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = EPOCH
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _blob(blobs: dict[str, bytes], data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def airgap_tar(arch: str) -> bytes:
    blobs: dict[str, bytes] = {}
    layer_tar = io.BytesIO()
    with tarfile.open(fileobj=layer_tar, mode="w", format=tarfile.PAX_FORMAT) as layer:
        _add(layer, "pause", b"#!/bin/sh\n# stand-in pause\n")
    layer_gz = gzip.compress(layer_tar.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(layer_tar.getvalue()).hexdigest()
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "config": {"Entrypoint": ["/pause"]},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        sort_keys=True,
    ).encode()
    config_desc = _blob(blobs, config)
    layer_desc = _blob(blobs, layer_gz)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer_desc}],
        },
        sort_keys=True,
    ).encode()
    manifest_desc = _blob(blobs, manifest)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **manifest_desc,
                "platform": {"architecture": arch, "os": "linux"},
                "annotations": {"io.containerd.image.name": name, "org.opencontainers.image.ref.name": name},
            }
            for name in IMAGES
        ],
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add(tar, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(tar, "index.json", json.dumps(index, sort_keys=True).encode())
        for digest, data in sorted(blobs.items()):
            _add(tar, "blobs/sha256/" + digest.split(":", 1)[1], data)
    return out.getvalue()


def _open(path: Path) -> tarfile.TarFile:
    name = path.name.lower()
    if name.endswith(".tar"):
        return tarfile.open(path, mode="r:")
    if name.endswith((".tar.gz", ".tgz")):
        return tarfile.open(path, mode="r:gz")
    if name.endswith((".tar.bz2", ".tbz")):
        return tarfile.open(path, mode="r:bz2")
    if name.endswith(("tar.zst", ".tzst", ".tar.lz4")):
        msg = "zstd and lz4 archives cannot be read by this stand-in (use the .tar or .tar.gz asset)"
        raise ValueError(msg)
    raise ValueError("unhandled file type")


def _names(path: Path) -> list[str]:
    with _open(path) as tar:
        members = {m.name.removeprefix("./"): m for m in tar.getmembers()}
        if "index.json" in members:  # OCI image layout
            index = json.load(tar.extractfile(members["index.json"]))  # type: ignore[arg-type]
            annotations = [m.get("annotations", {}) for m in index.get("manifests", [])]
            return [
                a.get("io.containerd.image.name") or a.get("org.opencontainers.image.ref.name", "")
                for a in annotations
            ]
        if "manifest.json" in members:  # docker save format
            manifest = json.load(tar.extractfile(members["manifest.json"]))  # type: ignore[arg-type]
            return [tag for entry in manifest for tag in entry.get("RepoTags") or []]
    msg = "ctr: content digest not found: not an OCI image layout or docker image archive"
    raise ValueError(msg)


def go_duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs" if seconds else "0s"
    if seconds < 1:
        return f"{seconds * 1e3:.6f}".rstrip("0").rstrip(".") + "ms"
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def import_dir(data_dir: Path, log: Logger) -> list[str]:
    """K3s's ``preloadImages``: every file in the images directory, by suffix; ``*.txt`` lists images to
    pre-pull (nothing can be pulled here: each is reported as failed); per image ``Imported <name>``; a file
    that cannot be read is ``Error encountered while importing <file>: <error>`` and the start goes on."""
    directory = data_dir / "agent" / "images"
    if not directory.is_dir():
        return []
    imported: list[str] = []
    for path in sorted(directory.iterdir()):
        if path.is_dir() or path.name == ".cache.json":
            continue
        start = time.monotonic()
        if path.name.lower().endswith(".txt"):
            for line in path.read_text().splitlines():
                if line.strip():
                    log.info(f"Pulling image {line.strip()}...")
                    log.error(
                        f"Failed to pull {line.strip()}: this stand-in has no container runtime to pull with"
                    )
            continue
        try:
            _open(path).close()
            log.info(f"Importing images from {path}")
            names = _names(path)
        except (tarfile.TarError, ValueError, OSError) as exc:
            log.error(f"Error encountered while importing {path}: {exc}")
            continue
        for name in names:
            log.info(f"Imported {name}")
        imported.extend(names)
        log.debug(f"Imported images from {path} in {go_duration(time.monotonic() - start)}")
    record = data_dir / "agent" / "containerd" / "images.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(sorted(set(imported)), indent=1) + "\n")
    return imported
