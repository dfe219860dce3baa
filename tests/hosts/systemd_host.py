"""Start and drive one systemd test host (see tests/hosts/README.md) from a pytest test."""

from __future__ import annotations

import secrets
import subprocess
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
    def start(cls, prefix: str, root_public_key: Path) -> SystemdHost:
        host = cls(f"{prefix}-{secrets.token_hex(3)}", root_public_key)
        result = subprocess.run(
            [str(REPO / "tests/hosts/run-test-host.sh"), host.name, str(root_public_key)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            host.remove()
            msg = f"test host {host.name} did not start: {result.stderr.strip()}"
            raise RuntimeError(msg)
        host.address = result.stdout.strip()
        return host

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
