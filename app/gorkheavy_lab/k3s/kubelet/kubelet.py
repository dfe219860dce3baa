"""The node's kubelet: watches the pods bound to its node through the API, runs each in a ``PodWorker``,
writes ``pods/status`` and Events as the kubelet does, serves ``:10250`` (HTTPS, serving certificate from the
server's CA as K3s's ``serving-kubelet.crt``, clients by the cluster's client CA) with the streaming
endpoints, and, once the node runs a pod, the pod network, kube-proxy and the cluster DNS.

A node without pods costs two idle watches: the bridge, iptables rules, DNS and ``:10250`` start with the
first pod bound to the node."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .. import serving
from ..logs import Logger
from . import dns, network, spec
from .pods import STORAGE_DIR, PodWorker, decode_secret, now
from .runtime import exec_argv, reap_orphans
from .spec import Image, Obj

Api = Callable[..., Awaitable[tuple[int, Any]]]
IMAGES_FILE = "agent/containerd/images.json"


class Informer:
    """list + watch of one collection, kept in ``items`` (uid -> object); ``changed`` fires on every event."""

    def __init__(self, session: aiohttp.ClientSession, base: str, path: str, log: Logger) -> None:
        self.session = session
        self.base = base
        self.path = path
        self.log = log
        self.items: dict[str, Obj] = {}
        self.changed = asyncio.Event()
        self.synced = asyncio.Event()
        self.listeners: list[Callable[[str, Obj], None]] = []

    def _emit(self, kind: str, obj: Obj) -> None:
        uid = obj["metadata"].get("uid") or obj["metadata"]["name"]
        if kind == "DELETED":
            self.items.pop(uid, None)
        else:
            self.items[uid] = obj
        for listener in self.listeners:
            listener(kind, obj)
        self.changed.set()

    async def run(self) -> None:
        sep = "&" if "?" in self.path else "?"
        while True:
            try:
                async with self.session.get(self.base + self.path) as resp:
                    body = await resp.json()
                if resp.status != 200:
                    raise aiohttp.ClientError(f"{resp.status}: {body}")
                fresh = {
                    (o["metadata"].get("uid") or o["metadata"]["name"]): o for o in body.get("items") or []
                }
                for uid, obj in list(self.items.items()):
                    if uid not in fresh:
                        self._emit("DELETED", obj)
                for obj in fresh.values():
                    self._emit(
                        "ADDED"
                        if (obj["metadata"].get("uid") or obj["metadata"]["name"]) not in self.items
                        else "MODIFIED",
                        obj,
                    )
                self.synced.set()
                rv = body["metadata"]["resourceVersion"]
                url = f"{self.base}{self.path}{sep}watch=1&resourceVersion={rv}&timeoutSeconds=300"
                async with self.session.get(
                    url, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
                ) as resp:
                    async for line in resp.content:
                        if not line.strip():
                            continue
                        event = json.loads(line)
                        if event["type"] == "ERROR":
                            break
                        if event["type"] in {"ADDED", "MODIFIED", "DELETED"}:
                            self._emit(event["type"], event["object"])
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                self.log.debug(f"watch {self.path}: {exc}")
                await asyncio.sleep(1)


class Kubelet:
    def __init__(
        self,
        *,
        session: aiohttp.ClientSession,
        base: str,
        api: Api,
        supervisor_get: Callable[[str, dict[str, str], str], Awaitable[bytes]],
        node_name: str,
        node_ip: str,
        hostname: str,
        data_dir: Path,
        control: dict[str, Any],
        log: Logger,
        kube_version: str,
    ) -> None:
        self.session = session
        self.base = base
        self.api = api
        self.supervisor_get = supervisor_get
        self.node_name = node_name
        self.node_ip = node_ip
        self.hostname = hostname
        self.data_dir = data_dir
        self.log = log
        self.domain = str(control.get("ClusterDomain") or "cluster.local")
        self.dns_ip = str(control.get("ClusterDNS") or "10.43.0.10")
        self.cluster_cidr = str(control.get("ClusterIPRange") or "10.42.0.0/16")
        self.kube_minor = ".".join(kube_version.lstrip("v").split("+")[0].split(".")[:2])
        self.log_root = Path(os.environ.get("GORKHEAVY_KUBELET_LOG_ROOT", "/var/log/pods"))
        self.run_root = Path("/run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io")
        # stand-in knob: the first restart back-off step (the kubelet's is 10 s; 30 times it is the cap)
        self.backoff_initial = float(
            os.environ.get("GORKHEAVY_KUBELET_BACKOFF_SECONDS", spec.BACKOFF_INITIAL)
        )
        self.network = network.Network(log, cluster_cidr=self.cluster_cidr, dns_ip=self.dns_ip)
        self.workers: dict[str, PodWorker] = {}
        # the kubelet's own pods; kube-proxy's Services and EndpointSlices; the nodes for host-gw routes
        self.pods = Informer(session, base, f"/api/v1/pods?fieldSelector=spec.nodeName%3D{node_name}", log)
        self.slices = Informer(session, base, "/apis/discovery.k8s.io/v1/endpointslices", log)
        self.services = Informer(session, base, "/api/v1/services", log)
        self.nodes = Informer(session, base, "/api/v1/nodes", log)
        self._active = False
        self._activating: asyncio.Task[None] | None = None
        self._cluster: DNSAndProxy | None = None
        self._events: dict[tuple[str, str, str, str], tuple[str, int]] = {}
        self._runner: web.AppRunner | None = None
        self._worker_tasks: set[asyncio.Task[None]] = set()

    # --- ContainerRuntime (gorkheavy_lab.k3s.stream) ------------------------------------------------
    def pod(self, namespace: str, name: str) -> Obj | None:
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name:
                return {**worker.pod, "status": worker.status()}
        return None

    def _worker(self, namespace: str, name: str) -> PodWorker:
        for worker in self.workers.values():
            if worker.namespace == namespace and worker.name == name:
                return worker
        raise LookupError(f'pod "{name}" not found')

    def exec_argv(
        self, namespace: str, pod: str, container: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        worker = self._worker(namespace, pod)
        running = worker.running.get(container)
        if running is None or running.process.returncode is not None:
            raise LookupError(f'container not found ("{container}")')
        return exec_argv(running, argv)

    def ptmx(self, namespace: str, pod: str, container: str) -> Path | None:
        """The container's own devpts (runtime.py mounts one per container), as the node sees it."""
        running = self._worker(namespace, pod).running.get(container)
        if running is None or running.process.returncode is not None:
            return None
        path = Path(f"/proc/{running.process.pid}/root/dev/pts/ptmx")
        return path if path.exists() else None

    def attach_stdin(self, namespace: str, pod: str, container: str) -> Path | None:
        worker = self._worker(namespace, pod)
        if container not in worker.running:
            raise LookupError(f'container not found ("{container}")')
        return None  # containers run with stdin closed (stdin: true is not modelled)

    # --- API helpers --------------------------------------------------------------------------------
    async def write_status(self, namespace: str, name: str, status: Obj) -> None:
        code, body = await self.api(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/pods/{name}/status",
            {"status": status},
            "application/merge-patch+json",
        )
        if code >= 300 and code != 404:
            self.log.error(f"Failed to update status for pod {namespace}/{name}: {body}")

    async def event(self, pod: Obj, kind: str, reason: str, message: str, field_path: str = "") -> None:
        """An Event about the pod, as the kubelet's recorder posts it; a repeat raises ``count``."""
        meta = pod["metadata"]
        key = (meta["uid"], reason, message, field_path)
        stamp = now()
        seen = self._events.get(key)
        if seen is not None:
            name, count = seen
            self._events[key] = (name, count + 1)
            await self.api(
                "PATCH",
                f"/api/v1/namespaces/{meta['namespace']}/events/{name}",
                {"count": count + 1, "lastTimestamp": stamp},
                "application/merge-patch+json",
            )
            return
        name = f"{meta['name']}.{time.time_ns():x}"  # as client-go's recorder names events
        involved: Obj = {
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "apiVersion": "v1",
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if field_path:
            involved["fieldPath"] = field_path
        code, _ = await self.api(
            "POST",
            f"/api/v1/namespaces/{meta['namespace']}/events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": meta["namespace"]},
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": "kubelet", "host": self.node_name},
                "firstTimestamp": stamp,
                "lastTimestamp": stamp,
                "count": 1,
                "type": kind,
                "reportingComponent": "kubelet",
                "reportingInstance": self.node_name,
            },
        )
        if code < 300:
            self._events[key] = (name, 1)

    async def lookup(self, plural: str, namespace: str, name: str) -> dict[str, str] | None:
        code, body = await self.api("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if code != 200 or not isinstance(body, dict):
            return None
        if plural == "secrets":
            return decode_secret(body)
        return dict(body.get("data") or {})

    async def claim_path(self, namespace: str, claim: str) -> Path:
        """The bound PV's hostPath/local path, or (no PV bound yet) the local-path provisioner's directory."""
        code, pvc = await self.api("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        if code != 200 or not isinstance(pvc, dict):
            raise LookupError(f'persistentvolumeclaim "{claim}" not found')
        volume = pvc.get("spec", {}).get("volumeName")
        if volume:
            code, pv = await self.api("GET", f"/api/v1/persistentvolumes/{volume}")
            if code == 200 and isinstance(pv, dict):
                source = pv.get("spec", {}).get("hostPath") or pv.get("spec", {}).get("local") or {}
                if source.get("path"):
                    os.makedirs(source["path"], exist_ok=True)
                    return Path(source["path"])
        path = STORAGE_DIR / f"pvc-{pvc['metadata']['uid']}_{namespace}_{claim}"
        if not path.is_dir():
            path.mkdir(parents=True, exist_ok=True)
            os.chmod(path, 0o777)
        return path

    def next_backoff(self, previous: float) -> float:
        return spec.scaled_backoff(previous, self.backoff_initial)

    def _images_path(self) -> Path:
        return self.data_dir / IMAGES_FILE

    def image_present(self, image: Image) -> bool:
        try:
            names = json.loads(self._images_path().read_text())
        except (OSError, ValueError):
            return False
        return image.ref in names

    def record_image(self, image: Image) -> None:
        path = self._images_path()
        try:
            names = json.loads(path.read_text())
        except (OSError, ValueError):
            names = []
        if image.ref not in names:
            names.append(image.ref)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(names))

    # --- main loop ----------------------------------------------------------------------------------
    def _on_pod(self, kind: str, pod: Obj) -> None:
        if pod.get("spec", {}).get("nodeName") != self.node_name:
            return
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            if worker is not None:
                worker.pod = {**pod, "status": worker.pod.get("status", {})}
                worker.stop()
            elif kind != "DELETED":  # nothing of it runs here (any more): the deletion can complete
                task = asyncio.create_task(self._finish_deletion(pod))
                self._worker_tasks.add(task)
                task.add_done_callback(self._worker_tasks.discard)
            return
        if worker is None:
            if pod.get("status", {}).get("phase") in {"Succeeded", "Failed"}:
                return
            if not self._active:
                self._activate()
            worker = PodWorker(self, pod)
            self.workers[uid] = worker
            task = asyncio.create_task(self._run_worker(worker))
            self._worker_tasks.add(task)
            task.add_done_callback(self._worker_tasks.discard)
        else:
            worker.pod = {**pod, "status": worker.pod.get("status", {})}

    async def _run_worker(self, worker: PodWorker) -> None:
        if self._activating is not None:
            with contextlib.suppress(Exception):
                await self._activating
        try:
            await worker.run()
        finally:
            self.workers.pop(worker.uid, None)
            if worker.pod["metadata"].get("deletionTimestamp"):
                await self._finish_deletion(worker.pod)

    async def _finish_deletion(self, pod: Obj) -> None:
        meta = pod["metadata"]
        await self.api(
            "DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}?gracePeriodSeconds=0"
        )

    def _activate(self) -> None:
        self._active = True
        self._activating = asyncio.create_task(self._start_node_services())

    async def _start_node_services(self) -> None:
        """Bridge, kube-proxy, DNS and :10250, when the node gets its first pod."""
        cidr = ""
        while not cidr:
            code, node = await self.api("GET", f"/api/v1/nodes/{self.node_name}")
            cidr = node.get("spec", {}).get("podCIDR", "") if code == 200 and isinstance(node, dict) else ""
            if not cidr:
                await asyncio.sleep(1)
        await self.network.setup(cidr)
        self.log.info(
            f"Pod network: {network.BRIDGE} {self.network.gateway} on podCIDR {cidr} (host-gw routes)"
        )
        self._cluster = DNSAndProxy(self)
        await self._cluster.start()
        try:
            await self._serve()
        except (OSError, aiohttp.ClientError, ValueError) as exc:
            self.log.error(f"Failed to start the kubelet server on :10250: {exc}")

    async def _serve(self) -> None:
        from ..stream import kubelet_routes  # noqa: PLC0415

        tls = self.data_dir / "agent"
        bundle = await self.supervisor_get(
            "/v1-k3s/serving-kubelet.crt",
            {"K3s-Node-Name": self.node_name, "K3s-Node-IP": self.node_ip},
            "failed to get serving-kubelet.crt",
        )
        text = bundle.decode()
        cut = text.index("-----BEGIN EC PRIVATE KEY-----")
        crt, key = tls / "serving-kubelet.crt", tls / "serving-kubelet.key"
        crt.write_text(text[:cut])
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text[cut:])
        client_ca = await self.supervisor_get("/v1-k3s/client-ca.crt", {}, "failed to get client-ca.crt")
        (tls / "client-ca.crt").write_bytes(client_ca)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(crt), str(key))
        ctx.load_verify_locations(cadata=client_ca.decode())
        ctx.verify_mode = ssl.CERT_REQUIRED
        app = web.Application()
        kubelet_routes(app, self)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/pods", self._pods_endpoint)
        self._runner, site = await serving.listener(app, "0.0.0.0", 10250, ctx)
        await site.start()
        self.log.info("Started kubelet server on :10250")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _pods_endpoint(self, _request: web.Request) -> web.Response:
        items = [{**w.pod, "status": w.status()} for w in self.workers.values()]
        return web.json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def run(self) -> None:
        if os.environ.get("GORKHEAVY_K3S_ETC"):
            # several stand-ins on one machine (tests): they would share its network namespace and root
            self.log.info("Not running pods: GORKHEAVY_K3S_ETC is set (several stand-ins on one machine)")
            return
        for uid in reap_orphans(self.run_root):
            self.network.release(uid)
        self.pods.listeners.append(self._on_pod)
        tasks = [asyncio.create_task(i.run()) for i in (self.pods, self.services, self.slices, self.nodes)]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for worker in list(self.workers.values()):
                worker.stop()
            if self._cluster is not None:
                self._cluster.close()
            if self._runner is not None:
                await self._runner.cleanup()


