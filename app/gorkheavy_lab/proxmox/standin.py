"""The stand-in: the request pipeline (route, authenticate, verify, authorize, handle, check) and HTTPS."""

from __future__ import annotations

import contextlib
import hashlib
import json
import ssl
import tempfile
import threading
import time
import traceback
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import trustme

from gorkheavy_lab.proxmox import validation
from gorkheavy_lab.proxmox.api import HANDLERS, Faults, ProxmoxApi, Request, WithAttributes
from gorkheavy_lab.proxmox.auth import Auth
from gorkheavy_lab.proxmox.backend import SimulatedBackend, VmBackend
from gorkheavy_lab.proxmox.schema import SCHEMA_FILE, ApiSchema
from gorkheavy_lab.proxmox.state import GIB, ApiError, Cluster, StorageDef, Volume

API_PREFIX = "/api2/json"
# pvestatd broadcasts the guests' status every 10 seconds (``$updatetime`` in PVE::Service::pvestatd)
STATD_PERIOD = 10.0

DEFAULT_TASK_DURATIONS: dict[str, float] = {
    "default": 0.05,
    "qmclone": 0.3,
    "download": 0.2,
    "qmcreate": 0.1,
    "qmstart": 0.1,
    "qmdestroy": 0.1,
}


class StandinBug(AssertionError):
    """A response of the stand-in does not match the schema's ``returns`` (strict mode)."""


@dataclass
class RemoteFile:
    """What ``download-url`` finds behind a URL: its bytes (checksummed) and the disk size it unpacks to."""

    content: bytes
    virtual_size: int = 2 * GIB

    @property
    def size(self) -> int:
        return len(self.content)


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str
    params: dict[str, str]
    status: int


@dataclass(frozen=True)
class SchemaViolation:
    method: str
    path: str
    params: dict[str, str]
    errors: dict[str, str]


@dataclass
class Server:
    url: str  # https://127.0.0.1:PORT
    host: str
    port: int
    ca_path: str  # PEM of the CA that signed the server certificate
    httpd: ThreadingHTTPServer = field(repr=False)


