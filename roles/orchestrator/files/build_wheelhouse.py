#!/usr/bin/env python3
"""Build the orchestrator's artifact: a wheelhouse of the app and every dependency, for one platform.

The wheelhouse is what the orchestrator pod installs from, offline (``pip install --no-index``), into a
stock Python image. It holds the app's wheel, built from this repository, and the binary wheels of its
dependencies for the image's Python version and CPU architecture, plus ``SHA256SUMS``. Its name carries the
sha256 of its contents, so a new build is a new path (and a new rollout) and an unchanged one is the same.

A build is cached under ``--cache``, keyed by the app's source files and the target; an unchanged source
reuses the cached wheelhouse without running pip (so no package index is needed then). Prints one JSON
object: ``{"changed", "name", "path", "archive", "sha256", "files", "version"}``; ``archive`` is the same
wheelhouse as one reproducible tar file (``<name>/...``), which is what gets copied to the nodes.

    build_wheelhouse.py --source REPO --cache DIR [--arch amd64|arm64] [--python 3.11] [--extra postgres]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

PROJECT = "gorkheavy-lite"
PACKAGE = "gorkheavy"
EPOCH = "315532800"  # 1980-01-01: the earliest time a zip entry can carry, for byte-identical rebuilds
MANYLINUX_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
# The stock Python images are Debian bookworm (glibc 2.36): every manylinux tag up to 2.36 runs there.
GLIBC_MINOR = 36


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source_files(source: Path) -> list[Path]:
    """The files the app's wheel is built from: pyproject.toml and the package, nothing else."""
    files = [source / "pyproject.toml"]
    for path in sorted((source / "app" / PACKAGE).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in {".pyc", ".pyo"}:
            files.append(path)
    return files


def _platforms(arch: str) -> list[str]:
    machine = MANYLINUX_ARCH[arch]
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{machine}", f"linux_{machine}"]


def _pip(args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False, env=_pip_env()
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise SystemExit(f"pip {args[0]} failed (exit {result.returncode}):\n{tail}")


def _pip_env() -> dict[str, str]:
    env = dict(os.environ)
    env["SOURCE_DATE_EPOCH"] = EPOCH
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def _stage_source(source: Path, stage: Path) -> None:
    """Copy the package and a pyproject without the readme (docs changes must not make a new build)."""
    text = (source / "pyproject.toml").read_text(encoding="utf-8")
    text = re.sub(r"(?m)^readme\s*=.*\n", "", text, count=1)
    tomllib.loads(text)  # still valid TOML
    (stage / "pyproject.toml").write_text(text, encoding="utf-8")
    for path in _source_files(source)[1:]:
        target = stage / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


def _key(source: Path, arch: str, python: str, extras: list[str]) -> str:
    digest = hashlib.sha256()
    digest.update(
        json.dumps({"arch": arch, "python": python, "extras": sorted(extras), "format": 1}).encode()
    )
    for path in _source_files(source):
        digest.update(str(path.relative_to(source)).encode() + b"\0")
        digest.update(_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def _contents_sha256(wheelhouse: Path) -> tuple[str, list[str]]:
    lines = [f"{_sha256(p)}  {p.name}" for p in sorted(wheelhouse.glob("*.whl"))]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest(), lines


def _archive(wheelhouse: Path) -> Path:
    """``<name>.tar`` beside the wheelhouse: sorted entries, fixed owner, modes and times (same bytes)."""
    target = wheelhouse.with_name(wheelhouse.name + ".tar")
    partial = target.with_name(target.name + ".partial")

    def normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = int(EPOCH)
        info.mode = 0o755 if info.isdir() else 0o644
        return info

    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(wheelhouse, arcname=wheelhouse.name, recursive=False, filter=normalize)
        for path in sorted(wheelhouse.iterdir()):
            tar.add(path, arcname=f"{wheelhouse.name}/{path.name}", recursive=False, filter=normalize)
    partial.replace(target)
    return target


def _version(source: Path) -> str:
    project = tomllib.loads((source / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return str(project["version"])


def build(source: Path, cache: Path, arch: str, python: str, extras: list[str]) -> dict[str, object]:
    if arch not in MANYLINUX_ARCH:
        raise SystemExit(f"--arch must be one of {', '.join(MANYLINUX_ARCH)} (got {arch!r})")
    if not re.fullmatch(r"3\.\d{1,2}", python):
        raise SystemExit(f"--python must be a version such as 3.11 (got {python!r})")
    if not (source / "pyproject.toml").is_file() or not (source / "app" / PACKAGE).is_dir():
        raise SystemExit(f"{source} is not this repository (no pyproject.toml or app/{PACKAGE}/)")
    cache.mkdir(parents=True, exist_ok=True)
    key = _key(source, arch, python, extras)
    index = cache / f"source-{key}.json"
    if index.is_file():
        known = json.loads(index.read_text(encoding="utf-8"))
        wheelhouse = cache / str(known["name"])
        sums = wheelhouse / "SHA256SUMS"
        archive = wheelhouse.with_name(wheelhouse.name + ".tar")
        if sums.is_file() and archive.is_file() and _contents_sha256(wheelhouse)[0] == known["sha256"]:
            return {**known, "path": str(wheelhouse), "archive": str(archive), "changed": False}
    version = _version(source)
    with tempfile.TemporaryDirectory(prefix="gorkheavy-wheelhouse-", dir=cache) as tmp:
        work = Path(tmp)
        stage = work / "source"
        stage.mkdir()
        _stage_source(source, stage)
        app = work / "app"
        _pip(["wheel", "--no-deps", "--wheel-dir", str(app), str(stage)])
        wheels = work / "wheels"
        requirement = PROJECT + (f"[{','.join(sorted(extras))}]" if extras else "") + f"=={version}"
        args = ["download", "--dest", str(wheels), "--only-binary=:all:", "--find-links", str(app)]
        for platform in _platforms(arch):
            args += ["--platform", platform]
        args += [
            "--python-version",
            python,
            "--implementation",
            "cp",
            "--abi",
            "cp" + python.replace(".", ""),
        ]
        _pip([*args, requirement])
        sha, lines = _contents_sha256(wheels)
        (wheels / "SHA256SUMS").write_text("\n".join(lines) + "\n", encoding="utf-8")
        name = f"orchestrator-{version}-{sha[:16]}"
        final = cache / name
        if final.exists():
            shutil.rmtree(final)
        wheels.rename(final)
    archive = _archive(final)
    info: dict[str, object] = {
        "name": name,
        "sha256": sha,
        "version": version,
        "files": [line.split("  ", 1)[1] for line in lines],
    }
    index.write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return {**info, "path": str(final), "archive": str(archive), "changed": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", type=Path, required=True, help="the repository (holds pyproject.toml)")
    parser.add_argument(
        "--cache", type=Path, required=True, help="directory that keeps the built wheelhouses"
    )
    parser.add_argument("--arch", default="amd64", help="CPU architecture of the nodes: amd64 or arm64")
    parser.add_argument("--python", default="3.11", help="Python version of the image, such as 3.11")
    parser.add_argument("--extra", action="append", default=[], help="extra of the app to include (postgres)")
    args = parser.parse_args(argv)
    extras = sorted({extra for extra in args.extra if extra})
    result = build(args.source.resolve(), args.cache.expanduser().resolve(), args.arch, args.python, extras)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
