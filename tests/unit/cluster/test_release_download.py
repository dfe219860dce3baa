"""The controller downloads a release's assets once into its cache and verifies them before a node gets them.

A local HTTP server plays the release host (the <url>/<tag>/<asset> layout of GitHub's release downloads, with
"+" sent as %2B). The play is k3s_common's main entry point on this machine over the local connection: it only
reads on a node, and it writes nothing but the cache directory.
"""

from __future__ import annotations

import hashlib
import http.server
import platform
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.unit.cluster.playbook import LOCAL, run_playbook

VERSION = "v1.36.4+k3s1"

pytestmark = pytest.mark.skipif(platform.machine() != "x86_64", reason="the stand-in assets are amd64")


class Release(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def release(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    served = tmp_path / "served" / VERSION
    served.mkdir(parents=True)
    binary = served / "k3s"
    binary.write_text(f"#!/bin/sh\necho 'k3s version {VERSION} (0a1b2c3d)'\n")
    (served / "sha256sum-amd64.txt").write_text(f"{hashlib.sha256(binary.read_bytes()).hexdigest()}  k3s\n")
    requests: list[str] = []
    handler = type("Handler", (Release,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(handler, directory=str(served.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", served, requests
    finally:
        server.shutdown()
        server.server_close()


def _preflight(tmp: Path, url: str) -> subprocess.CompletedProcess[str]:
    play = tmp / "play.yml"
    play.write_text(
        "- hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - {ansible.builtin.include_role: {name: gorkheavy.lite.k3s_common}}\n"
    )
    extra = {
        "k3s_common_release_url": url,
        "k3s_common_cache_dir": str(tmp / "cache"),
        "k3s_common_version": VERSION,
    }
    return run_playbook(tmp, play, {"all": {"hosts": {"node": LOCAL}}}, extra, timeout=180)


def test_assets_are_downloaded_once_and_verified(
    tmp_path: Path, release: tuple[str, Path, list[str]]
) -> None:
    url, served, requests = release
    first = _preflight(tmp_path, url)
    assert first.returncode == 0, first.stdout[-3000:]
    assert requests == ["/v1.36.4%2Bk3s1/sha256sum-amd64.txt", "/v1.36.4%2Bk3s1/k3s"]
    cached = tmp_path / "cache" / VERSION / "k3s"
    assert cached.read_bytes() == (served / "k3s").read_bytes()
    # Release tags never change: a second run uses the cache and downloads nothing.
    second = _preflight(tmp_path, url)
    assert second.returncode == 0, second.stdout[-3000:]
    assert len(requests) == 2


def test_a_download_that_does_not_match_the_checksum_file_is_refused(
    tmp_path: Path, release: tuple[str, Path, list[str]]
) -> None:
    url, served, _ = release
    with (served / "k3s").open("a") as binary:
        binary.write("# changed on the way\n")
    run = _preflight(tmp_path, url)
    out = " ".join(run.stdout.split())
    assert run.returncode != 0
    actual = hashlib.sha256((served / "k3s").read_bytes()).hexdigest()
    assert f"{tmp_path}/cache/{VERSION}/k3s has sha256 {actual}, but sha256sum-amd64.txt says" in out
    assert "Delete the file from" in out