class ProxmoxStandin:
    """A Proxmox VE 9.1 cluster behind its REST API. See the package docstring for usage."""

    def __init__(
        self,
        nodes: Iterable[str] = ("pve1", "pve2", "pve3"),
        storages: Iterable[StorageDef] | None = None,
        *,
        schema_path: Path | str = SCHEMA_FILE,
        strict: bool = True,
        backend: VmBackend | None = None,
        state_file: Path | str | None = None,
        task_durations: Mapping[str, float] | None = None,
        unauthorized_delay: float = 0.0,
        lock_wait: float = 0.05,
        statd_period: float = STATD_PERIOD,
    ) -> None:
        self.schema = ApiSchema.load(schema_path)
        self.cluster = Cluster(nodes, storages)
        self.auth = Auth(self.cluster)
        self.backend: VmBackend = backend if backend is not None else SimulatedBackend()
        self.strict = strict
        self.task_durations: dict[str, float] = {**DEFAULT_TASK_DURATIONS, **(task_durations or {})}
        self.faults = Faults()
        self.unauthorized_delay = unauthorized_delay
        self.lock_wait = lock_wait
        self.remote_files: dict[str, RemoteFile] = {}
        self.strict_remote_files = False
        self.virtual_sizes: dict[tuple[str, str], int] = {}
        self.requests: list[LoggedRequest] = []
        self.schema_violations: list[SchemaViolation] = []
        self.response_violations: list[SchemaViolation] = []
        self.internal_errors: list[str] = self.cluster.internal_errors
        self.bridges: list[str] = ["vmbr0"]
        self.host_dns: list[str] = ["192.168.77.1"]  # the nodes' resolv.conf, cloud-init's default DNS
        self.host_search = "lab.internal"
        self.node_cpus = 8
        self.node_memory = 64 * GIB
        self.ssl_fingerprint = ":".join(["AB"] * 32)
        self.counter = 0
        self.state_file = Path(state_file) if state_file else None
        self.api = ProxmoxApi(self)
        # pvestatd: what /cluster/resources shows of a guest's status, name and template flag is the
        # status daemon's last cycle (0 turns the lag off: the listing is computed at each request)
        self.statd_period = statd_period
        self.statd: dict[int, dict[str, Any]] = {}
        self.statd_next = 0.0
        if self.state_file and self.state_file.exists():
            data = json.loads(self.state_file.read_text())
            self.cluster.load_json(data)
            self.virtual_sizes = {(n, v): s for n, v, s in data.get("virtual_sizes", [])}
            self.counter = int(data.get("counter", 0))
            if isinstance(self.backend, SimulatedBackend):
                # simulated guests that ran before the restart still run, their agents already answer
                for vm in self.cluster.vms.values():
                    if vm.started_at is not None:
                        self.backend.running[(vm.node, vm.vmid)] = (
                            self.backend.clock() - self.backend.agent_delay
                        )

        self.statd_cycle()

    # -- configuration --------------------------------------------------------------------------------

    def add_user(
        self, userid: str, password: str | None = None, privileges: Mapping[str, Iterable[str]] | None = None
    ) -> None:
        """A user; ``privileges`` maps ACL paths to privilege names (None: every privilege, like root)."""
        with self.cluster.lock:
            self.auth.add_user(userid, password, privileges)

    def add_token(
        self,
        tokenid: str,
        secret: str,
        privsep: bool = False,
        privileges: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        """An API token ``user@realm!name``; with ``privsep`` only ``privileges`` (within the user's)."""
        with self.cluster.lock:
            self.auth.add_token(tokenid, secret, privsep, privileges)

    def set_node_online(self, node: str, online: bool) -> None:
        """An offline node is listed as such; requests for it answer 595 like a failed proxy hop."""
        with self.cluster.lock:
            if node not in self.cluster.nodes:
                raise KeyError(node)
            self.cluster.node_online[node] = online

    def add_storage(self, storage: StorageDef) -> None:
        with self.cluster.lock:
            self.cluster.storages[storage.storage] = storage

    def add_remote_file(self, url: str, content: bytes, virtual_size: int = 2 * GIB) -> RemoteFile:
        remote = RemoteFile(content, virtual_size)
        self.remote_files[url] = remote
        return remote

    def add_volume(
        self, node: str, volid: str, size: int, fmt: str, content: str, *, vmid: int | None = None
    ) -> None:
        with self.cluster.lock:
            self.cluster.add_volume(Volume(volid, node, size, fmt, content, vmid=vmid))

    def imported_size(self, volume: Volume) -> int:
        return self.virtual_sizes.get((volume.node, volume.volid), volume.size)

    def vm_config(self, vmid: int) -> dict[str, str]:
        with self.cluster.lock:
            self.cluster.advance()
            return dict(self.cluster.vms[vmid].config)

    def statd_cycle(self) -> None:
        """Run one status-daemon cycle now: /cluster/resources shows every guest as it is at this moment."""
        with self.cluster.lock:
            self.cluster.advance()
            self.statd = {vmid: self.api.statd_entry(vm) for vmid, vm in self.cluster.vms.items()}
            self.statd_next = self.cluster.clock() + self.statd_period

    def tick(self) -> int:
        """Finish the tasks whose time has come and run the status cycle when it is due."""
        finished = self.cluster.advance()
        if self.statd_period > 0 and self.cluster.clock() >= self.statd_next:
            self.statd_cycle()
        return finished

    def wait_tasks(self, timeout: float = 10.0) -> None:
        """Block until no task is running (for tests that look at state directly)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.cluster.lock:
                self.cluster.advance()
                if all(t.status == "stopped" for t in self.cluster.tasks.values()):
                    return
            time.sleep(0.01)
        raise TimeoutError("tasks still running")

    def save(self) -> None:
        if self.state_file is None:
            return
        with self.cluster.lock:
            data = self.cluster.to_json()
            data["virtual_sizes"] = [[n, v, s] for (n, v), s in self.virtual_sizes.items()]
            data["counter"] = self.counter
            tmp = self.state_file.with_suffix(self.state_file.suffix + ".tmp")
            tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
            tmp.replace(self.state_file)

    # -- the request pipeline -------------------------------------------------------------------------

    def handle(
        self, method: str, path: str, params: Mapping[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, str, dict[str, Any] | None, dict[str, str]]:
        """Answer one API request (``path`` without ``/api2/json``): (status, reason, body, headers)."""
        flat = dict(params)
        try:
            with self.cluster.lock:
                finished = self.tick()
                status, reason, body, extra = self._handle(method, path, flat, headers)
                if method != "GET" or finished:
                    self.save()
        except ApiError as exc:
            status, reason, body, extra = exc.status, exc.message.split("\n")[0], _error_body(exc), {}
        except StandinBug as exc:
            status, reason, body, extra = 500, "stand-in bug", {"data": None, "message": f"{exc}\n"}, {}
        except Exception as exc:  # a defect of the stand-in itself: answer, and keep it for the tests
            self.internal_errors.append(f"{method} {path}: {traceback.format_exc()}")
            message = f"stand-in bug: {type(exc).__name__}: {exc}\n"
            status, reason, body, extra = 500, "stand-in bug", {"data": None, "message": message}, {}
        self.requests.append(LoggedRequest(method, path, {k: str(v) for k, v in flat.items()}, status))
        return status, reason, body, extra

    def _handle(
        self, method: str, path: str, params: dict[str, Any], headers: Mapping[str, str]
    ) -> tuple[int, str, dict[str, Any] | None, dict[str, str]]:
        schema_path, methods, path_params = self.schema.resolve(urllib.parse.unquote(path))
        endpoint = methods.get(method)
        authid = self.auth.authenticate(method, schema_path or path, headers)
        if schema_path is None or endpoint is None:
            raise ApiError(501, f"Method '{method} {path}' not implemented")
        injected = self.faults.take_request_failure(method, schema_path)
        if injected is not None:
            raise injected
        for name, value in path_params.items():
            if name in params and params[name] != value:
                raise ApiError(
                    400,
                    "Parameter verification failed.",
                    {name: "duplicate parameter (already defined in URI)"},
                )
            params[name] = value
        errors = validation.verify_parameters(endpoint.parameters, params)
        if errors:
            self.schema_violations.append(
                SchemaViolation(method, schema_path, {k: str(v) for k, v in params.items()}, errors)
            )
            raise ApiError(400, "Parameter verification failed.", errors)
        if "node" in path_params and path_params["node"] not in self.cluster.nodes:
            node = path_params["node"]
            raise ApiError(
                500,
                f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                "Name or service not known",
            )
        if "node" in path_params and not self.cluster.node_online[path_params["node"]]:
            raise ApiError(595, "Connection refused")
        if authid is not None and "!" in authid and not endpoint.allowtoken:
            raise ApiError(401, "API tokens are not allowed for this API call")
        text_params = {k: validation._text(v) for k, v in params.items()}
        self.auth.check_schema_permissions(authid, endpoint.permissions, text_params)
        if (method, schema_path) == ("POST", "/access/ticket"):
            data = self.auth.login(text_params["username"], text_params["password"], text_params.get("realm"))
            return self._ok(endpoint, method, schema_path, text_params, data)
        handler = HANDLERS.get((method, schema_path))
        if handler is None:
            raise ApiError(
                501,
                f"Method '{method} {schema_path}' is part of the Proxmox VE API "
                "but not modelled by this stand-in",
            )
        data = handler(self.api, Request(method, schema_path, text_params, authid or ""))
        return self._ok(endpoint, method, schema_path, text_params, data)

    def _ok(
        self, endpoint: Any, method: str, path: str, params: dict[str, str], data: Any
    ) -> tuple[int, str, dict[str, Any] | None, dict[str, str]]:
        attributes: dict[str, Any] = {}
        if isinstance(data, WithAttributes):
            data, attributes = data.data, {k: v for k, v in data.attributes.items() if v}
        errors = validation.verify_returns(endpoint.returns, data)
        if errors:
            violation = SchemaViolation(method, path, params, errors)
            self.response_violations.append(violation)
            if self.strict:
                raise StandinBug(f"response of {method} {path} does not match the schema: {errors}")
        return 200, "OK", {"data": data, **attributes}, {}

    # -- HTTPS ------------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def serve_https(
        self, host: str = "127.0.0.1", port: int = 0, ca_out: str | Path | None = None
    ) -> Iterator[Server]:
        """Serve in a thread with a certificate from a throwaway CA (trustme); yields a ``Server``."""
        httpd, ca_path, tmpdir = self._make_server(host, port, ca_out)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        ticker = _Ticker(self)
        thread.start()
        ticker.start()
        try:
            yield Server(
                f"https://{host}:{httpd.server_address[1]}",
                host,
                int(httpd.server_address[1]),
                ca_path,
                httpd,
            )
        finally:
            ticker.stop()
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
            if tmpdir is not None:
                tmpdir.cleanup()

    def serve_forever(self, host: str, port: int, ca_out: str | Path | None = None) -> None:
        httpd, ca_path, _tmp = self._make_server(host, port, ca_out)
        self.save()  # the state file exists from the start
        print(f"Proxmox VE stand-in on https://{host}:{httpd.server_address[1]} (CA: {ca_path})", flush=True)
        ticker = _Ticker(self)
        ticker.start()
        try:
            httpd.serve_forever()
        finally:
            ticker.stop()

    def _make_server(
        self, host: str, port: int, ca_out: str | Path | None
    ) -> tuple[ThreadingHTTPServer, str, tempfile.TemporaryDirectory[str] | None]:
        ca = trustme.CA()
        names = [host, "localhost", *self.cluster.nodes]
        cert = ca.issue_cert(*names)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        tmpdir = None
        if ca_out is None:
            tmpdir = tempfile.TemporaryDirectory(prefix="pve-standin-")
            ca_path = str(Path(tmpdir.name) / "pve-ca.pem")
        else:
            ca_path = str(ca_out)
        ca.cert_pem.write_to_path(ca_path)
        der = ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())
        self.ssl_fingerprint = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
        standin = self

        class Handler(_RequestHandler):
            pass

        Handler.standin = standin
        httpd = ThreadingHTTPServer((host, port), Handler)
        httpd.daemon_threads = True
        # the handshake happens in the request thread, so a silent client cannot stall the accept loop
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True, do_handshake_on_connect=False)
        return httpd, ca_path, tmpdir


class _Ticker(threading.Thread):
    """Finishes due tasks in the background, so that effects happen on time even without polling."""

    def __init__(self, standin: ProxmoxStandin) -> None:
        super().__init__(daemon=True)
        self.standin = standin
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.05):
            with self.standin.cluster.lock:
                if self.standin.tick():
                    self.standin.save()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=2)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _error_body(exc: ApiError) -> dict[str, Any] | None:
    if exc.bare:
        return None
    body: dict[str, Any] = {"data": None}
    if exc.errors:
        body["errors"] = exc.errors
    body["message"] = exc.message
    return body


class _RequestHandler(BaseHTTPRequestHandler):
    standin: ProxmoxStandin
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    timeout = 60  # idle connections are dropped
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _unknown_method(self) -> None:
        self._send(501, f"method '{self.command}' not available", None, {})

    do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_CONNECT = _unknown_method

    def _serve(self, method: str) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not parsed.path.startswith(API_PREFIX + "/") and parsed.path != API_PREFIX:
            self._send(
                501, "no such uri" if parsed.path.startswith("/api2/") else "Not Implemented", None, {}
            )
            return
        if raw and method not in ("POST", "PUT"):
            self._send(501, f"Unexpected content for method '{method}'", None, {})
            return
        params: dict[str, Any] = {}
        pairs = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw:
            if content_type == "application/json":
                try:
                    body = json.loads(raw)
                except ValueError:
                    self._send(400, "Bad Request", None, {})
                    return
                if not isinstance(body, dict):
                    self._send(400, "Bad Request", None, {})
                    return
                # JSON null is an undefined parameter
                pairs += [(key, value) for key, value in body.items() if value is not None]
            else:
                pairs += urllib.parse.parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        for key, value in pairs:
            # a repeated parameter becomes a list, which only array-typed parameters accept
            if key in params:
                previous = params[key]
                params[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                params[key] = value
        headers = dict(self.headers.items())
        path = parsed.path[len(API_PREFIX) :] or "/"
        status, reason, body, extra = self.standin.handle(method, path, params, headers)
        if status == 401 and self.standin.unauthorized_delay:
            time.sleep(self.standin.unauthorized_delay)
        self._send(status, reason, body, extra)

    def _send(self, status: int, reason: str, body: dict[str, Any] | None, extra: Mapping[str, str]) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode() if body is not None else b""
        reason_line = reason.split("\n", maxsplit=1)[0] or _phrase(status)
        self.send_response_only(status, reason_line)
        self.send_header("Server", self.server_version)
        self.send_header("Date", self.date_time_string())
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", self.date_time_string())
        if body is not None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(payload)
