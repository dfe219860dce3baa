"""VMs as real systemd test hosts: podman containers of ``localhost/gorkheavy-testhost:bookworm``.

A VM's first start creates its container (named ``<prefix><VM name>``, hostname the VM name, on the lab's
podman network with the MAC of ``net0`` and the static address of ``ipconfig0``), later starts start it again;
stop kills it, shutdown powers it off through systemd, destroy removes it. Each start copies the NoCloud files
Proxmox generates for the VM (the cloud-init drive) into the container at ``/var/lib/cloud/seed/nocloud/``,
where the guest's own first-boot step (``guest_nocloud.py``, run by systemd before sshd) applies them. The
VM's power state is the container's real state, so a container that dies is a stopped VM. The guest agent
answers once the guest has finished booting (``/run/cloud-init/result.json``, written by the guest at the end
of its boot) with the interfaces ``ip -json addr`` shows inside.

Containers are found again by their labels (``gorkheavy.lab.owner`` = the prefix, ``gorkheavy.lab.vmid``), so
a stand-in restarted with the same state file finds its running VMs.
"""

from __future__ import annotations

import io
import ipaddress
import json
import re
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gorkheavy_lab.proxmox.backend import GuestInterface

IMAGE = "localhost/gorkheavy-testhost:bookworm"
OWNER_LABEL = "gorkheavy.lab.owner"
VMID_LABEL = "gorkheavy.lab.vmid"
NODE_LABEL = "gorkheavy.lab.node"
GUEST_SCRIPT = Path(__file__).resolve().parent / "guest_nocloud.py"
# A guest that hangs at boot: the file <hang_dir>/<VM name> exists when the VM starts (see the README).
HANG_MARKER = "/etc/gorkheavy-lab/boot-hangs"

_UNIT = """\
[Unit]
Description=Apply the NoCloud seed (cloud-init drive) of this VM
DefaultDependencies=no
After=local-fs.target systemd-remount-fs.service
Before=ssh.service ssh-host-keys.service sysinit.target shutdown.target
Conflicts=shutdown.target
ConditionPathExists=/var/lib/cloud/seed/nocloud/meta-data

[Service]
Type=oneshot
RemainAfterExit=yes
TimeoutStartSec=infinity
ExecStart=/usr/bin/python3 /usr/lib/gorkheavy-lab/guest_nocloud.py

[Install]
WantedBy=sysinit.target
"""
# sshd starts only once the seed is applied, as sshd waits for cloud-init on a cloud image
_SSH_DROPIN = """\
[Unit]
Wants=gorkheavy-lab-nocloud.service
After=gorkheavy-lab-nocloud.service
"""


class PodmanError(RuntimeError):
    """A podman command failed; the message is podman's own."""


@dataclass
class _Container:
    name: str
    vmid: int
    state: str  # podman's: created, running, exited, stopped, ...


def _run(argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 120) -> str:
    result = subprocess.run(list(argv), input=stdin, capture_output=True, timeout=timeout, check=False)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).decode(errors="replace").strip()
        raise PodmanError(message.splitlines()[-1] if message else f"{argv[0]} exited {result.returncode}")
    return result.stdout.decode(errors="replace")


def _ipconfig(value: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def _net_mac(value: str) -> str | None:
    for part in value.split(","):
        key, _, item = part.partition("=")
        model = key in ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "macaddr")
        if model and re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", item):
            return item.lower()
    return None


def container_name(prefix: str, config: Mapping[str, str], vmid: int) -> str:
    """``<prefix><hostname>``: the VM name up to its first dot (``VM<vmid>`` without a name)."""
    hostname = config.get("name", f"VM{vmid}").split(".", 1)[0]
    return f"{prefix}{hostname}"


