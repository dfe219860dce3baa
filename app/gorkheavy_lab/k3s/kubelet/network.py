"""The pod network of a node: the ``cni0`` bridge with the node's podCIDR gateway, a veth per pod (host-local
IPAM as the bridge CNI plugin keeps it under ``/var/lib/cni/networks/cbr0``), routes to the other nodes'
podCIDRs via their InternalIPs (flannel's host-gw backend; K3s's default backend is vxlan), flannel's FORWARD
and masquerade rules, and a kube-proxy in iptables mode: DNAT from each Service's ClusterIP:port to its
ready endpoints, chosen at random as kube-proxy's statistic rules do, masquerade for hairpin traffic, and
REJECT for a Service without endpoints. The cluster DNS address (``cluster-dns``) is DNAT'ed to the node's
own resolver on the bridge gateway (``dns.py``)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..logs import Logger
from .runtime import enter
from .runtime import read_text as _read
from .runtime import run_command as sh

BRIDGE = "cni0"
IPAM_DIR = Path("/var/lib/cni/networks/cbr0")
MARK = "0x4000/0x4000"
SERVICE_NAME = "kubernetes.io/service-name"


async def must(*argv: str) -> str:
    code, out = await sh(*argv)
    if code != 0:
        raise OSError(f"{' '.join(argv)}: {out}")
    return out


@dataclass(frozen=True)
class ServicePort:
    namespace: str
    name: str
    port_name: str
    cluster_ip: str
    port: int
    protocol: str
    endpoints: tuple[tuple[str, int], ...]

    @property
    def chain_id(self) -> str:
        # kube-proxy: base32 of the sha256 of "<ns>/<svc>:<port>" + protocol, first 16 characters
        text = f"{self.namespace}/{self.name}:{self.port_name}{self.protocol.lower()}"
        return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def service_ports(
    services: list[dict[str, Any]], slices: list[dict[str, Any]], skip_ip: str
) -> list[ServicePort]:
    """ClusterIP Services and their ready endpoints, from the EndpointSlices (discovery.k8s.io/v1) labelled
    ``kubernetes.io/service-name``, as kube-proxy reads them: an endpoint whose ``conditions.ready`` is not
    false, the slice's port of the same name."""
    by_service: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for item in slices:
        meta = item.get("metadata", {})
        name = (meta.get("labels") or {}).get(SERVICE_NAME)
        if name and item.get("addressType", "IPv4") == "IPv4":
            by_service.setdefault((meta.get("namespace", ""), name), []).append(item)
    out = []
    for svc in services:
        spec = svc.get("spec", {})
        ip = spec.get("clusterIP")
        if not ip or ip in {"None", skip_ip}:
            continue
        meta = svc["metadata"]
        for port in spec.get("ports") or []:
            port_name = port.get("name", "")
            protocol = port.get("protocol", "TCP")
            endpoints: set[tuple[str, int]] = set()
            for item in by_service.get((meta["namespace"], meta["name"]), []):
                numbers = [
                    int(p["port"])
                    for p in item.get("ports") or []
                    if p.get("name", "") == port_name
                    and p.get("protocol", "TCP") == protocol
                    and p.get("port")
                ]
                for endpoint in item.get("endpoints") or []:
                    if (endpoint.get("conditions") or {}).get("ready") is False:
                        continue
                    for address in endpoint.get("addresses") or []:
                        endpoints.update((address, n) for n in numbers)
            out.append(
                ServicePort(
                    meta["namespace"],
                    meta["name"],
                    port_name,
                    ip,
                    int(port["port"]),
                    protocol,
                    tuple(sorted(endpoints)),
                )
            )
    return out


