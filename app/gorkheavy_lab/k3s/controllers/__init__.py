"""The control plane of the K3s stand-in: what kube-controller-manager, kube-scheduler and K3s's bundled
local-path provisioner do with the objects the API stores, so that a Deployment becomes Pods bound to nodes,
which the node side (the kubelet) then runs.

``extension`` (in ``server.EXTENSIONS``) registers ReplicaSets, PersistentVolumes, StorageClasses,
EndpointSlices, Endpoints, Ingresses and IngressClasses, gives Pods and claims the apiserver's admission and
defaults, hooks deletion (finalizers, graceful pod deletion, propagation) and ``pods/binding`` into the API,
seeds the ``local-path`` StorageClass and the ``traefik`` IngressClass, and returns one controller task
(``ControllerManager.run``) that runs a pass of every controller whenever an object they read changes (and
at least every two seconds, for the time-based parts: progress deadlines, minReadySeconds,
tolerationSeconds): node IPAM, taint eviction, the deployment and replica set controllers, the scheduler,
the PV controller with the local-path provisioner, the EndpointSlice and Endpoints controllers, the garbage
collector. Each module says what it models and what it does not."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from ..kube.extensions import Cluster, Controller
from ..kube.registry import Obj, Registry, ResourceType
from ..kube.store import Store
from . import endpoints, ingress, pods, storage
from .common import Context
from .deletion import Deleter
from .deployments import REPLICASETS, Controllers
from .eviction import TaintEviction
from .ipam import NodeIpam
from .scheduler import Scheduler
from .storage import Volumes

DEBOUNCE = 0.05  # seconds to let a burst of writes settle before a pass
PERIOD = 2.0  # a pass at least this often, for the time-based parts (deadlines, tolerationSeconds)
QUIET = frozenset({"events", "leases"})
MAX_FOLLOW_UPS = 10  # passes in a row while each one still changes objects


def _chain(first: Any, second: Any) -> Any:
    def hook(obj: Obj, store: Store) -> None:
        first(obj, store)
        if second is not None:
            second(obj, store)

    return hook


def _chain_update(first: Any, second: Any) -> Any:
    def hook(old: Obj, new: Obj, store: Store) -> None:
        first(old, new, store)
        if second is not None:
            second(old, new, store)

    return hook


class ControllerManager:
    def __init__(self, cluster: Cluster) -> None:
        self.ctx = Context(cluster.registry, cluster.store, cluster.log)
        self.deleter = Deleter(self.ctx)
        self.deployments = Controllers(self.ctx, self.deleter.delete)
        self.volumes = Volumes(self.ctx)
        self.scheduler = Scheduler(self.ctx, self.volumes)
        self.endpoints = endpoints.Endpoints(self.ctx)
        self.eviction = TaintEviction(self.ctx, self.deleter.delete)
        cidr = str(cluster.values.get("cluster-cidr") or "10.42.0.0/16").split(",")[0].strip()
        if isinstance(cluster.values.get("cluster-cidr"), list):
            cidr = str(cluster.values["cluster-cidr"][0]).split(",")[0].strip()
        mask = cluster.component_args("kube-controller-manager-arg").get("node-cidr-mask-size", "24")
        self.ipam = NodeIpam(self.ctx, cidr or "10.42.0.0/16", int(mask) if mask.isdigit() else 24)

    def sync(self) -> None:
        """One pass of every controller, in the order a change flows through them."""
        for step in (
            self.ipam.sync,
            self.eviction.sync,
            self.deployments.sync,
            self.scheduler.sync,
            self.volumes.sync,
            self.scheduler.sync,
            self.endpoints.sync,
            self.endpoints.collect,
            self.deleter.collect,
        ):
            try:
                step()
            except Exception as exc:
                self.ctx.log.error(f"controller {step.__qualname__} failed: {type(exc).__name__}: {exc}")

    async def run(self) -> None:
        queue = self.ctx.store.subscribe()
        loop = asyncio.get_running_loop()
        try:
            while True:
                deadline = loop.time() + PERIOD
                # wake for a change of what the controllers read; Events and Leases (written all the time by
                # kubelets and by the controllers themselves) change nothing they decide
                while loop.time() < deadline:
                    try:
                        event = await asyncio.wait_for(queue.get(), deadline - loop.time())
                    except TimeoutError:
                        break
                    if event.rtype.plural not in QUIET:
                        break
                await asyncio.sleep(DEBOUNCE)
                for _ in range(MAX_FOLLOW_UPS):
                    while not queue.empty():
                        queue.get_nowait()
                    self.sync()
                    # what a pass wrote may be another controller's cue (a deleted ReplicaSet orphans its
                    # pods): pass again until a pass changes nothing but Events and Leases
                    written = False
                    while not queue.empty():
                        written = queue.get_nowait().rtype.plural not in QUIET or written
                    if not written:
                        break
                    await asyncio.sleep(0)
        finally:
            self.ctx.store.unsubscribe(queue)


def _registered(registry: Registry, group: str, version: str, plural: str) -> ResourceType:
    rtype = registry.get(group, version, plural)
    if rtype is None:
        msg = f"{plural}.{group or 'core'}/{version} must be registered before the controllers' extension"
        raise KeyError(msg)
    return rtype


def _with(registry: Registry, group: str, version: str, plural: str, **changes: Any) -> ResourceType:
    return registry.replace(dataclasses.replace(_registered(registry, group, version, plural), **changes))


def extension(cluster: Cluster) -> list[Controller]:
    registry = cluster.registry
    if registry.get("apps", "v1", "replicasets") is None:
        registry.register(REPLICASETS)
    storage.register(registry)
    endpoints.register(registry)
    ingress.register(registry)
    current = _registered(registry, "", "v1", "pods")
    _with(
        registry,
        "",
        "v1",
        "pods",
        on_create=_chain(pods.pod_defaults, current.on_create),
        on_update=_chain_update(pods.pod_update, current.on_update),
        columns=current.columns or pods.POD_COLUMNS,
        subresources=tuple(dict.fromkeys((*current.subresources, "binding"))),
    )
    claims = _registered(registry, "", "v1", "persistentvolumeclaims")
    _with(
        registry,
        "",
        "v1",
        "persistentvolumeclaims",
        on_create=_chain(storage.claim_admission, claims.on_create),
    )
    storage.seed(cluster.store)
    ingress.seed(cluster.store)
    manager = ControllerManager(cluster)
    cluster.api.deleter = manager.deleter.delete
    cluster.api.on_written = manager.deleter.written
    cluster.api.subresource_handlers[("", "pods", "binding")] = pods.binding_handler(cluster.store)
    return [manager.run()]
