"""``k3s agent``: join a cluster as K3s's agent does, then keep the node's heartbeats.

The join protocol (k3s-io/k3s ``pkg/agent/config``, ``pkg/clientaccess``, ``pkg/agent/loadbalancer``):
1. a client-side load balancer listens on ``127.0.0.1:<lb-server-port>`` (6444) and forwards to the server;
2. every 2 s until it works: fetch ``/cacerts`` (no verification), fetch it again verifying the server
   certificate with that bundle, and compare the bundle's sha256 with the token's CA hash; failures are logged
   as ``Failed to validate connection to cluster at <server>: <error>`` (level error);
3. every 5 s until it works: ``GET /v1-k3s/config`` and ``/v1-k3s/client-kubelet.crt`` with basic auth
   ``node:<password>``; failures are logged as ``Waiting to retrieve agent configuration; server is not ready:
   <error>`` (level info); a wrong password gives ``failed to retrieve configuration from server: not
   authorized``;
4. the kubelet registers the Node with the client certificate, renews its Lease in ``kube-node-lease`` every
   10 s (the heartbeat) and posts node status when it changes or every 5 minutes
   (``nodeStatusReportFrequency``), as the kubelet does since node leases.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import socket
import ssl
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from . import systemd
from .kube.store import now_rfc3339
from .logs import Logger
from .node import STATUS_REPORT_SECONDS, NodeIdentity, lease
from .release import Release
from .tokens import Token, TokenError, ca_hash, parse

VALIDATE_RETRY = 2.0
CONFIG_RETRY = 5.0
CLIENT_TIMEOUT = 10.0


class JoinError(Exception):
    """One failed step of the join protocol, worded as K3s words it."""


def go_error(url: str, exc: BaseException, local: str = "") -> str:
    """An aiohttp failure in the words of Go's net/http client."""
    parts = urlsplit(url)
    host = f"{parts.hostname}:{parts.port or 443}"
    if isinstance(exc, asyncio.TimeoutError):
        return f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)'
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return (
            f'Get "{url}": tls: failed to verify certificate: x509: certificate signed by unknown authority'
        )
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, ConnectionResetError):
        return f'Get "{url}": read tcp {local or "127.0.0.1"}->{host}: read: connection reset by peer'
    if isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        if isinstance(err, ConnectionRefusedError):
            return f'Get "{url}": dial tcp {host}: connect: connection refused'
        if isinstance(err, OSError) and err.errno == 113:
            return f'Get "{url}": dial tcp {host}: connect: no route to host'
        return f'Get "{url}": dial tcp {host}: {exc.os_error}'
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return f'Get "{url}": EOF'
    if isinstance(exc, aiohttp.ClientOSError | ConnectionResetError):
        return f'Get "{url}": read tcp {local or "127.0.0.1"}->{host}: read: connection reset by peer'
    return f'Get "{url}": {exc}'


class LoadBalancer:
    """K3s's agent-side TCP load balancer: local clients reach the server through ``127.0.0.1:<port>``.
    When the server cannot be dialled the client connection is reset, as K3s's balancer does."""

    name = "k3s-agent-load-balancer"

    def __init__(self, port: int, server: str, log: Logger) -> None:
        self.port = port
        self.server = server
        self.log = log
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.log.info(
            f"Running load balancer {self.name} 127.0.0.1:{self.port} -> [{self.server}] "
            f"[default: {self.server}]"
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.server.rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
        except (TimeoutError, OSError) as exc:
            self.log.debug(f"Dial error from load balancer {self.name} after 1 attempts: {exc}")
            sock = writer.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.close()
            return

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                with contextlib.suppress(OSError):
                    dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@dataclass
class AgentConfig:
    server_url: str  # as given (--server), for log lines
    supervisor: str  # where requests go: the load balancer, or the server itself
    token: Token
    identity: NodeIdentity
    data_dir: Path
    node_password_file: Path
    release: Release


def _ssl_context(ca_pem: bytes, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata=ca_pem.decode())
    ctx.check_hostname = False  # the balancer address is 127.0.0.1; the chain is still verified
    if cert is not None and key is not None:
        ctx.load_cert_chain(str(cert), str(key))
    return ctx


async def fetch_cacerts(supervisor: str, token: Token, log: Logger) -> bytes:
    url = f"{supervisor}/cacerts"
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            async with session.get(url, ssl=False) as resp:
                if resp.status != 200:
                    raise JoinError(f"failed to get CA certs: {url}: {resp.status} {resp.reason}")
                cacerts = await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise JoinError(f"failed to get CA certs: {go_error(url, exc)}") from exc
        try:
            async with session.get(url, ssl=_ssl_context(cacerts)) as resp:
                await resp.read()
        except (TimeoutError, aiohttp.ClientError, OSError, ssl.SSLError) as exc:
            raise JoinError(f"CA cert validation failed: {go_error(url, exc)}") from exc
    if not token.ca_hash:
        log.warning(
            "Cluster CA certificate is not trusted by the host CA bundle, but the token does not include "
            "a CA hash. Use the full token from the server's node-token file to enable Cluster CA validation."
        )
    elif token.ca_hash != ca_hash(cacerts):
        raise JoinError(
            "token CA hash does not match the Cluster CA certificate hash: "
            f"{token.ca_hash} != {ca_hash(cacerts)}"
        )
    return cacerts


def node_password(path: Path) -> str:
    if path.is_file():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value + "\n")
    return value


