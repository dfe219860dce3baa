"""The streaming tests' harness: an in-process K3s API (the stand-in's registry, store and extensions, HTTPS
with the cluster's PKI) and one node's kubelet streaming endpoints (HTTPS, client certificates required) with
a :class:`LocalRuntime`, both on an event loop in a background thread, plus an admin kubeconfig for the real
kubectl."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import io
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web
from gorkheavy_lab.k3s import server, serving
from gorkheavy_lab.k3s.kube import core
from gorkheavy_lab.k3s.kube.api import ApiServer
from gorkheavy_lab.k3s.kube.extensions import Cluster
from gorkheavy_lab.k3s.kube.registry import Registry
from gorkheavy_lab.k3s.kube.store import Store
from gorkheavy_lab.k3s.logs import Logger
from gorkheavy_lab.k3s.pki import ServerPKI
from gorkheavy_lab.k3s.stream import kubelet_routes
from gorkheavy_lab.k3s.stream.local import LocalRuntime
from gorkheavy_lab.k3s.testing import free_port, kubectl_binary

T = TypeVar("T")
NAMESPACE = "gorkheavy"
NODE = "kstream-node"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Lab:
    loop: asyncio.AbstractEventLoop
    api: ApiServer
    runtime: LocalRuntime
    kubeconfig: Path
    log_root: Path
    api_url: str
    kubelet_url: str
    pki: ServerPKI
    # stops both servers as the stand-in stops them (``runner.cleanup()``); False if that took over 30 s
    stop: Callable[[], bool]

    def admin_ssl(self) -> ssl.SSLContext:
        """A client context with the admin certificate, trusting the cluster's server CA."""
        ctx = ssl.create_default_context(cadata=self.pki.server_ca.pem.decode())
        crt, key = self.kubeconfig.parent / "admin.crt", self.kubeconfig.parent / "admin.key"
        if not crt.exists():
            cert_data, key_data = self.pki.admin()
            crt.write_bytes(cert_data)
            key.write_bytes(key_data)
        ctx.load_cert_chain(str(crt), str(key))
        return ctx

    def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the servers' loop (the store is not thread-safe)."""
        future: Future[T] = Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as exc:
                future.set_exception(exc)

        self.loop.call_soon_threadsafe(run)
        return future.result(10)

    def put_pod(self, pod: dict[str, Any]) -> None:
        """Store the pod in the API and give the kubelet the same object."""

        def put() -> None:
            meta = pod["metadata"]
            if self.api.store.get(core.PODS, meta["namespace"], meta["name"]) is None:
                self.api.store.create(core.PODS, copy.deepcopy(pod))
            else:
                current = self.api.store.get(core.PODS, meta["namespace"], meta["name"])
                assert current is not None
                self.api.store.replace(core.PODS, {**copy.deepcopy(pod), "metadata": current["metadata"]})
            stored = self.api.store.get(core.PODS, meta["namespace"], meta["name"])
            assert stored is not None
            self.runtime.put(stored)

        self.call(put)

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.kubectl_argv(), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )

    def kubectl_argv(self) -> list[str]:
        cache = self.kubeconfig.parent / ".kube-cache"
        return [kubectl_binary(), "--kubeconfig", str(self.kubeconfig), "--cache-dir", str(cache)]

    def pod_dir(self, pod: dict[str, Any], container: str) -> Path:
        meta = pod["metadata"]
        path = self.log_root / f"{meta['namespace']}_{meta['name']}_{meta['uid']}" / container
        path.mkdir(parents=True, exist_ok=True)
        return path


def running_status(*names: str, restarts: int = 0, last: bool = False) -> dict[str, Any]:
    statuses = []
    for name in names:
        entry: dict[str, Any] = {
            "name": name,
            "ready": True,
            "restartCount": restarts,
            "image": "python:3.11-slim",
            "imageID": "",
            "started": True,
            "state": {"running": {"startedAt": now()}},
            "lastState": {},
        }
        if last:
            entry["lastState"] = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": now()}}
        statuses.append(entry)
    return {"phase": "Running", "podIP": "10.42.0.9", "hostIP": "127.0.0.1", "containerStatuses": statuses}


def make_pod(
    name: str, *containers: str, labels: dict[str, str] | None = None, node: str = NODE
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": c, "image": "python:3.11-slim", "env": [{"name": "PS1", "value": "kstream$ "}]}
                for c in containers
            ],
        },
        "status": running_status(*containers),
    }


