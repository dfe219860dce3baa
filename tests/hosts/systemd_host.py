"""Start and drive one systemd test host (see tests/hosts/README.md) from a pytest test."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
IMAGE = "localhost/gorkheavy-testhost:bookworm"


def build_image() -> None:
    """Build the test host image unless the cached one matches the recipe."""
    subprocess.run(
        [str(REPO / "scripts/build-test-image.sh"), IMAGE], check=True, capture_output=True, text=True
    )


@dataclass
class SystemdHost:
    """A running test host: a container booted with systemd, reachable over SSH at ``address``."""

    name: str
    root_public_key: Path
    address: str = field(init=False, default="")

    @classmethod
    def start(
        cls, prefix: str, root_public_key: Path, *, network: str = "", ip_forward: bool | None = None
    ) -> SystemdHost:
        """Start a host; ``network``: a podman network of the caller's (default: podman's); ``ip_forward``:
        IPv4 forwarding in its network namespace (README.md; default off)."""
        host = cls(f"{prefix}-{secrets.token_hex(3)}", root_public_key)
        env = dict(os.environ)
        if network:
            env["TESTHOST_NETWORK"] = network
        if ip_forward is not None:
            env["TESTHOST_IP_FORWARD"] = "1" if ip_forward else "0"
        result = subprocess.run(
            [str(REPO / "tests/hosts/run-test-host.sh"), host.name, str(root_public_key)],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,  # the script waits up to 180 s for the boot itself
            env=env,
        )
        if result.returncode != 0:
            host.remove()
            msg = f"test host {host.name} did not start: {result.stderr.strip()}"
            raise RuntimeError(msg)
        host.address = result.stdout.strip()
        host.wait_for_ssh()
        return host

    def wait_for_ssh(self, timeout: float = 120) -> None:
        """Wait until sshd answers on port 22 with its banner (after the boot, or after a restart by a test).
        sshd re-executes itself on a reload (SIGHUP) and refuses connections until the new process listens;
        `systemctl reload` returns before that, `systemctl restart` (Type=notify) only once it listens."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection((self.address, 22), timeout=5) as sock:
                    banner = sock.recv(64)
                if banner.startswith(b"SSH-"):
                    return
                last = f"answered {banner!r}"
            except OSError as error:
                last = str(error)
            time.sleep(0.2)
        msg = f"sshd on test host {self.name} ({self.address}) did not answer within {timeout:.0f} s: {last}"
        raise RuntimeError(msg)

    def sh(
        self, script: str, *, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a shell script as root inside the host (test set-up and inspection only)."""
        return subprocess.run(
            ["podman", "exec", "-i", self.name, "sh", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def remove(self) -> None:
        subprocess.run(
            ["podman", "rm", "--force", "--ignore", "--time", "0", self.name],
            capture_output=True,
            check=False,
            timeout=120,
        )


# Opens `concurrent` TCP connections to the SSH port at a time, for `seconds`, and counts those that got as
# far as sshd's banner: the way ssh-audit's DHEat connection-rate test measures. (ssh-audit 3.9's own test
# stops with an exception at the first connection a firewall rejects, so it cannot measure a host behind
# ufw's limit rule.)
_RATE_PROBE = """
import errno, json, select, socket, sys, time
host, seconds, concurrent = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
opened = refused = 0
pending = {}
start = time.monotonic()
while time.monotonic() - start < seconds:
    while len(pending) < concurrent:
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, 22))
        pending[s] = time.monotonic()
    readable, _, _ = select.select(list(pending), [], [], 0.1)
    for s in readable:
        try:
            data = s.recv(8)
        except OSError:
            data = None
        if data and data.startswith(b"SSH-"):
            opened += 1
        else:
            refused += 1
        del pending[s]
        s.close()
    for s, since in list(pending.items()):
        if time.monotonic() - since > 5:
            del pending[s]
            s.close()
print(json.dumps({"opened": opened, "refused": refused, "seconds": time.monotonic() - start}))
"""


def connection_rate_from_another_host(
    address: str, seconds: float = 4.0, concurrent: int = 3
) -> dict[str, float]:
    """Measure from a throwaway container (another source address than this machine's) how many
    connections per second reach sshd's banner on ``address``."""
    name = f"gorkheavy-rateprobe-{secrets.token_hex(3)}"
    argv = ["podman", "--runtime", "runc", "run", "--rm", "--name", name]
    argv += ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096", IMAGE]
    argv += ["python3", "-c", _RATE_PROBE, address, str(seconds), str(concurrent)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    finally:
        subprocess.run(
            ["podman", "rm", "--force", "--ignore", name], capture_output=True, check=False, timeout=60
        )
    result: dict[str, float] = json.loads(done.stdout)
    result["rate"] = result["opened"] / result["seconds"]
    return result
