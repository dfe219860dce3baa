"""kube-scheduler's loop over the API. Every pod without a node (``schedulerName`` default-scheduler, not
being deleted, no scheduling gates), highest priority then oldest first, is placed by
``scheduling.schedule_one`` against the nodes and the pods already bound, and bound through the same code
as ``pods/binding`` (event ``Scheduled``: "Successfully assigned <ns>/<pod> to <node>").

A pod that fits nowhere gets the condition PodScheduled=False ``Unschedulable`` with kube-scheduler's
message and a ``FailedScheduling`` Warning event with the same text, and is tried again when the nodes, the
pods or the volumes change (or after five minutes, as kube-scheduler flushes its unschedulable queue). A pod
with an unbound ``WaitForFirstConsumer`` claim gets its node written on the claim first and is bound once the
volume is provisioned and bound."""

from __future__ import annotations

import hashlib
import json
import time

from ..kube.registry import Obj
from .common import Context, stamp
from .pods import bind
from .scheduling import Node, Pod, Unschedulable, schedule_one
from .storage import Volumes

COMPONENT = "default-scheduler"
RETRY_SECONDS = 300.0


class Scheduler:
    def __init__(self, ctx: Context, volumes: Volumes) -> None:
        self.ctx = ctx
        self.volumes = volumes
        self.pods = ctx.rtype("", "v1", "pods")
        self.nodes = ctx.rtype("", "v1", "nodes")
        self.namespaces = ctx.rtype("", "v1", "namespaces")
        self.claims = ctx.rtype("", "v1", "persistentvolumeclaims")
        # pod uid -> (the cluster's fingerprint when it last failed, when)
        self._failed: dict[str, tuple[str, float]] = {}

    def _fingerprint(self, nodes: list[Obj], pods: list[Obj], claims: list[Obj]) -> str:
        view = [
            [
                (
                    n["metadata"]["name"],
                    n["metadata"].get("labels"),
                    n.get("spec"),
                    (n.get("status") or {}).get("allocatable"),
                )
                for n in nodes
            ],
            [
                (
                    p["metadata"].get("uid"),
                    (p.get("spec") or {}).get("nodeName"),
                    bool(p["metadata"].get("deletionTimestamp")),
                    (p.get("status") or {}).get("phase"),
                )
                for p in pods
            ],
            [(c["metadata"].get("uid"), c.get("spec"), (c.get("status") or {}).get("phase")) for c in claims],
        ]
        return hashlib.sha256(json.dumps(view, sort_keys=True, default=str).encode()).hexdigest()

    def sync(self) -> None:
        store = self.ctx.store
        node_objs = store.list(self.nodes)
        pod_objs = store.list(self.pods)
        fingerprint = self._fingerprint(node_objs, pod_objs, store.list(self.claims))
        nodes = [Node.from_api(n) for n in node_objs]
        placed = [
            Pod.from_api(p)
            for p in pod_objs
            if (p.get("spec") or {}).get("nodeName")
            and (p.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}
        ]
        namespaces = {
            ns["metadata"]["name"]: dict(ns["metadata"].get("labels") or {})
            for ns in store.list(self.namespaces)
        }
        pending = [
            p
            for p in pod_objs
            if not (p.get("spec") or {}).get("nodeName")
            and not p["metadata"].get("deletionTimestamp")
            and (p.get("spec") or {}).get("schedulerName", COMPONENT) == COMPONENT
            and not (p.get("spec") or {}).get("schedulingGates")
        ]
        pending.sort(
            key=lambda p: (
                -int((p.get("spec") or {}).get("priority", 0) or 0),
                p["metadata"].get("creationTimestamp", ""),
                p["metadata"]["name"],
            )
        )
        alive = {p["metadata"].get("uid") for p in pod_objs}
        self._failed = {uid: v for uid, v in self._failed.items() if uid in alive}
        for obj in pending:
            uid = obj["metadata"].get("uid", "")
            last = self._failed.get(uid)
            if last is not None and last[0] == fingerprint and time.monotonic() - last[1] < RETRY_SECONDS:
                continue
            pod = Pod.from_api(obj)
            try:
                node = schedule_one(
                    pod,
                    nodes,
                    placed,
                    volumes=self.volumes.filter,
                    prefilter=self.volumes.prefilter,
                    namespaces=namespaces,
                )
            except Unschedulable as exc:
                self._failed[uid] = (fingerprint, time.monotonic())
                self._unschedulable(obj, exc.message)
                continue
            self._failed.pop(uid, None)
            unbound = self.volumes.unbound(pod)
            if unbound:
                # PreBind: the claims learn the node; the pod is bound once they are
                for claim in unbound:
                    self.volumes.select_node(claim, node)
                pod.node = node
                placed.append(pod)
                continue
            fresh = store.get(self.pods, pod.namespace, pod.name)
            if fresh is None or (fresh.get("spec") or {}).get("nodeName"):
                continue
            bind(store, self.pods, fresh, node)
            self.ctx.event(
                fresh,
                "Pod",
                "Scheduled",
                f"Successfully assigned {pod.namespace}/{pod.name} to {node}",
                COMPONENT,
            )
            pod.node = node
            placed.append(pod)

    def _unschedulable(self, obj: Obj, message: str) -> None:
        store = self.ctx.store
        status = obj.setdefault("status", {})
        conditions = status.get("conditions") or []
        current = next((c for c in conditions if c.get("type") == "PodScheduled"), None)
        if current is None or current.get("status") != "False" or current.get("message") != message:
            cond = {
                "type": "PodScheduled",
                "status": "False",
                "lastProbeTime": None,
                "lastTransitionTime": current.get("lastTransitionTime")
                if current and current.get("status") == "False"
                else stamp(),
                "reason": "Unschedulable",
                "message": message,
            }
            status["conditions"] = [c for c in conditions if c.get("type") != "PodScheduled"] + [cond]
            status.setdefault("phase", "Pending")
            store.replace(self.pods, obj)
        self.ctx.event(obj, "Pod", "FailedScheduling", message, COMPONENT, event_type="Warning")