def proxy_rules(ports: list[ServicePort], dns_ip: str, dns_target: str, cluster_cidr: str) -> tuple[str, str]:
    """(nat, filter) iptables-restore payloads for kube-proxy's chains (--noflush: only ours are touched)."""
    nat = ["*nat", ":KUBE-SERVICES - [0:0]", ":KUBE-MARK-MASQ - [0:0]", ":KUBE-POSTROUTING - [0:0]"]
    nat += [":FLANNEL-POSTRTG - [0:0]"]
    body = [
        f"-A KUBE-MARK-MASQ -j MARK --set-xmark {MARK}",
        f"-A KUBE-POSTROUTING -m mark ! --mark {MARK} -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE',
        f"-A FLANNEL-POSTRTG -s {cluster_cidr} -d {cluster_cidr} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {cluster_cidr} ! -d 224.0.0.0/4 -j MASQUERADE",
    ]
    filt = ["*filter", ":KUBE-SERVICES - [0:0]", ":FLANNEL-FWD - [0:0]"]
    fbody = [
        f'-A FLANNEL-FWD -s {cluster_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
        f'-A FLANNEL-FWD -d {cluster_cidr} -m comment --comment "flanneld forward" -j ACCEPT',
    ]
    for proto in ("udp", "tcp"):
        body.append(
            f"-A KUBE-SERVICES -d {dns_ip}/32 -p {proto} -m {proto} --dport 53 "
            f'-m comment --comment "kube-system/kube-dns:dns{"-tcp" if proto == "tcp" else ""}" '
            f"-j DNAT --to-destination {dns_target}:53"
        )
    for sp in ports:
        proto = sp.protocol.lower()
        comment = f"{sp.namespace}/{sp.name}:{sp.port_name}" if sp.port_name else f"{sp.namespace}/{sp.name}"
        if not sp.endpoints:
            fbody.append(
                f"-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {proto} -m {proto} --dport {sp.port} "
                f'-m comment --comment "{comment} has no endpoints" -j REJECT'
                " --reject-with icmp-port-unreachable"
            )
            continue
        svc_chain = f"KUBE-SVC-{sp.chain_id}"
        nat.append(f":{svc_chain} - [0:0]")
        body.append(
            f"-A KUBE-SERVICES -d {sp.cluster_ip}/32 -p {proto} -m {proto} --dport {sp.port} "
            f'-m comment --comment "{comment} cluster IP" -j {svc_chain}'
        )
        body.append(
            f"-A {svc_chain} ! -s {cluster_cidr} -d {sp.cluster_ip}/32 -p {proto} -m {proto} "
            f"--dport {sp.port} -j KUBE-MARK-MASQ"
        )
        count = len(sp.endpoints)
        for i, (ip, port) in enumerate(sp.endpoints):
            sep = (
                "KUBE-SEP-"
                + base64.b32encode(hashlib.sha256(f"{sp.chain_id}{ip}:{port}".encode()).digest()).decode()[
                    :16
                ]
            )
            nat.append(f":{sep} - [0:0]")
            left = count - i
            if left > 1:
                body.append(
                    f"-A {svc_chain} -m statistic --mode random --probability {1 / left:.11f} -j {sep}"
                )
            else:
                body.append(f"-A {svc_chain} -j {sep}")
            body.append(f"-A {sep} -s {ip}/32 -j KUBE-MARK-MASQ")
            body.append(f"-A {sep} -p {proto} -m {proto} -j DNAT --to-destination {ip}:{port}")
    return "\n".join([*nat, *body, "COMMIT", ""]), "\n".join([*filt, *fbody, "COMMIT", ""])


# the jumps into our chains, added once (iptables -C ... || iptables -I ...)
JUMPS = (
    (
        "nat",
        "PREROUTING",
        ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"],
    ),
    ("nat", "OUTPUT", ["-m", "comment", "--comment", "kubernetes service portals", "-j", "KUBE-SERVICES"]),
    (
        "nat",
        "POSTROUTING",
        ["-m", "comment", "--comment", "kubernetes postrouting rules", "-j", "KUBE-POSTROUTING"],
    ),
    ("nat", "POSTROUTING", ["-m", "comment", "--comment", "flanneld masq", "-j", "FLANNEL-POSTRTG"]),
    ("filter", "FORWARD", ["-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"]),
    ("filter", "OUTPUT", ["-m", "conntrack", "--ctstate", "NEW", "-j", "KUBE-SERVICES"]),
    ("filter", "FORWARD", ["-m", "conntrack", "--ctstate", "NEW", "-j", "KUBE-SERVICES"]),
)