class Agent:
    def __init__(self, config: AgentConfig, log: Logger) -> None:
        self.config = config
        self.log = log
        self.cacerts = b""
        self.session: aiohttp.ClientSession | None = None
        self.registered = asyncio.Event()
        self._status_posted = time.monotonic()

    def _basic(self) -> dict[str, str]:
        creds = base64.b64encode(f"node:{self.config.token.password}".encode()).decode()
        return {"Authorization": f"Basic {creds}"}

    async def validate(self) -> None:
        while True:
            try:
                self.cacerts = await fetch_cacerts(self.config.supervisor, self.config.token, self.log)
                return
            except JoinError as exc:
                self.log.error(f"Failed to validate connection to cluster at {self.config.server_url}: {exc}")
            await asyncio.sleep(VALIDATE_RETRY)

    async def _supervisor_get(self, path: str, headers: dict[str, str], what: str) -> bytes:
        url = f"{self.config.supervisor}{path}"
        timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(
                    url, headers={**self._basic(), **headers}, ssl=_ssl_context(self.cacerts)
                ) as resp,
            ):
                body = await resp.read()
                if resp.status == 401:
                    raise JoinError(f"{what}: not authorized")
                if resp.status != 200:
                    raise JoinError(
                        f"{what}: {url}: {resp.status} {resp.reason} {body.decode(errors='replace')}".strip()
                    )
                return body
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise JoinError(f"{what}: {go_error(url, exc)}") from exc

    async def retrieve_config(self) -> tuple[dict[str, Any], Path, Path]:
        agent_dir = self.config.data_dir / "agent"
        agent_dir.mkdir(parents=True, exist_ok=True)
        password = node_password(self.config.node_password_file)
        while True:
            try:
                control = json.loads(
                    await self._supervisor_get(
                        "/v1-k3s/config", {}, "failed to retrieve configuration from server"
                    )
                )
                bundle = await self._supervisor_get(
                    "/v1-k3s/client-kubelet.crt",
                    {"K3s-Node-Name": self.config.identity.name, "K3s-Node-Password": password},
                    f"failed to get {agent_dir / 'client-kubelet.crt'}",
                )
                break
            except JoinError as exc:
                self.log.info(f"Waiting to retrieve agent configuration; server is not ready: {exc}")
            await asyncio.sleep(CONFIG_RETRY)
        text = bundle.decode()
        key_at = text.index("-----BEGIN EC PRIVATE KEY-----")
        cert, key = agent_dir / "client-kubelet.crt", agent_dir / "client-kubelet.key"
        for path, data, mode in ((cert, text[:key_at], 0o644), (key, text[key_at:], 0o600)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "w") as fh:
                fh.write(data)
            os.chmod(path, mode)
        (agent_dir / "server-ca.crt").write_bytes(self.cacerts)
        return control, cert, key

    async def _api(
        self, method: str, path: str, body: Any = None, ctype: str = "application/json"
    ) -> tuple[int, Any]:
        assert self.session is not None
        url = f"{self.config.supervisor}{path}"
        data = None if body is None else json.dumps(body)
        async with self.session.request(method, url, data=data, headers={"Content-Type": ctype}) as resp:
            text = await resp.text()
            return resp.status, (json.loads(text) if text.startswith("{") else text)

    async def register(self, control: dict[str, Any]) -> None:
        ident = self.config.identity
        # spec.podCIDR is not the kubelet's: the controller-manager's node IPAM assigns it after registration
        obj = ident.node_object(self.config.release)
        status, body = await self._api("POST", "/api/v1/nodes", obj)
        if status == 409:
            # re-registration keeps the node's labels and taints (flags apply only at registration) and the
            # transition time of every condition whose status did not change
            fresh = ident.status(self.config.release)
            _, current = await self._api("GET", f"/api/v1/nodes/{ident.name}")
            old = (
                {c.get("type"): c for c in (current.get("status", {}).get("conditions") or [])}
                if isinstance(current, dict)
                else {}
            )
            for cond in fresh["conditions"]:
                before = old.get(cond["type"])
                if (
                    before is not None
                    and before.get("status") == cond["status"]
                    and before.get("lastTransitionTime")
                ):
                    cond["lastTransitionTime"] = before["lastTransitionTime"]
            status, body = await self._api(
                "PATCH",
                f"/api/v1/nodes/{ident.name}/status",
                {"status": fresh},
                "application/strategic-merge-patch+json",
            )
            await self._clear_unreachable()
        if status >= 300:
            raise JoinError(f"failed to register node {ident.name}: {body}")
        await self._event("Starting", "Starting kubelet.")
        await self._event("NodeReady", f"Node {ident.name} status is now: NodeReady")
        self.log.info(f"Annotations and labels have been set successfully on node: {ident.name}")

    async def _event(self, reason: str, message: str) -> None:
        """An Event about this Node, as the kubelet records them (namespace default, source kubelet)."""
        name = self.config.identity.name
        stamp = now_rfc3339()
        await self._api(
            "POST",
            "/api/v1/namespaces/default/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"generateName": f"{name}."},
                "involvedObject": {"kind": "Node", "name": name, "uid": name, "apiVersion": "v1"},
                "reason": reason,
                "message": message,
                "source": {"component": "kubelet", "host": name},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": "Normal",
                "reportingComponent": "kubelet",
                "reportingInstance": name,
            },
        )

    async def _clear_unreachable(self) -> None:
        status, node = await self._api("GET", f"/api/v1/nodes/{self.config.identity.name}")
        if status != 200 or not isinstance(node, dict):
            return
        taints = node.get("spec", {}).get("taints") or []
        kept = [t for t in taints if t.get("key") != "node.kubernetes.io/unreachable"]
        if kept != taints:
            await self._api(
                "PATCH",
                f"/api/v1/nodes/{self.config.identity.name}",
                {"spec": {"taints": kept or None}},
                "application/merge-patch+json",
            )

    async def heartbeat(self) -> None:
        name = self.config.identity.name
        status, _ = await self._api(
            "GET", f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        )
        if status == 404:
            await self._api(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
                lease(name, name, self.config.identity.lease_seconds),
            )
        else:
            await self._api(
                "PATCH",
                f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}",
                {"spec": lease(name, name, self.config.identity.lease_seconds)["spec"]},
                "application/merge-patch+json",
            )
        stamp = now_rfc3339()
        status, node = await self._api("GET", f"/api/v1/nodes/{name}")
        if status != 200 or not isinstance(node, dict):
            return
        conditions = node.get("status", {}).get("conditions", [])
        ready: dict[str, Any] = next((c for c in conditions if c.get("type") == "Ready"), {})
        due = time.monotonic() - self._status_posted >= STATUS_REPORT_SECONDS
        if ready.get("status") == "True" and not due:
            return  # the lease is the heartbeat; status is posted on change or every 5 minutes
        self._status_posted = time.monotonic()
        changed = False
        for cond in conditions:
            cond["lastHeartbeatTime"] = stamp
            if cond["type"] == "Ready" and cond.get("status") != "True":
                cond.update(
                    status="True",
                    reason="KubeletReady",
                    message="kubelet is posting ready status",
                    lastTransitionTime=stamp,
                )
                changed = True
        if changed:
            await self._clear_unreachable()
        await self._api(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"conditions": conditions}},
            "application/strategic-merge-patch+json",
        )

    async def run(self, notify: bool = True) -> None:
        self.log.info(
            f"Starting k3s agent {self.config.release.version} ({self.config.release.short_commit})"
        )
        await self.validate()
        control, cert, key = await self.retrieve_config()
        connector = aiohttp.TCPConnector(ssl=_ssl_context(self.cacerts, cert, key))
        self.session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
        )
        try:
            while True:
                try:
                    await self.register(control)
                    break
                except (TimeoutError, JoinError, aiohttp.ClientError, OSError) as exc:
                    self.log.error(f"Failed to register node: {exc}")
                    await asyncio.sleep(CONFIG_RETRY)
            ok = await self._safe_heartbeat()
            self.registered.set()
            kubelet = asyncio.create_task(self._kubelet(control))
            if notify:  # on a server the server notifies systemd, on agent-only nodes the agent does
                self.log.info("k3s agent is up and running")
                systemd.notify()
            # the kubelet's lease controller: renew every quarter of the lease duration (10 s); after a
            # failure retry with a backoff from 200 ms doubling up to 7 s
            backoff = 0.2
            while True:
                await asyncio.sleep(self.config.identity.renew_interval if ok else backoff)
                backoff = 0.2 if ok else min(backoff * 2, 7.0)
                ok = await self._safe_heartbeat()
        finally:
            if "kubelet" in locals():
                kubelet.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await kubelet
            await self.session.close()

    async def _kubelet(self, control: dict[str, Any]) -> None:
        """The kubelet's pod side (``kubelet/``): runs the pods bound to this node."""
        from .kubelet import Kubelet  # noqa: PLC0415

        assert self.session is not None
        await Kubelet(
            session=self.session,
            base=self.config.supervisor,
            api=self._api,
            supervisor_get=self._supervisor_get,
            node_name=self.config.identity.name,
            node_ip=self.config.identity.ip,
            hostname=self.config.identity.hostname,
            data_dir=self.config.data_dir,
            control=control,
            log=self.log,
            kube_version=self.config.release.version,
        ).run()

    async def _safe_heartbeat(self) -> bool:
        try:
            await self.heartbeat()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            self.log.error(f"Failed to update node status: {exc}")
            return False
        return True


def read_token(values: dict[str, Any]) -> str:
    if values.get("token-file"):
        return Path(values["token-file"]).read_text().strip()
    return str(values.get("token", "") or "")


def token_or_error(raw: str) -> Token:
    try:
        return parse(raw)
    except TokenError as exc:
        raise JoinError(str(exc)) from exc
