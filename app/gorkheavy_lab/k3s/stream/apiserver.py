"""The API server's ``pods/exec``, ``pods/attach`` and ``pods/log`` subresources, as kube-apiserver serves
them (``pkg/registry/core/pod``): the pod and its container are checked (``a container name must be
specified for pod p, choose one of: [a b]``, ``container x is not valid for pod p``, ``pod p does not have a
host assigned``), the pod's node is resolved to its kubelet (InternalIP, ``daemonEndpoints`` port 10250,
as K3s prefers the addresses), and the request is relayed there over HTTPS with the API server's kubelet
client certificate (``client-kube-apiserver.crt``), the kubelet's serving certificate checked against the
server CA.

Exec and attach: a ``v5.channel.k8s.io`` client (kubectl 1.36 offers nothing else) is served as
kube-apiserver's stream translator serves it: upgraded first, then joined to the kubelet's stream, the end of
the command and any refusal reported as a Status on the error channel in the translator's words (kubectl:
``error: Internal error occurred: unable to upgrade connection: container not found ("x")``). The older
protocols are proxied as kube-apiserver proxies them: the kubelet's messages unchanged, a kubelet's refusal
passed through as its HTTP answer. (kube-apiserver speaks SPDY to the kubelet; the stand-in's kubelet speaks
the WebSocket protocols, so the stand-in uses those on the second hop.)

Logs: the kubelet's ``/containerLogs`` answer streamed through; its errors become API errors as
kube-apiserver's response checker makes them (400 BadRequest, 500 InternalError, with the kubelet's text)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from aiohttp import WSMsgType, web

from ..kube import core
from ..kube.api import ApiServer
from ..kube.errors import ApiError, bad_request, not_found
from ..kube.extensions import Cluster, Controller
from ..pki import ServerPKI
from . import channels
from .channels import Protocol
from .logs import LogOptions, OptionError

KUBELET_PORT = 10250
FALSE = {"0", "f", "false", ""}  # apimachinery's string-to-bool conversion: anything else is true
CONNECT_TIMEOUT = 10.0

# What discovery lists for these subresources on kube-apiserver.
DISCOVERY = (
    {
        "name": "pods/attach",
        "singularName": "",
        "namespaced": True,
        "kind": "PodAttachOptions",
        "verbs": ["create", "get"],
    },
    {
        "name": "pods/exec",
        "singularName": "",
        "namespaced": True,
        "kind": "PodExecOptions",
        "verbs": ["create", "get"],
    },
    {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod", "verbs": ["get"]},
)


def _flag(query: Mapping[str, str], key: str) -> bool:
    return query.get(key, "").lower() not in FALSE


def container_names(pod: Mapping[str, Any], key: str = "containers") -> list[str]:
    return [str(c.get("name", "")) for c in (pod.get("spec") or {}).get(key) or []]


def resolve_container(pod: Mapping[str, Any], container: str) -> str:
    """The container a request means, or the API server's BadRequest (Go prints a name list as ``[a b]``)."""
    name = pod["metadata"]["name"]
    if not container:
        names = container_names(pod)
        if len(names) == 1:
            return names[0]
        if not names:
            raise bad_request(f"a container name must be specified for pod {name}")
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(names)}]"
        init = container_names(pod, "initContainers")
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise bad_request(message)
    every = [*container_names(pod), *container_names(pod, "initContainers")]
    every += container_names(pod, "ephemeralContainers")
    if container not in every:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