class Network:
    def __init__(self, log: Logger, *, cluster_cidr: str, dns_ip: str) -> None:
        self.log = log
        self.cluster_cidr = cluster_cidr
        self.dns_ip = dns_ip
        self.pod_cidr = ""
        self.gateway = ""
        self._chains: set[str] = set()
        self._routes: dict[str, str] = {}
        self._last_rules: tuple[str, str] | None = None
        self._lock = asyncio.Lock()
        self._jumps_done = False

    async def setup(self, pod_cidr: str) -> None:
        """The bridge with the gateway (first address of the podCIDR), up."""
        net = ipaddress.ip_network(pod_cidr, strict=False)
        self.pod_cidr = str(net)
        self.gateway = str(next(net.hosts()))
        code, _ = await sh("ip", "link", "show", BRIDGE)
        if code != 0:
            await must("ip", "link", "add", BRIDGE, "type", "bridge")
        await sh("ip", "addr", "replace", f"{self.gateway}/{net.prefixlen}", "dev", BRIDGE)
        await must("ip", "link", "set", BRIDGE, "up")
        if _read("/proc/sys/net/ipv4/ip_forward").strip() == "0":
            self.log.warning(
                "net.ipv4.ip_forward is 0 on this node: pods cannot reach other nodes or Services behind them"
            )
        os.makedirs(IPAM_DIR, exist_ok=True)

    def _allocate(self, owner: str) -> str:
        net = ipaddress.ip_network(self.pod_cidr)
        for path in IPAM_DIR.iterdir():
            if path.name[0].isdigit() and path.read_text().split("\n", 1)[0] == owner:
                return path.name
        for host in list(net.hosts())[1:]:
            path = IPAM_DIR / str(host)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(f"{owner}\neth0")
            (IPAM_DIR / "last_reserved_ip.0").write_text(str(host))
            return str(host)
        raise OSError(f"failed to allocate for range 0: no IP addresses available in range set: {net}")

    def release(self, owner: str) -> None:
        if not IPAM_DIR.is_dir():
            return
        for path in IPAM_DIR.iterdir():
            if path.name[0].isdigit() and path.read_text().split("\n", 1)[0] == owner:
                path.unlink(missing_ok=True)

    async def attach(self, sandbox_pid: int, owner: str) -> str:
        """A veth from the sandbox's network namespace into cni0; returns the pod IP."""
        async with self._lock:
            ip = self._allocate(owner)
        prefix = ipaddress.ip_network(self.pod_cidr).prefixlen
        host_end = "veth" + secrets.token_hex(4)
        peer = "p" + host_end[4:] + "x"
        await must("ip", "link", "add", host_end, "type", "veth", "peer", "name", peer)
        await must("ip", "link", "set", peer, "netns", str(sandbox_pid))
        await must("ip", "link", "set", host_end, "master", BRIDGE, "up")
        inside = enter(sandbox_pid, net=True)
        await must(*inside, "ip", "link", "set", peer, "name", "eth0")
        await must(*inside, "ip", "addr", "add", f"{ip}/{prefix}", "dev", "eth0")
        await must(*inside, "ip", "link", "set", "eth0", "up")
        await must(*inside, "ip", "route", "add", "default", "via", self.gateway)
        return ip

    async def routes(self, nodes: list[dict[str, Any]], own: str) -> None:
        """host-gw: a route to every other node's podCIDR via its InternalIP."""
        wanted = {}
        for node in nodes:
            name = node["metadata"]["name"]
            cidr = node.get("spec", {}).get("podCIDR")
            ip = next(
                (
                    a["address"]
                    for a in node.get("status", {}).get("addresses") or []
                    if a.get("type") == "InternalIP"
                ),
                "",
            )
            if name != own and cidr and ip:
                wanted[cidr] = ip
        for cidr, ip in wanted.items():
            if self._routes.get(cidr) != ip:
                code, out = await sh("ip", "route", "replace", cidr, "via", ip)
                if code != 0:
                    self.log.error(f"failed to add route {cidr} via {ip}: {out}")
                    continue
                self._routes[cidr] = ip
        for cidr in set(self._routes) - set(wanted):
            await sh("ip", "route", "del", cidr)
            del self._routes[cidr]

    async def proxy(self, ports: list[ServicePort]) -> None:
        rules = proxy_rules(ports, self.dns_ip, self.gateway, self.cluster_cidr)
        if rules == self._last_rules:
            return
        if not self._jumps_done:
            for table, chain, spec in JUMPS:
                tname = "KUBE-SERVICES" if spec[-1] == "KUBE-SERVICES" else spec[-1]
                await sh("iptables", "-t", table, "-N", tname)
                code, _ = await sh("iptables", "-t", table, "-C", chain, *spec)
                if code != 0:
                    await sh("iptables", "-t", table, "-I", chain, "1", *spec)
            # the node's resolver on the bridge gateway answers pods (ufw denies incoming by default)
            for proto in ("udp", "tcp"):
                spec = ["-i", BRIDGE, "-p", proto, "--dport", "53", "-j", "ACCEPT"]
                code, _ = await sh("iptables", "-C", "INPUT", *spec)
                if code != 0:
                    await sh("iptables", "-I", "INPUT", "1", *spec)
            self._jumps_done = True
        nat, filt = rules
        chains = {line[1:].split()[0] for line in nat.splitlines() if line.startswith(":KUBE-S")}
        stale = self._chains - chains
        if stale:  # flush then delete the chains of Services and endpoints that are gone
            nat = nat.replace("COMMIT\n", "".join(f"-X {c}\n" for c in sorted(stale)) + "COMMIT\n")
            nat = nat.replace("*nat\n", "*nat\n" + "".join(f":{c} - [0:0]\n" for c in sorted(stale)))
        for payload in (nat, filt):
            proc = await asyncio.create_subprocess_exec(
                "iptables-restore",
                "--noflush",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            out, _ = await proc.communicate(payload.encode())
            if proc.returncode != 0:
                self.log.error(f"Failed to execute iptables-restore: {out.decode(errors='replace').strip()}")
                return
        self._chains = chains
        self._last_rules = rules