class DNSAndProxy:
    """kube-proxy and the DNS of one node, fed by the kubelet's informers (Services, pods, nodes)."""

    def __init__(self, kubelet: Kubelet) -> None:
        self.k = kubelet
        self.dns = dns.ClusterDNS(kubelet.log, kubelet.domain, self._addresses)
        self._task: asyncio.Task[None] | None = None

    def _addresses(self, namespace: str, name: str) -> list[str] | None:
        for svc in self.k.services.items.values():
            if svc["metadata"].get("namespace") == namespace and svc["metadata"]["name"] == name:
                ip = svc.get("spec", {}).get("clusterIP")
                if ip and ip != "None":
                    return [ip]
                # headless: the ready endpoints' addresses
                headless = {**svc, "spec": {**svc.get("spec", {}), "clusterIP": "0.0.0.0"}}
                ports = network.service_ports([headless], list(self.k.slices.items.values()), "")
                return sorted({address for sp in ports for address, _ in sp.endpoints})
        return None

    async def start(self) -> None:
        await self.dns.start(self.k.network.gateway)
        self._task = asyncio.create_task(self._sync())

    async def _sync(self) -> None:
        while True:
            await asyncio.sleep(0.3)
            informers = (self.k.services, self.k.slices, self.k.nodes)
            for informer in informers:
                informer.changed.clear()
            try:
                ports = network.service_ports(
                    list(self.k.services.items.values()), list(self.k.slices.items.values()), self.k.dns_ip
                )
                await self.k.network.proxy(ports)
                await self.k.network.routes(list(self.k.nodes.items.values()), self.k.node_name)
            except OSError as exc:
                self.k.log.error(f"kube-proxy sync failed: {exc}")
            # Wait on what was read above (pods reach kube-proxy through their EndpointSlices).
            waits = [asyncio.create_task(i.changed.wait()) for i in informers]
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            for w in waits:
                w.cancel()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self.dns.close()


_ = urllib.parse