class Streams:
    def __init__(self, api: ApiServer, pki: ServerPKI) -> None:
        self.api = api
        self.pki = pki
        self._ssl: ssl.SSLContext | None = None

    def routes(self) -> list[web.RouteDef]:
        base = "/api/v1/namespaces/{namespace}/pods/{name}"
        return [
            web.route("*", f"{base}/exec", self.exec),
            web.route("*", f"{base}/attach", self.attach),
            web.route("*", f"{base}/log", self.log),
        ]

    def ssl_context(self) -> ssl.SSLContext:
        """The API server's kubelet client: ``client-kube-apiserver.crt`` (system:apiserver in
        system:masters); kubelets' serving certificates are checked against the server CA, as K3s runs
        kube-apiserver with ``--kubelet-certificate-authority``."""
        if self._ssl is None:
            crt, key = self.pki.kubelet_client()
            ctx = ssl.create_default_context(cadata=self.pki.server_ca.pem.decode())
            ctx.load_cert_chain(str(crt), str(key))
            self._ssl = ctx
        return self._ssl

    # --- shared checks ------------------------------------------------------------------------------
    def _pod(self, request: web.Request, verb: str) -> dict[str, Any]:
        user = self.api.authenticated(request)
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        self.api.authorize(user, verb, core.PODS, name, namespace)
        pod = self.api.store.get(core.PODS, namespace, name)
        if pod is None:
            raise not_found("pods", name)
        return pod

    def _kubelet(self, pod: Mapping[str, Any]) -> str:
        """``https://<InternalIP>:<port>`` of the pod's node."""
        node_name = (pod.get("spec") or {}).get("nodeName", "")
        node = self.api.store.get(core.NODES, "", node_name)
        if node is None:
            raise not_found("nodes", node_name)
        status = node.get("status") or {}
        addresses = {a.get("type"): a.get("address") for a in status.get("addresses") or []}
        host = next(
            (addresses[t] for t in ("InternalIP", "ExternalIP", "Hostname") if addresses.get(t)), None
        )
        if host is None:
            raise ApiError(
                500,
                "InternalError",
                "Internal error occurred: no preferred addresses found; known addresses: []",
            )
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get(
            "Port"
        ) or KUBELET_PORT
        return f"https://{f'[{host}]' if ':' in host else host}:{port}"

    @staticmethod
    def _dial_error(base: str, exc: BaseException) -> ApiError:
        host = base.removeprefix("https://")
        if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
            text = f"tls: failed to verify certificate: {getattr(exc, 'certificate_error', exc)}"
        elif isinstance(exc, asyncio.TimeoutError):
            text = f"dial tcp {host}: i/o timeout"
        elif isinstance(exc, aiohttp.ClientConnectorError):
            text = f"dial tcp {host}: connect: {exc.strerror or 'connection refused'}".lower()
        else:
            text = str(exc) or type(exc).__name__
        return ApiError(500, "InternalError", f"error dialing backend: {text}")

    # --- exec and attach ----------------------------------------------------------------------------
    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await self._connect(request, "exec")

    async def attach(self, request: web.Request) -> web.StreamResponse:
        return await self._connect(request, "attach")

    async def _connect(self, request: web.Request, kind: str) -> web.StreamResponse:
        if request.method not in {"GET", "POST"}:
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        pod = self._pod(request, "create" if request.method == "POST" or kind == "attach" else "get")
        query = request.query
        container = resolve_container(pod, query.get("container", ""))
        if not (pod.get("spec") or {}).get("nodeName"):
            raise bad_request(f"pod {pod['metadata']['name']} does not have a host assigned")
        params: list[tuple[str, str]] = []
        for key, param in (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty")):
            if _flag(query, key):
                params.append((param, "1"))
        if kind == "exec":
            params += [("command", c) for c in query.getall("command", [])]
        base = self._kubelet(pod)
        meta = pod["metadata"]
        url = f"{base}/{kind}/{meta['namespace']}/{meta['name']}/{container}?{urlencode(params)}"
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return await self._passthrough(request, url, base)
        offered = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        if channels.V5 in offered:
            return await self._translate(request, url, base)
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        )
        try:
            try:
                upstream = await session.ws_connect(
                    url, protocols=offered, ssl=self.ssl_context(), autoping=True, max_msg_size=0
                )
            except aiohttp.WSServerHandshakeError:
                # the kubelet refused before upgrading: give the client its answer (status and text)
                return await self._passthrough(request, url, base, session)
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._dial_error(base, exc) from exc
            chosen = upstream.protocol
            downstream = web.WebSocketResponse(
                protocols=(chosen,) if chosen else (), autoping=True, max_msg_size=0
            )
            await downstream.prepare(request)
            await _relay(downstream, upstream)
            return downstream
        finally:
            await session.close()

    async def _translate(self, request: web.Request, url: str, base: str) -> web.WebSocketResponse:
        """A ``v5.channel.k8s.io`` client, as kube-apiserver's stream translator serves it: the client's
        WebSocket is accepted first (with the translator's own empty first message), then the kubelet is
        reached; a kubelet that refuses, or cannot be reached, ends the session with an InternalError Status
        on the error channel (kubectl prints ``error: Internal error occurred: unable to upgrade connection:
        container not found ("app")``), and the kubelet's end of the command comes back as the translator
        words it."""
        downstream = web.WebSocketResponse(protocols=(channels.V5,), autoping=True, max_msg_size=0)
        await downstream.prepare(request)
        query = request.query
        first = (
            channels.STDOUT
            if _flag(query, "stdout")
            else channels.STDERR
            if _flag(query, "stderr")
            else channels.ERROR
        )
        await downstream.send_bytes(bytes([first]))
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        )
        try:
            try:
                try:
                    upstream = await session.ws_connect(
                        url, protocols=[channels.V5], ssl=self.ssl_context(), autoping=True, max_msg_size=0
                    )
                except aiohttp.WSServerHandshakeError:
                    answer = await self._kubelet_answer(url, base, {}, session)
                    await _end(downstream, _refused_status(answer.text or ""))
                    return downstream
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    raise self._dial_error(base, exc) from exc
            except ApiError as exc:
                await _end(downstream, channels.internal_error(exc.message))
                return downstream
            await _relay(downstream, upstream, translate=True)
            return downstream
        finally:
            await session.close()

    async def _kubelet_answer(
        self, url: str, base: str, headers: dict[str, str], session: aiohttp.ClientSession
    ) -> web.Response:
        try:
            async with session.get(url, ssl=self.ssl_context(), headers=headers) as response:
                body = await response.read()
                ctype = response.headers.get("Content-Type", "text/plain")
                return web.Response(status=response.status, body=body, headers={"Content-Type": ctype})
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise self._dial_error(base, exc) from exc

    async def _passthrough(
        self, request: web.Request, url: str, base: str, session: aiohttp.ClientSession | None = None
    ) -> web.Response:
        """The kubelet's answer to the same request without the WebSocket upgrade (its refusal, or
        ``Upgrade request required``), passed through as kube-apiserver passes a failed upgrade through."""
        headers = {k: v for k, v in request.headers.items() if k.lower() in {"upgrade", "connection"}}
        headers = {k: v for k, v in headers.items() if "websocket" not in v.lower()}
        own = session is None
        session = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        try:
            return await self._kubelet_answer(url, base, headers, session)
        finally:
            if own:
                await session.close()

    # --- logs ---------------------------------------------------------------------------------------
    async def log(self, request: web.Request) -> web.StreamResponse:
        if request.method != "GET":
            raise ApiError(
                405, "MethodNotAllowed", "the server does not allow this method on the requested resource"
            )
        pod = self._pod(request, "get")
        query = request.query
        name = pod["metadata"]["name"]
        container = resolve_container(pod, query.get("container", ""))
        try:
            LogOptions.from_query(dict(query))
        except OptionError as exc:
            raise ApiError(422, "Invalid", f'PodLogOptions "{name}" is invalid: {exc}') from exc
        if not (pod.get("spec") or {}).get("nodeName"):
            # an unscheduled pod has no log location: kube-apiserver answers with an empty body
            return web.Response(text="", content_type="text/plain")
        params: list[tuple[str, str]] = []
        for key in ("follow", "previous", "timestamps"):
            if _flag(query, key):
                params.append((key, "true"))
        for key in ("sinceSeconds", "sinceTime", "tailLines", "limitBytes", "stream"):
            if query.get(key):
                params.append((key, query[key]))
        base = self._kubelet(pod)
        url = f"{base}/containerLogs/{pod['metadata']['namespace']}/{name}/{container}?{urlencode(params)}"
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            try:
                upstream = await session.get(url, ssl=self.ssl_context())
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                raise self._dial_error(base, exc) from exc
            async with upstream:
                if not 200 <= upstream.status <= 206:
                    text = (await upstream.content.read(4096)).decode(errors="replace")
                    raise _from_kubelet(upstream.status, text, name)
                response = web.StreamResponse(headers={"Content-Type": "text/plain"})
                response.enable_chunked_encoding()
                await response.prepare(request)
                with contextlib.suppress(ConnectionError, aiohttp.ClientPayloadError):
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                return response


