"""The cluster DNS as CoreDNS's ``kubernetes`` plugin answers it, served on each node's bridge gateway and
reached at ``cluster-dns`` (10.43.0.10) through kube-proxy's DNAT: ``<svc>.<ns>.svc.<domain>`` A records with
the ClusterIP (headless Services: the ready pods' IPs), NXDOMAIN for other names in the cluster domain, every
other name forwarded to the node's own resolvers (CoreDNS's ``forward . /etc/resolv.conf``). UDP and TCP."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import struct
from collections.abc import Callable
from pathlib import Path

from ..logs import Logger

A, AAAA, SRV, ANY = 1, 28, 33, 255
NOERROR, SERVFAIL, NXDOMAIN, NOTIMP = 0, 2, 3, 4
TTL = 5  # CoreDNS's kubernetes plugin default


def parse_question(packet: bytes) -> tuple[int, int, str, int, int]:
    """(id, flags, name, qtype, end offset of the question) of a query."""
    ident, flags, qdcount = struct.unpack("!HHH", packet[:6])
    if qdcount < 1:
        raise ValueError("no question")
    pos, labels = 12, []
    while True:
        length = packet[pos]
        pos += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed name in question")
        labels.append(packet[pos : pos + length].decode("ascii", errors="replace"))
        pos += length
    qtype, _qclass = struct.unpack("!HH", packet[pos : pos + 4])
    return ident, flags, ".".join(labels).lower(), qtype, pos + 4


def answer(packet: bytes, rcode: int, addresses: list[str], authoritative: bool = True) -> bytes:
    ident, flags, _name, _qtype, end = parse_question(packet)
    rd = flags & 0x0100
    out_flags = 0x8000 | (0x0400 if authoritative else 0) | rd | 0x0080 | rcode
    header = struct.pack("!HHHHHH", ident, out_flags, 1, len(addresses), 0, 0)
    body = packet[12:end]
    for addr in addresses:
        body += b"\xc0\x0c" + struct.pack("!HHIH", A, 1, TTL, 4) + ipaddress.IPv4Address(addr).packed
    return header + body


class _Client(asyncio.DatagramProtocol):
    def __init__(self, future: asyncio.Future[bytes]) -> None:
        self.future = future

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.future.done():
            self.future.set_result(data)


class ClusterDNS:
    def __init__(self, log: Logger, domain: str, lookup: Callable[[str, str], list[str] | None]) -> None:
        self.log = log
        self.domain = domain.lower().strip(".")
        self.lookup = lookup  # (namespace, service) -> addresses, None when no such Service
        self.upstreams = [
            line.split()[1]
            for line in _read("/etc/resolv.conf").splitlines()
            if line.startswith("nameserver") and len(line.split()) > 1
        ]
        self._servers: list[object] = []
        self.pending: set[asyncio.Task[None]] = set()

    def resolve(self, packet: bytes) -> bytes | None:
        """The answer for names of the cluster domain, or None (forward it)."""
        _ident, _flags, name, qtype, _end = parse_question(packet)
        suffix = "." + self.domain
        if not (name == self.domain or name.endswith(suffix)):
            return None
        parts = name[: -len(suffix)].split(".") if name != self.domain else []
        if len(parts) == 3 and parts[2] == "svc":
            addresses = self.lookup(parts[1], parts[0])
            if addresses is not None:
                return answer(packet, NOERROR, addresses if qtype in {A, ANY} else [])
        if (len(parts) in {1, 2} and parts[-1] == "svc") or name == self.domain or parts == ["svc"]:
            return answer(packet, NOERROR, [])
        return answer(packet, NXDOMAIN, [])

    async def forward(self, packet: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        for upstream in self.upstreams:
            future: asyncio.Future[bytes] = loop.create_future()
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda future=future: _Client(future),  # type: ignore[misc]
                    remote_addr=(upstream, 53),
                )
            except OSError:
                continue
            try:
                transport.sendto(packet)
                return await asyncio.wait_for(future, 2.0)
            except TimeoutError:
                continue
            finally:
                transport.close()
        return answer(packet, SERVFAIL, [], authoritative=False)

    async def handle(self, packet: bytes) -> bytes:
        try:
            reply = self.resolve(packet)
        except (ValueError, IndexError, struct.error):
            return b""
        return reply if reply is not None else await self.forward(packet)

    async def start(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        dns = self

        class Server(asyncio.DatagramProtocol):
            transport: asyncio.DatagramTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport  # type: ignore[assignment]

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                async def reply() -> None:
                    out = await dns.handle(data)
                    if out:
                        self.transport.sendto(out, addr)

                task = loop.create_task(reply())
                dns.pending.add(task)
                task.add_done_callback(dns.pending.discard)

        udp, _ = await loop.create_datagram_endpoint(Server, local_addr=(host, 53))

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while True:
                    size = struct.unpack("!H", await reader.readexactly(2))[0]
                    out = await dns.handle(await reader.readexactly(size))
                    if not out:
                        break
                    writer.write(struct.pack("!H", len(out)) + out)
                    await writer.drain()
            writer.close()

        server = await asyncio.start_server(tcp, host, 53)
        self._servers = [udp, server]
        self.log.info(f"Cluster DNS for {self.domain} listening on {host}:53")

    def close(self) -> None:
        for server in self._servers:
            with contextlib.suppress(Exception):
                server.close()  # type: ignore[attr-defined]


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