class PodmanBackend:
    """A ``VmBackend`` whose guests are podman containers booted with systemd. See the module docstring.

    ``network`` is an existing podman network (the lab creates it); its IPv4 subnets decide whether a static
    address is given to podman (inside a subnet) or only set by the guest (outside them, so the VM cannot be
    reached, as a VM with a mistyped address). ``hang_dir``: a file named after a VM there makes it hang
    at boot before sshd (a guest that never comes up) until the file is removed and the VM restarted.
    """

    def __init__(
        self,
        network: str,
        *,
        prefix: str = "gorkheavy-lab-",
        image: str = IMAGE,
        ip_forward: int = 0,
        hang_dir: Path | str | None = None,
        podman: str = "podman",
        status_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*", prefix):
            raise ValueError(f"container prefix {prefix!r}: letters, digits, '_', '.', '-' only")
        if ip_forward not in (0, 1):
            raise ValueError(f"ip_forward must be 0 or 1, got {ip_forward!r}")
        self.network = network
        self.prefix = prefix
        self.image = image
        self.ip_forward = ip_forward
        self.hang_dir = Path(hang_dir) if hang_dir else None
        self.podman = podman
        self.status_ttl = status_ttl
        self.clock = clock
        self._listing: dict[int, _Container] = {}
        self._listed_at: float | None = None
        self._refreshing = threading.Lock()
        self._generation = 0  # bumped by every change: a listing taken before it is not kept
        self._booted: dict[int, float] = {}  # vmid -> when the guest was first seen booted
        info = self._network_info()
        self.subnets = [
            ipaddress.ip_network(s["subnet"])
            for s in info.get("subnets") or []
            if ipaddress.ip_network(s["subnet"]).version == 4
        ]
        gateways = [s.get("gateway") for s in info.get("subnets") or [] if s.get("gateway")]
        self.gateway = str(gateways[0]) if gateways else None
        try:
            _run([self.podman, "image", "exists", self.image])
        except PodmanError:
            raise PodmanError(
                f"podman image {self.image} is missing; build it with scripts/build-test-image.sh"
            ) from None

    def _network_info(self) -> dict[str, Any]:
        try:
            data = json.loads(_run([self.podman, "network", "inspect", self.network]))
        except PodmanError:
            raise PodmanError(
                f"podman network {self.network!r} does not exist; create it first, for example: "
                f"podman network create --subnet 10.77.0.0/24 {self.network}"
            ) from None
        return dict(data[0])

    # -- what podman has ---------------------------------------------------------------------------------

    def _containers(self, fresh: bool = False) -> dict[int, _Container]:
        """The containers of this prefix by VMID.

        ``fresh`` (and the first call after a change) asks podman now; otherwise a listing older than
        ``status_ttl`` is refreshed in the background and the last one is answered, so a slow podman never
        holds up the API (the caller holds the cluster lock), as pvestatd's status lags a moment behind.
        """
        if fresh or self._listed_at is None:
            self._refresh()
        elif self.clock() - self._listed_at >= self.status_ttl and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh, args=(True,), daemon=True).start()
        return self._listing

    def _refresh(self, locked: bool = False) -> None:
        try:
            now, generation = self.clock(), self._generation
            label = f"label={OWNER_LABEL}={self.prefix}"
            out = _run([self.podman, "ps", "--all", "--format", "json", "--filter", label])
            listing: dict[int, _Container] = {}
            for entry in json.loads(out or "[]"):
                labels = entry.get("Labels") or {}
                vmid = labels.get(VMID_LABEL, "")
                if vmid.isdigit():
                    listing[int(vmid)] = _Container(entry["Names"][0], int(vmid), entry.get("State", ""))
            if generation == self._generation:
                self._listing = listing
                self._listed_at = now
        except (PodmanError, subprocess.TimeoutExpired, ValueError):
            if not locked:
                raise
        finally:
            if locked:
                self._refreshing.release()

    def _forget(self, vmid: int) -> None:
        self._generation += 1
        self._listed_at = None
        self._booted.pop(vmid, None)

    def container(self, vmid: int) -> str | None:
        """The name of the VM's container, if it has one."""
        found = self._containers().get(vmid)
        return found.name if found else None

    # -- VmBackend ---------------------------------------------------------------------------------------

    def status(self, node: str, vmid: int) -> str:
        found = self._containers().get(vmid)
        return "running" if found is not None and found.state == "running" else "stopped"

    def start(
        self, node: str, vmid: int, config: Mapping[str, str], seed: Mapping[str, str] | None = None
    ) -> None:
        try:
            found = self._containers(fresh=True).get(vmid)
            name = found.name if found else self._create(node, vmid, config)
            self._forget(vmid)
            hostname = config.get("name", f"VM{vmid}").split(".", 1)[0]
            hang = self.hang_dir is not None and (self.hang_dir / hostname).exists()
            _run(
                [self.podman, "cp", "-", f"{name}:/"],
                stdin=_guest_files(seed, hang),
            )
            _run([self.podman, "start", name])
        except PodmanError as exc:
            raise RuntimeError(f"start failed: {exc}") from None
        finally:
            self._forget(vmid)

    def _create(self, node: str, vmid: int, config: Mapping[str, str]) -> str:
        name = container_name(self.prefix, config, vmid)
        hostname = config.get("name", f"VM{vmid}").split(".", 1)[0]
        argv = [
            self.podman, "--runtime", "runc", "create", "--name", name, "--hostname", hostname,
            "--network", self.network, "--network-alias", hostname,
            "--systemd=always", "--cap-add", "NET_ADMIN,NET_RAW,AUDIT_WRITE",
            "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
            "--sysctl", f"net.ipv4.ip_forward={self.ip_forward}",
            "--label", f"{OWNER_LABEL}={self.prefix}", "--label", f"{VMID_LABEL}={vmid}",
            "--label", f"{NODE_LABEL}={node}",
        ]  # fmt: skip
        mac = _net_mac(config.get("net0", ""))
        if mac:
            argv += ["--mac-address", mac]
        address = _ipconfig(config.get("ipconfig0", "")).get("ip", "dhcp")
        if address != "dhcp":
            iface = ipaddress.IPv4Interface(address)
            # podman can only hand out an address of the network; any other one is set by the guest itself
            if any(iface.ip in subnet for subnet in self.subnets):
                argv += ["--ip", str(iface.ip)]
        argv += [self.image, "/sbin/init"]
        _run(argv)
        return name

    def stop(self, node: str, vmid: int) -> None:
        found = self._containers(fresh=True).get(vmid)
        if found is not None and found.state == "running":
            try:
                _run([self.podman, "stop", "--time", "0", found.name])
            except PodmanError as exc:
                raise RuntimeError(f"stop failed: {exc}") from None
        self._forget(vmid)

    def shutdown(self, node: str, vmid: int, timeout: float) -> None:
        found = self._containers(fresh=True).get(vmid)
        if found is None or found.state != "running":
            return
        # systemd powers off on SIGRTMIN+3, as on an ACPI power button press
        _run([self.podman, "kill", "--signal", "SIGRTMIN+3", found.name])
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            found = self._containers(fresh=True).get(vmid)
            if found is None or found.state != "running":
                self._forget(vmid)
                return
            time.sleep(0.2)
        raise RuntimeError(f"VM {vmid} quit/powerdown failed - got timeout")

    def destroy(self, node: str, vmid: int) -> None:
        found = self._containers(fresh=True).get(vmid)
        if found is not None:
            _run([self.podman, "rm", "--force", "--time", "0", found.name])
        self._forget(vmid)

    def addresses(self, node: str, vmid: int, config: Mapping[str, str]) -> list[GuestInterface] | None:
        found = self._containers().get(vmid)
        if found is None or found.state != "running":
            return None
        agent = config.get("agent", "0").split(",")[0].removeprefix("enabled=")
        if agent != "1":
            return None
        try:
            out = _run(
                [
                    self.podman, "exec", found.name, "sh", "-c",
                    "test -e /run/cloud-init/result.json && exec ip -json addr show",
                ],
                timeout=20,
            )  # fmt: skip
        except PodmanError:
            return None  # still booting: the agent does not answer yet
        self._booted.setdefault(vmid, self.clock())
        return _interfaces(json.loads(out))

    # -- housekeeping ------------------------------------------------------------------------------------

    def remove_all(self) -> list[str]:
        """Remove every container of this prefix (the lab's tear-down); returns their names."""
        names = [c.name for c in self._containers(fresh=True).values()]
        if names:
            _run([self.podman, "rm", "--force", "--time", "0", *names])
        self._generation += 1
        self._listed_at = None
        return names