def _from_kubelet(code: int, text: str, name: str) -> ApiError:
    """A kubelet's error answer as kube-apiserver's GenericHttpResponseChecker turns it into a Status."""
    if code == 400:
        return bad_request(text)
    if code == 500:
        return ApiError(500, "InternalError", f"Internal error occurred: {text}")
    details = {
        "name": name,
        "kind": "pods/log",
        "causes": [{"reason": "UnexpectedServerResponse", "message": text}],
    }
    if code == 404:
        return ApiError(404, "NotFound", "the server could not find the requested resource", details)
    return ApiError(
        code,
        "Unknown",
        f"the server responded with the status code {code} but did not return more information",
        details,
    )


def _refused_status(text: str) -> dict[str, Any]:
    """What the translator reports when the kubelet refuses the upgrade: its Status if the answer is one,
    else the SPDY client's ``unable to upgrade connection: <text>`` as an InternalError."""
    try:
        status = json.loads(text)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        return status
    return channels.internal_error(f"unable to upgrade connection: {text.strip()}")


def _translated(message: bytes) -> bytes | None:
    """A kubelet message for a v5 client as the translator passes it on: data unchanged, empty messages
    dropped (the translator sent its own), the end of the command worded as the translator words it."""
    if len(message) <= 1:
        return None
    if message[0] != channels.ERROR:
        return message
    try:
        status = json.loads(message[1:])
    except ValueError:
        return message
    if status.get("status") == "Success":
        return bytes([channels.ERROR]) + channels.status_message(Protocol(channels.V5), channels.success())
    if status.get("reason") == "NonZeroExitCode":
        causes = (status.get("details") or {}).get("causes") or []
        code = next((c.get("message") for c in causes if c.get("reason") == "ExitCode"), "")
        if str(code).isdigit():
            translated = channels.exit_status(int(code), f"command terminated with exit code {code}")
            return bytes([channels.ERROR]) + json.dumps(translated).encode()
    text = f"error executing remote command: {status.get('message', '')}"
    return bytes([channels.ERROR]) + json.dumps(channels.internal_error(text)).encode()


