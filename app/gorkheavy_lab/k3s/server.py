"""``k3s server``: CA and certificates, the token files, the admin kubeconfig, the supervisor endpoints agents
join through and the Kubernetes API, all on one HTTPS port (6443) as K3s serves them; the server also runs
its own agent, so it registers its own Node (labelled ``node-role.kubernetes.io/control-plane=true``)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from . import controllers, images, serving, systemd
from .agent import Agent, AgentConfig
from .kube import core, workloads
from .kube.api import ApiServer
from .kube.extensions import Cluster, Extension
from .kube.registry import Registry
from .kube.store import Store
from .logs import Logger
from .node import NodeIdentity, default_ip, parse_label, parse_taint
from .pki import ServerPKI, write_file
from .release import Release
from .stream import apiserver as stream_api
from .tokens import TokenError, parse

# What the server's API is made of; a later stage appends its own extension here (kube/extensions.py).
EXTENSIONS: tuple[Extension, ...] = (
    core.extension,
    workloads.extension,
    stream_api.extension,
    controllers.extension,
)


class FatalError(Exception):
    """K3s stops with ``level=fatal msg=...`` and exit code 1."""


def etc_dir() -> Path:
    # Stand-in only: tests that run outside a test host point this elsewhere; K3s itself uses /etc/rancher.
    return Path(os.environ.get("GORKHEAVY_K3S_ETC", "/etc/rancher"))


def _values_list(values: dict[str, Any], key: str) -> list[str]:
    out: list[str] = []
    for item in values.get(key, []) or []:
        out.extend(p.strip() for p in str(item).split(",") if p.strip())
    return out


def parse_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError as exc:
        raise FatalError(f'invalid write-kubeconfig-mode "{text}": {exc}') from exc
    return mode


def identity(
    values: dict[str, Any], args: list[str], server_role: bool, towards: str = "1.1.1.1"
) -> NodeIdentity:
    hostname = socket.gethostname()
    name = str(values.get("node-name") or hostname).lower()
    if values.get("with-node-id"):
        # one id per node, kept across restarts so that the node keeps its name
        id_file = etc_dir() / "node" / "node-id"
        if not id_file.is_file():
            write_file(id_file, secrets.token_hex(4).encode() + b"\n", 0o600)
        name = f"{name}-{id_file.read_text().strip()}"
    ips = _values_list(values, "node-ip")
    ip = ips[0] if ips else default_ip(towards)
    labels = {}
    for text in values.get("node-label", []) or []:
        try:
            key, value = parse_label(text)
        except ValueError as exc:
            raise FatalError(str(exc)) from exc
        labels[key] = value
    taints = []
    for text in values.get("node-taint", []) or []:
        try:
            taints.append(parse_taint(text))
        except ValueError as exc:
            raise FatalError(f"failed to parse node taints: {exc}") from exc
    redacted = []
    skip = False
    for arg in args:
        if skip:
            redacted.append("********")
            skip = False
        elif arg in {"--token", "-t", "--agent-token"}:
            redacted.append(arg)
            skip = True
        elif arg.split("=", 1)[0] in {"--token", "-t", "--agent-token"}:
            redacted.append(arg.split("=", 1)[0] + "=********")
        else:
            redacted.append(arg)
    env = {k: "********" for k in os.environ if k in {"K3S_TOKEN", "K3S_AGENT_TOKEN"}}
    env.update({k: v for k, v in os.environ.items() if k in {"K3S_URL", "K3S_DATA_DIR"}})
    ident = NodeIdentity(name, ip, hostname, labels, taints, server_role, redacted, env)
    for arg in _values_list(values, "kubelet-arg"):
        key, _, value = arg.lstrip("-").partition("=")
        if key == "node-lease-duration-seconds" and value.isdigit():
            ident.lease_seconds = int(value)
    return ident


@dataclass
class Credentials:
    server_password: str
    agent_password: str


def load_credentials(data_dir: Path, values: dict[str, Any], ca_pem: bytes) -> Credentials:
    """The server and agent passwords: the operator's (``token``/``token-file``, ``agent-token``/``-file``) or
    generated on first start, kept in ``server/cred/passwd`` and checked on every later start."""

    def given(value_key: str, file_key: str) -> str:
        if values.get(file_key):
            try:
                return Path(values[file_key]).read_text().strip()
            except OSError as exc:
                raise FatalError(f"failed to read token file {values[file_key]}: {exc.strerror}") from exc
        return str(values.get(value_key) or "")

    def password_of(raw: str) -> str:
        if not raw:
            return ""
        try:
            token = parse(raw)
        except TokenError as exc:
            raise FatalError(
                f"starting kubernetes: preparing server: failed to normalize server token: {exc}"
            ) from exc
        digest = hashlib.sha256(ca_pem).hexdigest()
        if token.ca_hash and token.ca_hash != digest:
            raise FatalError(
                "starting kubernetes: preparing server: token CA hash does not match the Cluster CA "
                f"certificate hash: {token.ca_hash} != {digest}"
            )
        return token.password

    server_pw = password_of(given("token", "token-file"))
    agent_pw = password_of(given("agent-token", "agent-token-file"))
    passwd = data_dir / "server" / "cred" / "passwd"
    stored: dict[str, str] = {}
    if passwd.is_file():
        for line in passwd.read_text().splitlines():
            fields = line.split(",")
            if len(fields) >= 2:
                stored[fields[1]] = fields[0]
    if "server" in stored:
        if server_pw and not hmac.compare_digest(server_pw, stored["server"]):
            raise FatalError(
                "starting kubernetes: preparing server: bootstrap data already found and encrypted "
                "with different token"
            )
        server_pw = stored["server"]
    server_pw = server_pw or secrets.token_hex(16)
    agent_pw = agent_pw or stored.get("node", "") or server_pw
    text = f"{server_pw},server,server,k3s:server\n{agent_pw},node,node,k3s:agent\n"
    write_file(passwd, text.encode(), 0o600)
    return Credentials(server_pw, agent_pw)


def write_tokens(data_dir: Path, creds: Credentials, ca_pem: bytes) -> None:
    digest = hashlib.sha256(ca_pem).hexdigest()
    server_dir = data_dir / "server"
    write_file(server_dir / "token", f"K10{digest}::server:{creds.server_password}\n".encode(), 0o600)
    for link in ("node-token", "agent-token"):
        path = server_dir / link
        if path.is_symlink() or path.exists():
            path.unlink()
    (server_dir / "node-token").symlink_to("token")
    if creds.agent_password != creds.server_password:
        write_file(server_dir / "agent-token", f"K10{digest}::node:{creds.agent_password}\n".encode(), 0o600)
    else:
        (server_dir / "agent-token").symlink_to("token")


def write_kubeconfig(
    path: Path, server: str, ca_pem: bytes, admin: tuple[bytes, bytes], *, mode: int, group: str | None
) -> None:
    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    config = {
        "apiVersion": "v1",
        "clusters": [
            {"cluster": {"certificate-authority-data": b64(ca_pem), "server": server}, "name": "default"}
        ],
        "contexts": [{"context": {"cluster": "default", "user": "default"}, "name": "default"}],
        "current-context": "default",
        "kind": "Config",
        "preferences": {},
        "users": [
            {
                "name": "default",
                "user": {"client-certificate-data": b64(admin[0]), "client-key-data": b64(admin[1])},
            }
        ],
    }
    write_file(path, yaml.safe_dump(config, default_flow_style=False).encode(), mode)
    if group:
        import grp  # noqa: PLC0415

        try:
            os.chown(path, -1, grp.getgrnam(group).gr_gid)
        except KeyError as exc:
            raise FatalError(f"failed to set kubeconfig group: group {group} not found") from exc


class Supervisor:
    """K3s's supervisor endpoints on the API port: ``/cacerts`` and ``/ping`` anonymous; ``/v1-k3s/*`` with
    basic auth of the ``node`` (agent password) or ``server`` user."""

    def __init__(
        self,
        pki: ServerPKI,
        creds: Credentials,
        values: dict[str, Any],
        *,
        data_dir: Path,
        log: Logger,
        api: ApiServer,
    ) -> None:
        self.pki = pki
        self.creds = creds
        self.values = values
        self.log = log
        self.api = api
        self.passwords = data_dir / "server" / "cred" / "node-passwd"

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/cacerts", self.cacerts),
            web.get("/ping", self.ping),
            web.get("/v1-k3s/config", self.config),
            web.get("/v1-k3s/readyz", self.readyz),
            web.get("/v1-k3s/client-kubelet.crt", self.client_kubelet),
            web.get("/v1-k3s/serving-kubelet.crt", self.serving_kubelet),
            web.get("/v1-k3s/client-ca.crt", self.client_ca),
        ]

    async def cacerts(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.pki.server_ca.pem, content_type="text/plain")

    async def ping(self, _request: web.Request) -> web.Response:
        return web.Response(text="pong", content_type="text/plain")

    def _auth(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                user, password = "", ""
            expected = {"node": self.creds.agent_password, "server": self.creds.server_password}.get(user)
            # a server token also authenticates the node user, as K3s accepts it for agents
            if expected and (
                hmac.compare_digest(password, expected)
                or (user == "node" and hmac.compare_digest(password, self.creds.server_password))
            ):
                return user
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.log.error(
            f"Failed to authenticate request from {peer[0] if peer else '?'}:{peer[1] if peer else 0}: "
            "invalid username/password combination"
        )
        raise web.HTTPUnauthorized(text="Unauthorized\n")

    async def config(self, request: web.Request) -> web.Response:
        self._auth(request)
        cidr = (_values_list(self.values, "cluster-cidr") or ["10.42.0.0/16"])[0]
        return web.json_response(
            {
                "ClusterDomain": self.values.get("cluster-domain", "cluster.local"),
                "ClusterDNS": (_values_list(self.values, "cluster-dns") or ["10.43.0.10"])[0],
                "ClusterIPRange": cidr,
                "ServiceIPRange": (_values_list(self.values, "service-cidr") or ["10.43.0.0/16"])[0],
                "FlannelBackend": self.values.get("flannel-backend", "vxlan"),
                "DisableNPC": bool(self.values.get("disable-network-policy")),
            }
        )

    async def readyz(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.Response(text="ok")

    async def serving_kubelet(self, request: web.Request) -> web.Response:
        """The kubelet's :10250 serving certificate, signed by the server CA (K3s's serving-kubelet.crt)."""
        self._auth(request)
        node = request.headers.get("K3s-Node-Name", "")
        if not node:
            raise web.HTTPBadRequest(text="missing node name header\n")
        ips = tuple(i for i in (request.headers.get("K3s-Node-IP", ""), "127.0.0.1") if i)
        cert, key = self.pki.server_ca.issue(node, dns=(node, "localhost"), ips=ips)
        return web.Response(body=cert + key, content_type="text/plain")

    async def client_ca(self, request: web.Request) -> web.Response:
        self._auth(request)
        return web.Response(body=self.pki.client_ca.pem, content_type="text/plain")

    def _node_passwords(self) -> dict[str, str]:
        if not self.passwords.is_file():
            return {}
        data: dict[str, str] = json.loads(self.passwords.read_text())
        # a deleted Node forgets its password, as K3s deletes the node-password secret with the node
        return {n: p for n, p in data.items() if self.api.store.get(core.NODES, "", n) is not None or n == ""}

    async def client_kubelet(self, request: web.Request) -> web.Response:
        self._auth(request)
        node = request.headers.get("K3s-Node-Name", "")
        password = request.headers.get("K3s-Node-Password", "")
        if not node or not password:
            raise web.HTTPBadRequest(text="missing node name or password header\n")
        digest = hashlib.sha256(password.encode()).hexdigest()
        known = self._node_passwords()
        pending = json.loads(self.passwords.read_text()) if self.passwords.is_file() else {}
        if node in known and not hmac.compare_digest(known[node], digest):
            raise web.HTTPForbidden(
                text="Node password rejected, duplicate hostname or contents of '/etc/rancher/node/password' "
                "may not match server node-passwd entry, try enabling a unique node name with the "
                "--with-node-id flag\n"
            )
        pending[node] = digest
        write_file(self.passwords, json.dumps(pending).encode(), 0o600)
        cert, key = self.pki.node_client(node)
        return web.Response(body=cert + key, content_type="text/plain")


def serving_names(values: dict[str, Any], ident: NodeIdentity) -> tuple[tuple[str, ...], tuple[str, ...]]:
    domain = values.get("cluster-domain", "cluster.local")
    dns = [
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        "localhost",
        ident.hostname,
    ]
    ips = ["127.0.0.1", "::1", ident.ip]
    service = ipaddress.ip_network(
        (_values_list(values, "service-cidr") or ["10.43.0.0/16"])[0], strict=False
    )
    ips.append(str(next(service.hosts())))
    for extra in (
        _values_list(values, "tls-san")
        + _values_list(values, "advertise-address")
        + _values_list(values, "node-external-ip")
    ):
        try:
            ipaddress.ip_address(extra)
            ips.append(extra)
        except ValueError:
            dns.append(extra)
    return tuple(dns), tuple(ips)


async def run(values: dict[str, Any], args: list[str], release: Release, log: Logger) -> None:
    data_dir = Path(values.get("data-dir") or "/var/lib/rancher/k3s")
    port = int(values.get("https-listen-port") or 6443)
    bind = str(values.get("bind-address") or "0.0.0.0")
    log.info(f"Starting k3s {release.version} ({release.short_commit})")
    if values.get("server"):
        raise FatalError(
            "the K3s stand-in runs a single server: joining another server (--server on k3s server) "
            "is not modelled"
        )
    images.import_dir(data_dir, log)
    pki = ServerPKI.load_or_create(data_dir)
    creds = load_credentials(data_dir, values, pki.server_ca.pem)
    write_tokens(data_dir, creds, pki.server_ca.pem)
    ident = identity(values, args, server_role=True)
    dns, ips = serving_names(values, ident)
    crt, key = pki.serving(dns, ips)
    admin = pki.admin()
    kube_host = "127.0.0.1" if bind in {"0.0.0.0", "::"} else bind
    kubeconfig = Path(values.get("write-kubeconfig") or etc_dir() / "k3s" / "k3s.yaml")
    mode = parse_mode(str(values["write-kubeconfig-mode"])) if values.get("write-kubeconfig-mode") else 0o600
    write_kubeconfig(
        kubeconfig,
        f"https://{kube_host}:{port}",
        pki.server_ca.pem,
        admin,
        mode=mode,
        group=values.get("write-kubeconfig-group"),
    )
    log.info(f"Wrote kubeconfig {kubeconfig}")

    registry = Registry()
    store = Store(data_dir / "server" / "db" / "state.db")
    major, minor, _patch = release.kubernetes
    version_info = {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(int(minor) - 1),
        "gitVersion": release.version,
        "gitCommit": release.git_commit,
        "gitTreeState": "clean",
        "buildDate": release.build_date,
        "goVersion": release.go_version,
        "compiler": "gc",
        "platform": f"linux/{release.arch}",
    }
    api = ApiServer(registry, store, version_info, f"{ident.ip}:{port}")
    supervisor = Supervisor(pki, creds, values, data_dir=data_dir, log=log, api=api)
    api.extra_routes.extend(supervisor.routes())
    cluster = Cluster(registry, store, api, values, log)
    controllers = [controller for extend in EXTENSIONS for controller in extend(cluster)]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(crt), str(key))
    ctx.load_verify_locations(cadata=pki.client_ca.pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    runner, site = await serving.listener(api.app(), bind, port, ctx)
    try:
        await site.start()
    except OSError as exc:
        for controller in controllers:
            controller.close()  # never started
        reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        raise FatalError(
            f"starting kubernetes: preparing server: listen tcp {bind}:{port}: bind: {reason}"
        ) from exc
    log.info(
        f"Running kube-apiserver --advertise-address={ident.ip} --secure-port={port} "
        f"--tls-cert-file={crt} --client-ca-file={pki.directory / 'client-ca.crt'} --anonymous-auth=false"
    )
    # K3s notifies systemd once the apiserver is ready; its own agent registers the Node after that
    log.info("Kube API server is now running")
    log.info("k3s is up and running")
    systemd.notify()
    tasks = [asyncio.create_task(controller) for controller in controllers]
    if not values.get("disable-agent"):
        agent = Agent(
            AgentConfig(
                server_url=f"https://127.0.0.1:{port}",
                supervisor=f"https://127.0.0.1:{port}",
                token=parse(
                    f"K10{hashlib.sha256(pki.server_ca.pem).hexdigest()}::node:{creds.agent_password}"
                ),
                identity=ident,
                data_dir=data_dir,
                node_password_file=etc_dir() / "node" / "password",
                release=release,
            ),
            log,
        )
        tasks.append(asyncio.create_task(agent.run(notify=False)))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def terminate() -> None:
        stop.set()
        serving.exit_after(serving.SERVER_STOP_GRACE, log)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate)
    await _wait_first(stop.wait(), tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    await runner.cleanup()
    store.close()


async def _wait_first(awaitable: Any, tasks: list[asyncio.Task[Any]]) -> None:
    """Wait for ``awaitable``; if a background task dies first, re-raise its error."""
    waiter = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        error = task.exception() if task is not waiter else None
        if error is not None:
            waiter.cancel()
            raise error