@pytest.fixture
def started_in_the_background() -> Iterator[None]:
    """This process as a shell's background job starts it: SIGINT and SIGQUIT ignored, which every process it
    starts inherits (the kubelet here runs in it)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("kstream")
    data = root / "data"
    pki = ServerPKI.load_or_create(data)
    crt, key = pki.serving(("localhost",), ("127.0.0.1",))
    api_port, kubelet_port = free_port(), free_port()
    kubeconfig = root / "kubeconfig"
    server.write_kubeconfig(
        kubeconfig, f"https://127.0.0.1:{api_port}", pki.server_ca.pem, pki.admin(), mode=0o600, group=None
    )
    kubelet_crt, kubelet_key = root / "kubelet.crt", root / "kubelet.key"
    cert_data, key_data = pki.server_ca.issue(NODE, dns=("localhost", NODE), ips=("127.0.0.1",))
    kubelet_crt.write_bytes(cert_data)
    kubelet_key.write_bytes(key_data)
    runtime = LocalRuntime(root / "pods")
    loop = asyncio.new_event_loop()
    started: Future[ApiServer] = Future()
    stop = asyncio.Event()

    async def serve() -> None:
        registry, store = Registry(), Store(None)
        api = ApiServer(
            registry, store, {"major": "1", "minor": "36", "gitVersion": "v1.36.4+k3s1"}, "127.0.0.1"
        )
        cluster = Cluster(registry, store, api, {"data-dir": str(data)}, Logger(io.StringIO()))
        for extend in server.EXTENSIONS:
            for controller in extend(cluster):
                controller.close()  # no controllers: the tests write pods and their status themselves
        store.create(
            core.NODES,
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": NODE},
                "status": {
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
                },
            },
        )
        ns: dict[str, Any] = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
        store.create(core.NAMESPACES, ns)
        api_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        api_ctx.load_cert_chain(str(crt), str(key))
        api_ctx.load_verify_locations(cadata=pki.client_ca.pem.decode())
        api_ctx.verify_mode = ssl.CERT_OPTIONAL
        kubelet_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        kubelet_ctx.load_cert_chain(str(kubelet_crt), str(kubelet_key))
        kubelet_ctx.load_verify_locations(cadata=pki.client_ca.pem.decode())
        kubelet_ctx.verify_mode = ssl.CERT_REQUIRED
        kubelet_app = web.Application()
        kubelet_routes(kubelet_app, runtime)
        runners = []
        for app, port, ctx in ((api.app(), api_port, api_ctx), (kubelet_app, kubelet_port, kubelet_ctx)):
            runner, site = await serving.listener(app, "127.0.0.1", port, ctx)  # as the stand-in serves
            await site.start()
            runners.append(runner)
        started.set_result(api)
        await stop.wait()
        for runner in runners:
            await runner.cleanup()

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    thread.start()
    api = started.result(20)

    def stop_servers() -> bool:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        return not thread.is_alive()

    yield Lab(
        loop,
        api,
        runtime,
        kubeconfig,
        root / "pods",
        f"https://127.0.0.1:{api_port}",
        f"https://127.0.0.1:{kubelet_port}",
        pki,
        stop_servers,
    )
    stop_servers()


def stamp(offset: float = 0) -> str:
    """A CRI log timestamp ``offset`` seconds from now, with nanoseconds as containerd writes them."""
    when = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=offset)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


def write(path: Path, *records: tuple[str, str, str, str]) -> None:
    """Append CRI log records (time, stream, F|P, text) as the kubelet writes them."""
    with path.open("a") as f:
        for when, stream, tag, text in records:
            f.write(f"{when} {stream} {tag} {text}\n")


def edit_and_interrupt(child: Any, prompt: str) -> None:
    """At a shell on an exec'd terminal (a pexpect child): a line corrected with backspace by the pty's line
    discipline, and Ctrl-C ending the foreground job only (status 130), the shell staying."""
    child.send("echo ab")
    child.send("x")
    child.send("\x7f")
    child.send("c\r")
    child.expect_exact("\r\nabc\r\n")
    child.expect_exact(prompt)
    # the job says when it runs: it is the terminal's foreground process group before it prints
    child.sendline("sh -c 'echo running; exec sleep 30'")
    child.expect_exact("running\r\n")
    child.sendintr()
    child.expect_exact(prompt, timeout=5)
    child.sendline("echo status=$?")
    child.expect_exact("status=130\r\n")
    child.expect_exact(prompt)