async def _end(ws: web.WebSocketResponse, status: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_bytes(bytes([channels.ERROR]) + json.dumps(status).encode())
        await ws.close()


async def _relay(
    downstream: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse, *, translate: bool = False
) -> None:
    """Messages both ways until one side closes; then the other is closed too. With ``translate``, the
    kubelet's messages pass through :func:`_translated`."""

    async def pipe(source: Any, sink: Any) -> None:
        async for msg in source:
            if msg.type == WSMsgType.BINARY:
                data = _translated(msg.data) if translate and source is upstream else msg.data
                if data is not None:
                    await sink.send_bytes(data)
            elif msg.type == WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break

    tasks = [
        asyncio.ensure_future(pipe(upstream, downstream)),
        asyncio.ensure_future(pipe(downstream, upstream)),
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await upstream.close()
        with contextlib.suppress(Exception):
            await downstream.close()


def extension(cluster: Cluster) -> list[Controller]:
    """Adds the streaming subresources to the API (``server.EXTENSIONS``)."""
    data_dir = Path(cluster.values.get("data-dir") or "/var/lib/rancher/k3s")
    streams = Streams(cluster.api, ServerPKI.load_or_create(data_dir))
    cluster.api.extra_routes.extend(streams.routes())
    cluster.api.extra_resources.extend(("", "v1", dict(entry)) for entry in DISCOVERY)
    return []
