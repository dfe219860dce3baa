"""The kubelet's streaming endpoints on ``:10250`` (``pkg/kubelet/server``):

- ``/exec/{namespace}/{pod}/{container}`` (also with the pod's uid before the container), GET or POST, query
  ``command`` (repeated), ``input``, ``output``, ``error``, ``tty`` (``1`` for true, as kube-apiserver sends
  them): a WebSocket with the channel protocols of :mod:`.channels`; the command runs through the
  runtime's ``exec_argv`` under a pty or on pipes, and its end goes on the error channel as a Status;
- ``/attach/...``: the same streams joined to the container's main process (output from its log as it grows,
  input through the runtime's ``attach_stdin``);
- ``/containerLogs/{namespace}/{pod}/{container}``: the CRI log file of the current (or ``previous``)
  instance with the options of :mod:`.logs`.

Errors are the kubelet's: plain text, ``404`` for a pod the node does not run, ``500`` for a container that
is not running (``container not found ("x")``), ``400`` for logs that cannot be served."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web

from . import channels
from .channels import Protocol, ProtocolError
from .logs import Formatter, LogOptions, OptionError, parse_record, split_lines, tail_start
from .process import Session, read_fd, write_fd
from .runtime import ContainerRuntime

POLL = 0.2  # seconds between looks at a followed log file
STATE_CHECK = 1.0  # seconds between checks that a followed container still runs
DRAIN = 1.0  # seconds to keep reading a command's output after it exited


class KubeletError(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text

    def response(self) -> web.Response:
        return web.Response(status=self.code, text=self.text, content_type="text/plain")


@dataclass(frozen=True)
class StreamOptions:
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: Mapping[str, str]) -> StreamOptions:
        def flag(key: str) -> bool:
            return query.get(key) == "1"

        tty, stderr = flag("tty"), flag("error")
        if tty:
            stderr = False  # the kubelet drops stderr with a terminal: the pty carries both
        opts = cls(flag("input"), flag("output"), stderr, tty)
        if not (opts.stdin or opts.stdout or opts.stderr):
            raise KubeletError(400, "you must specify at least 1 of stdin, stdout, stderr")
        return opts


def _is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def _container_status(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for entry in status.get(key) or []:
            if entry.get("name") == name:
                return dict(entry)
    return None


def _in_spec(pod: Mapping[str, Any], name: str) -> bool:
    spec = pod.get("spec") or {}
    return any(
        c.get("name") == name
        for key in ("containers", "initContainers", "ephemeralContainers")
        for c in spec.get(key) or []
    )


class KubeletStreams:
    def __init__(self, runtime: ContainerRuntime) -> None:
        self.runtime = runtime
        # exec sessions whose client went away while their command goes on
        self._abandoned: dict[asyncio.Task[None], Session] = {}

    async def _cleanup(self, _app: web.Application) -> None:
        for task, session in list(self._abandoned.items()):
            session.kill()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def add_to(self, app: web.Application) -> None:
        for kind, handler in (("exec", self.exec), ("attach", self.attach)):
            app.router.add_route("GET", f"/{kind}/{{namespace}}/{{pod}}/{{container}}", handler)
            app.router.add_route("POST", f"/{kind}/{{namespace}}/{{pod}}/{{container}}", handler)
            app.router.add_route("GET", f"/{kind}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", handler)
            app.router.add_route("POST", f"/{kind}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", handler)
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self.container_logs)
        app.on_cleanup.append(self._cleanup)

    # --- common -------------------------------------------------------------------------------------
    @staticmethod
    def _check_client(request: web.Request) -> None:
        """The kubelet's authentication: a client certificate the cluster's client CA signed (the TLS layer
        verified it); the API server's is in ``system:masters``."""
        transport = request.transport
        cert = transport.get_extra_info("peercert") if transport is not None else None
        if not cert:
            raise KubeletError(401, "Unauthorized")
        groups = [v for rdn in cert.get("subject", ()) for k, v in rdn if k == "organizationName"]
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        if "system:masters" not in groups:
            raise KubeletError(
                403, f"Forbidden (user={cn}, verb=create, resource=nodes, subresource(s)=[proxy])"
            )

    def _pod(self, request: web.Request) -> Mapping[str, Any]:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        pod = self.runtime.pod(namespace, name)
        uid = request.match_info.get("uid")
        if pod is None or (uid and (pod.get("metadata") or {}).get("uid") != uid):
            raise KubeletError(404, "pod does not exist")
        return pod

    async def _accept(
        self, request: web.Request, opts: StreamOptions
    ) -> tuple[web.WebSocketResponse, Protocol]:
        if not _is_websocket(request):
            if request.headers.get("Upgrade", "").lower().startswith("spdy/"):
                raise KubeletError(
                    400,
                    "unable to upgrade: SPDY/3.1 streams are not modelled by the K3s stand-in; "
                    f"use a WebSocket with one of {', '.join(channels.PROTOCOLS)}",
                )
            raise KubeletError(400, "Upgrade request required")
        ws = web.WebSocketResponse(protocols=channels.PROTOCOLS, autoping=True)
        await ws.prepare(request)
        protocol = Protocol(ws.ws_protocol or channels.V1)
        # the streaming server's first message, on the lowest channel it writes, tells the client it is up
        first = channels.STDOUT if opts.stdout else channels.STDERR if opts.stderr else channels.ERROR
        await self._send(ws, protocol, first, b"")
        return ws, protocol

    @staticmethod
    async def _send(ws: web.WebSocketResponse, protocol: Protocol, channel: int, data: bytes) -> None:
        message = protocol.encode(channel, data)
        if isinstance(message, str):
            await ws.send_str(message)
        else:
            await ws.send_bytes(message)

    @staticmethod
    async def _finish(ws: web.WebSocketResponse, protocol: Protocol, status: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):
            body = channels.status_message(protocol, status)
            if body:
                await KubeletStreams._send(ws, protocol, channels.ERROR, body)
            await ws.close()

    # --- exec ---------------------------------------------------------------------------------------
    async def exec(self, request: web.Request) -> web.StreamResponse:
        try:
            self._check_client(request)
            opts = StreamOptions.from_query(request.query)
            self._pod(request)
            command = request.query.getall("command", [])
            namespace, pod, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
            try:
                argv, env = self.runtime.exec_argv(namespace, pod, container, list(command))
            except LookupError as exc:
                raise KubeletError(500, str(exc.args[0]) if exc.args else str(exc)) from exc
            ws, protocol = await self._accept(request, opts)
        except KubeletError as exc:
            return exc.response()
        if opts.tty:
            env = {
                **env,
                "TERM": "xterm",
            }  # as containerd's exec with a terminal sets it, over the container's
        find_ptmx = getattr(self.runtime, "ptmx", None)
        try:
            ptmx = find_ptmx(namespace, pod, container) if opts.tty and find_ptmx is not None else None
            session = await Session.start(
                argv,
                env,
                tty=opts.tty,
                stdin=opts.stdin,
                stdout=opts.stdout,
                stderr=opts.stderr,
                ptmx=ptmx,
            )
        except (OSError, LookupError) as exc:
            await self._finish(
                ws, protocol, channels.internal_error(f"error executing command in container: {exc}")
            )
            return ws
        await self._run(ws, protocol, session, list(command))
        return ws

    async def _client(self, ws: web.WebSocketResponse, protocol: Protocol, session: Session) -> None:
        """Messages from the client until it closes: stdin, resize, the close signal."""
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                channel, data = protocol.decode(msg.data)
                if channel == channels.STDIN and data:
                    await session.write_stdin(data)
                elif channel == channels.RESIZE:
                    session.resize(*channels.terminal_size(data))
                elif channel == channels.CLOSE and data[:1] == bytes([channels.STDIN]):
                    session.close_stdin()
            except ProtocolError:
                continue  # the streaming server skips what it cannot use and goes on

    async def _pump(self, ws: web.WebSocketResponse, protocol: Protocol, channel: int, fd: int) -> None:
        while data := await read_fd(fd):
            await self._send(ws, protocol, channel, data)

    async def _run(
        self, ws: web.WebSocketResponse, protocol: Protocol, session: Session, command: list[str]
    ) -> None:
        client = asyncio.ensure_future(self._client(ws, protocol, session))
        pumps = [asyncio.ensure_future(self._pump(ws, protocol, ch, fd)) for ch, fd in session.outputs]
        exited = asyncio.ensure_future(session.proc.wait())
        abandoned = False
        try:
            try:
                await asyncio.wait([client, exited], return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # aiohttp 3.8 cancels the handler when the client goes
                abandoned = True
                raise
            if not exited.done():  # the client went away first: the command goes on without it
                abandoned = True
                return
            if pumps:
                await asyncio.wait(pumps, timeout=DRAIN)
            code = session.exit_code()
            if code == 0:
                status = channels.success()
            else:
                status = channels.exit_status(
                    code, f"error executing command [{' '.join(command)}], exit code {code}"
                )
            await self._finish(ws, protocol, status)
        finally:
            for task in (client, *pumps):
                task.cancel()
            for waited in (client, *pumps):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await waited
            if abandoned:
                exited.cancel()
                task = asyncio.ensure_future(session.abandon())
                self._abandoned[task] = session
                task.add_done_callback(self._abandoned.pop)
            else:
                exited.cancel()
                if session.proc.returncode is None:  # cancelled (the server stops)
                    session.kill()
                    await session.proc.wait()
                session.close()

    # --- attach -------------------------------------------------------------------------------------
    async def attach(self, request: web.Request) -> web.StreamResponse:
        namespace, pod_name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            self._check_client(request)
            opts = StreamOptions.from_query(request.query)
            pod = self._pod(request)
            try:
                stdin_path = self.runtime.attach_stdin(namespace, pod_name, container)
            except LookupError as exc:
                raise KubeletError(500, str(exc.args[0]) if exc.args else str(exc)) from exc
            path, _running = self._log_file(pod, container, previous=False)
            ws, protocol = await self._accept(request, opts)
        except KubeletError as exc:
            return exc.response()
        stdin_fd: int | None = None
        if opts.stdin and stdin_path is not None:
            with contextlib.suppress(OSError):
                stdin_fd = os.open(stdin_path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
        reader = asyncio.ensure_future(self._attach_input(ws, protocol, stdin_fd))
        try:
            offset = path.stat().st_size if path.exists() else 0
            formatter = Formatter(LogOptions(follow=True))
            async for record in self._follow(namespace, pod_name, container, path, offset, stop=reader):
                channel = channels.STDERR if record.stream == "stderr" and opts.stderr else channels.STDOUT
                if (channel == channels.STDOUT and opts.stdout) or channel == channels.STDERR:
                    await self._send(ws, protocol, channel, formatter.format(record))
            await self._finish(ws, protocol, channels.success())
        except ConnectionError:
            pass
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            if stdin_fd is not None:
                os.close(stdin_fd)
        return ws

    async def _attach_input(self, ws: web.WebSocketResponse, protocol: Protocol, fd: int | None) -> None:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            try:
                channel, data = protocol.decode(msg.data)
            except ProtocolError:
                continue
            if channel == channels.STDIN and fd is not None and data:
                with contextlib.suppress(OSError):
                    await write_fd(fd, data)

    # --- logs ---------------------------------------------------------------------------------------
    def _log_file(self, pod: Mapping[str, Any], container: str, *, previous: bool) -> tuple[Path, bool]:
        """The log file of the container's current or previous instance and whether it still runs, chosen
        from the pod's status as the kubelet's ``validateContainerLogStatus`` does."""
        meta = pod.get("metadata") or {}
        name = meta.get("name", "")
        status = _container_status(pod, container)
        if status is None:
            raise KubeletError(400, f'container "{container}" in pod "{name}" is not available')
        state = status.get("state") or {}
        last = (status.get("lastState") or {}).get("terminated")
        directory = (
            self.runtime.log_root / f"{meta.get('namespace', '')}_{name}_{meta.get('uid', '')}" / container
        )
        files = (
            sorted((int(p.stem), p) for p in directory.glob("*.log") if p.stem.isdigit())
            if directory.is_dir()
            else []
        )
        if previous:
            if not last:
                raise KubeletError(
                    400, f'previous terminated container "{container}" in pod "{name}" not found'
                )
            # the last terminated instance: the newest file when none runs now, else the one before it
            index = -1 if "waiting" in state else -2
            if len(files) < -index:
                raise KubeletError(
                    400, f'previous terminated container "{container}" in pod "{name}" not found'
                )
            return files[index][1], False
        if "running" in state or "terminated" in state or last:
            if not files:
                raise KubeletError(400, f'container "{container}" in pod "{name}" is terminated')
            return files[-1][1], "running" in state
        waiting = state.get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason == "ErrImagePull":
            text = "is waiting to start: image can't be pulled"
        elif reason == "ImagePullBackOff":
            text = "is waiting to start: trying and failing to pull image"
        elif reason:
            text = f"is waiting to start: {reason}"
        else:
            text = "is waiting to start - no logs yet"
        raise KubeletError(400, f'container "{container}" in pod "{name}" {text}')

    async def _follow(
        self,
        namespace: str,
        pod_name: str,
        container: str,
        path: Path,
        offset: int,
        *,
        stop: asyncio.Future[Any] | None = None,
        follow: bool = True,
    ) -> Any:
        """Records of ``path`` from ``offset``; with ``follow``, also those written later, until that
        instance no longer runs (or ``stop`` is done)."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + STATE_CHECK
        rest = b""
        with contextlib.ExitStack() as stack:
            handle = None
            while True:
                if handle is None and path.exists():  # noqa: ASYNC240 - a local file, no wait
                    handle = stack.enter_context(path.open("rb"))
                    handle.seek(offset)
                chunk = handle.read(256 * 1024) if handle is not None else b""
                if chunk:
                    lines, rest = split_lines(rest + chunk)
                    for line in lines:
                        record = parse_record(line)
                        if record is not None:
                            yield record
                    continue
                if not follow or (stop is not None and stop.done()):
                    return
                if loop.time() >= next_check:
                    next_check = loop.time() + STATE_CHECK
                    pod = self.runtime.pod(namespace, pod_name)
                    try:
                        current, running = (
                            self._log_file(pod, container, previous=False) if pod else (path, False)
                        )
                    except KubeletError:
                        current, running = path, False
                    if current != path or not running:
                        follow = False  # one last read of what it wrote before it ended
                        continue
                await asyncio.sleep(POLL)

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace, pod_name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            self._check_client(request)
            query = dict(request.query)
            if query.get("tail"):  # the kubelet's older name for tailLines ("all": no limit)
                query["tailLines"] = query.pop("tail")
                if query["tailLines"] == "all":
                    del query["tailLines"]
            try:
                options = LogOptions.from_query(query)
            except OptionError as exc:
                raise KubeletError(422, '{"message": "Invalid request."}') from exc
            pod = self.runtime.pod(namespace, pod_name)
            if pod is None:
                raise KubeletError(404, f'pod "{pod_name}" does not exist\n')
            if not _in_spec(pod, container):
                raise KubeletError(404, f'container "{container}" not found in pod "{pod_name}"\n')
            previous = request.query.get("previous", "") in {"1", "true", "True"}
            path, running = self._log_file(pod, container, previous=previous)
        except KubeletError as exc:
            return exc.response()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        formatter = Formatter(options)
        data = path.read_bytes() if path.exists() else b""
        offset = tail_start(data, options.tail_lines) if options.tail_lines is not None else 0
        try:
            async for record in self._follow(
                namespace, pod_name, container, path, offset, follow=options.follow and running
            ):
                out = formatter.format(record)
                if out:
                    await response.write(out)
                if formatter.exhausted:
                    break
            await response.write_eof()
        except ConnectionError:
            pass
        return response
