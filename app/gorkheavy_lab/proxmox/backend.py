"""What runs behind a VM: the simulated default here, real test hosts in ``podman.py``."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class GuestInterface:
    """One guest network interface as the QEMU guest agent reports it."""

    name: str
    mac: str
    addresses: tuple[tuple[str, str, int], ...]  # (family "ipv4"/"ipv6", address, prefix)

    def to_agent(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "name": self.name,
            "hardware-address": self.mac,
            "statistics": {
                "rx-bytes": 0,
                "rx-dropped": 0,
                "rx-errs": 0,
                "rx-packets": 0,
                "tx-bytes": 0,
                "tx-dropped": 0,
                "tx-errs": 0,
                "tx-packets": 0,
            },
        }
        if self.addresses:
            data["ip-addresses"] = [
                {"ip-address-type": family, "ip-address": address, "prefix": prefix}
                for family, address, prefix in self.addresses
            ]
        return data


@runtime_checkable
class VmBackend(Protocol):
    """Backs the power state of VMs. ``config`` is the VM's current config (key -> property string).

    ``start`` gets the NoCloud files Proxmox writes to the VM's cloud-init drive at that start
    (``user-data``, ``meta-data``, ``network-config``, ``vendor-data``), or ``None`` when the VM has no
    cloud-init drive. ``start`` and ``shutdown`` may raise ``RuntimeError`` with a message: the task then
    fails with that text. ``stop`` pulls the plug, ``shutdown`` asks the guest to power off and waits at
    most ``timeout`` seconds, ``destroy`` is called when the (stopped) VM is removed with its disks.
    ``addresses`` returns ``None`` while the guest agent does not answer (the API then answers
    500 "QEMU guest agent is not running"), else the interfaces the agent reports.
    """

    def start(
        self, node: str, vmid: int, config: Mapping[str, str], seed: Mapping[str, str] | None
    ) -> None: ...

    def stop(self, node: str, vmid: int) -> None: ...

    def shutdown(self, node: str, vmid: int, timeout: float) -> None: ...

    def destroy(self, node: str, vmid: int) -> None: ...

    def status(self, node: str, vmid: int) -> str: ...  # "running" | "stopped"

    def addresses(self, node: str, vmid: int, config: Mapping[str, str]) -> list[GuestInterface] | None: ...


def _mac_of(config: Mapping[str, str], key: str) -> str:
    for part in config.get(key, "").split(","):
        name, _, value = part.partition("=")
        if value and ":" in value and name not in ("bridge", "tag", "firewall", "rate", "queues", "mtu"):
            return value.lower()
    return "bc:24:11:00:00:00"


def _ipconfig_addresses(value: str) -> tuple[tuple[str, str, int], ...]:
    found: list[tuple[str, str, int]] = []
    for part in value.split(","):
        key, _, item = part.partition("=")
        if key == "ip" and "/" in item:
            iface = ipaddress.IPv4Interface(item)
            found.append(("ipv4", str(iface.ip), iface.network.prefixlen))
        elif key == "ip6" and "/" in item:
            iface6 = ipaddress.IPv6Interface(item)
            found.append(("ipv6", str(iface6.ip), iface6.network.prefixlen))
    return tuple(found)


class SimulatedBackend:
    """No real guest: the VM "runs" once started; its agent answers after ``agent_delay`` seconds.

    The agent then reports ``lo``, one interface per ``netN`` with the address of ``ipconfigN``
    (DHCP interfaces get ``10.0.2.N`` style addresses only after ``dhcp_delay`` more seconds), and the
    interfaces stay addressless until then, as a booting guest's do.
    """

    def __init__(
        self,
        agent_delay: float = 0.5,
        dhcp_delay: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.agent_delay = agent_delay
        self.dhcp_delay = dhcp_delay
        self.clock = clock
        self.running: dict[tuple[str, int], float] = {}
        self.start_failures: dict[int, str] = {}

    def start(
        self, node: str, vmid: int, config: Mapping[str, str], seed: Mapping[str, str] | None = None
    ) -> None:
        message = self.start_failures.pop(vmid, None)
        if message is not None:
            raise RuntimeError(message)
        self.running[(node, vmid)] = self.clock()

    def stop(self, node: str, vmid: int) -> None:
        self.running.pop((node, vmid), None)

    def shutdown(self, node: str, vmid: int, timeout: float) -> None:
        self.stop(node, vmid)

    def destroy(self, node: str, vmid: int) -> None:
        self.running.pop((node, vmid), None)

    def status(self, node: str, vmid: int) -> str:
        return "running" if (node, vmid) in self.running else "stopped"

    def addresses(self, node: str, vmid: int, config: Mapping[str, str]) -> list[GuestInterface] | None:
        started = self.running.get((node, vmid))
        if started is None or _agent_enabled(config) != "1":
            return None
        age = self.clock() - started
        if age < self.agent_delay:
            return None
        interfaces = [
            GuestInterface("lo", "00:00:00:00:00:00", (("ipv4", "127.0.0.1", 8), ("ipv6", "::1", 128)))
        ]
        nets = sorted(
            (k for k in config if k.startswith("net") and k[3:].isdigit()), key=lambda k: int(k[3:])
        )
        for position, key in enumerate(nets):
            index = key[3:]
            addresses = _ipconfig_addresses(config.get(f"ipconfig{index}", ""))
            dhcp = not addresses
            if dhcp and age >= self.agent_delay + self.dhcp_delay:
                addresses = (("ipv4", f"10.0.2.{15 + position}", 24),)
            interfaces.append(GuestInterface(f"eth{position}", _mac_of(config, key), addresses))
        # a guest also has interfaces without an address yet (a bridge being set up, for instance)
        interfaces.append(GuestInterface("cni0", "02:42:ac:11:00:02", ()))
        return interfaces


def _agent_enabled(config: Mapping[str, str]) -> str:
    value = config.get("agent", "0")
    first = value.split(",")[0]
    if first.startswith("enabled="):
        first = first.split("=", 1)[1]
    return first
