"""What a build of the stand-in claims to be: the K3s version, its commit and Go version, the Kubernetes
version it serves. A build writes these into the zipapp (``release.json``); a run from source uses the pin."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

PINNED_VERSION = "v1.36.4+k3s1"
# Go of the v1.36 line as its release notes name it (k3s-io/docs docs/release-notes/v1.36.X.md: v1.36.2 moved
# to Go 1.26.4); the stored notes stop at v1.36.2, so v1.36.4 is assumed to use the same toolchain.
GO_VERSION = "go1.26.4"
VERSION_RE = re.compile(r"^v(?P<major>\d+)\.(?P<minor>\d+)\.(?P<patch>\d+)\+k3s(?P<k3s>\d+)$")
ARCHES = ("amd64", "arm64")


@dataclass(frozen=True)
class Release:
    version: str
    git_commit: str
    go_version: str
    arch: str
    build_date: str

    @property
    def short_commit(self) -> str:
        return self.git_commit[:8]

    @property
    def kubernetes(self) -> tuple[str, str, str]:
        match = VERSION_RE.match(self.version)
        if match is None:  # pragma: no cover - guarded at build time
            msg = f"bad version {self.version}"
            raise ValueError(msg)
        return match["major"], match["minor"], match["patch"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def parse_version(version: str) -> re.Match[str]:
    match = VERSION_RE.match(version)
    if match is None:
        msg = f"version {version!r} is not of the form vMAJOR.MINOR.PATCH+k3sN (e.g. {PINNED_VERSION})"
        raise ValueError(msg)
    return match


def make_release(version: str, arch: str) -> Release:
    """A release record for ``version``. The real commit of a K3s tag is not known here, so the commit is a
    stable digest of the version string: the same version always reports the same 8 hex digits."""
    parse_version(version)
    if arch not in ARCHES:
        msg = f"arch {arch!r} is not one of {', '.join(ARCHES)}"
        raise ValueError(msg)
    commit = hashlib.sha1(version.encode()).hexdigest()
    return Release(version, commit, GO_VERSION, arch, "2026-08-27T00:00:00Z")


def current() -> Release:
    """The release baked into this zipapp, or the pinned one when running from source."""
    try:
        data: dict[str, Any] = json.loads(resources.files(__package__).joinpath("release.json").read_text())
    except (FileNotFoundError, NotADirectoryError):
        return make_release(PINNED_VERSION, "amd64")
    return Release(**data)
