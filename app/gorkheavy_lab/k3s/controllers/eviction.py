"""kube-controller-manager's taint-eviction controller: a pod bound to a node with a ``NoExecute`` taint it
does not tolerate is deleted at once; one it tolerates for ``tolerationSeconds`` (every pod gets 300 s for
``node.kubernetes.io/not-ready`` and ``unreachable`` from the DefaultTolerationSeconds admission plugin) is
deleted when that time has passed since the taint's ``timeAdded``. The pod first gets the condition
``DisruptionTarget`` (``DeletionByTaintManager``) and the event ``TaintManagerEviction`` ("Marking for
deletion Pod <ns>/<pod>"); its deletion is graceful, so on a node whose kubelet is gone it stays Terminating,
and its ReplicaSet makes a replacement that the scheduler places elsewhere (the node's ``unreachable``
NoSchedule taint keeps it off that node)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ..kube.registry import Obj, ResourceType
from .common import Context, now, parse_time, stamp
from .scheduling import Node, untolerated

COMPONENT = "taint-eviction-controller"


def _matching_toleration_seconds(pod: Obj, taint: Obj) -> float | None:
    """The shortest tolerationSeconds of the tolerations that match the taint (None: forever)."""
    seconds: list[float] = []
    for tol in (pod.get("spec") or {}).get("tolerations") or []:
        if tol.get("effect") and tol["effect"] != taint["effect"]:
            continue
        op = tol.get("operator", "Equal")
        if tol.get("key") and tol["key"] != taint["key"]:
            continue
        if op != "Exists" and tol.get("key") and tol.get("value", "") != taint.get("value", ""):
            continue
        if tol.get("tolerationSeconds") is None:
            return None
        seconds.append(float(tol["tolerationSeconds"]))
    return min(seconds) if seconds else None


class TaintEviction:
    def __init__(self, ctx: Context, delete: Callable[[ResourceType, Obj, Obj], Obj]) -> None:
        self.ctx = ctx
        self.delete = delete
        self.pods = ctx.rtype("", "v1", "pods")
        self.nodes = ctx.rtype("", "v1", "nodes")

    def sync(self) -> None:
        store = self.ctx.store
        nodes = {n["metadata"]["name"]: n for n in store.list(self.nodes)}
        at = now()
        for pod in store.list(self.pods):
            name = (pod.get("spec") or {}).get("nodeName")
            if not name or name not in nodes or pod["metadata"].get("deletionTimestamp"):
                continue
            node = Node.from_api(nodes[name])
            due = bool(untolerated(pod.get("spec") or {}, node, ("NoExecute",)))
            for taint in [t for t in node.taints if t.get("effect") == "NoExecute"]:
                seconds = _matching_toleration_seconds(pod, taint)
                added = parse_time(taint.get("timeAdded"))
                if seconds is not None and added is not None and added + dt.timedelta(seconds=seconds) <= at:
                    due = True
            if due:
                self._evict(pod)

    def _evict(self, pod: Obj) -> None:
        meta = pod["metadata"]
        self.ctx.event(
            pod,
            "Pod",
            "TaintManagerEviction",
            f"Marking for deletion Pod {meta['namespace']}/{meta['name']}",
            COMPONENT,
        )
        status = pod.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"]
        conditions.append(
            {
                "type": "DisruptionTarget",
                "status": "True",
                "lastProbeTime": None,
                "lastTransitionTime": stamp(),
                "reason": "DeletionByTaintManager",
                "message": "Taint manager: deleting due to NoExecute taint",
            }
        )
        status["conditions"] = conditions
        self.delete(self.pods, self.ctx.store.replace(self.pods, pod), {})