def _interfaces(data: list[dict[str, Any]]) -> list[GuestInterface]:
    interfaces = []
    for link in data:
        addresses = tuple(
            ("ipv4" if a.get("family") == "inet" else "ipv6", str(a["local"]), int(a["prefixlen"]))
            for a in link.get("addr_info", [])
            if a.get("family") in ("inet", "inet6") and "local" in a
        )
        interfaces.append(GuestInterface(str(link["ifname"]), str(link.get("address", "")), addresses))
    return interfaces


def _guest_files(seed: Mapping[str, str] | None, hang: bool) -> bytes:
    """A tar of what goes into the guest at a start: the NoCloud seed and the guest's first-boot step."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add(path: str, content: str | bytes, mode: int = 0o644) -> None:
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))

        def link(path: str, target: str) -> None:
            info = tarfile.TarInfo(path.lstrip("/"))
            info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
            tar.addfile(info)

        add("/usr/lib/gorkheavy-lab/guest_nocloud.py", GUEST_SCRIPT.read_bytes(), 0o755)
        add("/etc/systemd/system/gorkheavy-lab-nocloud.service", _UNIT)
        link(
            "/etc/systemd/system/sysinit.target.wants/gorkheavy-lab-nocloud.service",
            "/etc/systemd/system/gorkheavy-lab-nocloud.service",
        )
        add("/etc/systemd/system/ssh.service.d/10-gorkheavy-lab-nocloud.conf", _SSH_DROPIN)
        add(HANG_MARKER, "hang\n" if hang else "")
        if seed is not None:
            for name in ("meta-data", "user-data", "network-config", "vendor-data"):
                add(f"/var/lib/cloud/seed/nocloud/{name}", seed.get(name, ""), 0o600)
    return buffer.getvalue()
