"""The deployment and replica set controllers of kube-controller-manager (pkg/controller/deployment and
pkg/controller/replicaset), one sync per object per pass:

- A Deployment owns ReplicaSets named ``<deployment>-<pod-template-hash>``. The hash is FNV-1a (32 bit)
  over the pod template as canonical JSON (sorted keys), then ``status.collisionCount`` as 4 little-endian
  bytes when set, written in decimal and mapped onto k8s's ``SafeEncodeString`` alphabet, as Kubernetes's
  ComputeHash does, except that Kubernetes hashes the Go struct with a spew printer (not reproducible outside
  Go): the hash is as stable and of the same form, not the same digits.
- RollingUpdate scales the new ReplicaSet up within ``maxSurge`` (percent rounded up) and the old ones down
  within ``maxUnavailable`` (rounded down), unhealthy old pods first; Recreate scales the old ones to zero,
  waits until none of their pods runs, then creates and scales the new one. Revisions
  (``deployment.kubernetes.io/revision``, ``desired-replicas``, ``max-replicas``), ``revisionHistoryLimit``,
  ``ScalingReplicaSet`` events, and the status as ``calculateStatus``/``syncRolloutStatus`` compute it:
  ``observedGeneration``, ``replicas``, ``updatedReplicas``, ``readyReplicas``, ``availableReplicas``,
  ``unavailableReplicas``, ``terminatingReplicas`` (beta in 1.36, on by default), conditions ``Available``
  (MinimumReplicasAvailable/Unavailable) and ``Progressing`` (NewReplicaSetCreated, FoundNewReplicaSet,
  ReplicaSetUpdated, NewReplicaSetAvailable, ProgressDeadlineExceeded after ``progressDeadlineSeconds``).
- A ReplicaSet owns Pods made from its template (``generateName: <replicaset>-``, a controller owner
  reference), creates the missing ones and deletes the surplus (unscheduled, then pending, then not ready
  first), adopts matching orphans, and reports ``replicas``, ``fullyLabeledReplicas``, ``readyReplicas``,
  ``availableReplicas`` (ready for ``minReadySeconds``), ``terminatingReplicas`` and ``observedGeneration``.

Not modelled: pausing (a paused Deployment only gets its status), rollback to a revision by annotation,
proportional scaling across ReplicaSets during a rollout (a scale mid-rollout converges through the rolling
steps instead)."""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from ..kube.registry import Column, Obj, ResourceType
from ..kube.tables import AGE, NAME
from ..kube.workloads import DEPLOYMENTS
from .common import (
    Context,
    active,
    controller_of,
    fnv32a,
    now,
    owned_by,
    owner_reference,
    parse_time,
    pod_available,
    pod_ready,
    safe_encode,
    stamp,
)
from .scheduling import selector_matches

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
DESIRED = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
# annotations of the Deployment that its ReplicaSets do not copy (deploymentutil.skipCopyAnnotation)
SKIP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    DESIRED,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}
COMPONENT_DEPLOYMENT = "deployment-controller"
COMPONENT_REPLICASET = "replicaset-controller"
BURST = 500  # the replica set controller's burstReplicas

Deleter = Callable[[ResourceType, Obj, Obj], Obj]


def _compact(value: Any) -> Any:
    """Go's omitempty view of a template: null, empty objects and empty lists are as good as absent (a
    client that serialises a Go struct, like kubectl rollout undo, sends ``creationTimestamp: null`` and
    ``resources: {}``; the apiserver's decoding drops them)."""
    if isinstance(value, dict):
        out = {k: _compact(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def template_hash(template: Obj, collision_count: int | None = None) -> str:
    data = json.dumps(_compact(template), sort_keys=True, separators=(",", ":")).encode()
    if collision_count is not None:
        data += struct.pack("<I", collision_count & 0xFFFFFFFF)
    return safe_encode(str(fnv32a(data)))


def _without_hash(template: Obj) -> Obj:
    """The template as the controller compares it (EqualIgnoreHash): no pod-template-hash label, omitempty."""
    out = copy.deepcopy(template)
    labels = (out.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    compact: Obj = _compact(out)
    return compact


def _int_or_percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value or 0)


def fenceposts(deployment: Obj) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) resolved against the replicas, as deploymentutil.ResolveFenceposts."""
    spec = deployment["spec"]
    if spec.get("strategy", {}).get("type") != "RollingUpdate":
        return 0, 0
    rolling = spec["strategy"].get("rollingUpdate") or {}
    replicas = int(spec.get("replicas", 1))
    surge = _int_or_percent(rolling.get("maxSurge", "25%"), replicas, True)
    unavailable = _int_or_percent(rolling.get("maxUnavailable", "25%"), replicas, False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_unavailable(deployment: Obj) -> int:
    replicas = int(deployment["spec"].get("replicas", 1))
    if deployment["spec"].get("strategy", {}).get("type") != "RollingUpdate" or replicas == 0:
        return 0
    return min(fenceposts(deployment)[1], replicas)


def _replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 1))


def _status(rs: Obj, key: str) -> int:
    return int((rs.get("status") or {}).get(key, 0) or 0)


def _revision(rs: Obj) -> int:
    try:
        return int((rs["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def _created(obj: Obj) -> tuple[str, str]:
    return (obj["metadata"].get("creationTimestamp", ""), obj["metadata"]["name"])


def new_condition(kind: str, status: str, reason: str, message: str) -> Obj:
    when = stamp()
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": when,
        "lastTransitionTime": when,
        "reason": reason,
        "message": message,
    }


def set_condition(status: Obj, cond: Obj) -> None:
    """deploymentutil.SetDeploymentCondition: same status and reason is no change; same status keeps the
    transition time; the condition moves to the end of the list."""
    conditions = status.setdefault("conditions", [])
    current = next((c for c in conditions if c["type"] == cond["type"]), None)
    if (
        current is not None
        and current["status"] == cond["status"]
        and current.get("reason") == cond["reason"]
    ):
        return
    if current is not None and current["status"] == cond["status"]:
        cond["lastTransitionTime"] = current.get("lastTransitionTime", cond["lastTransitionTime"])
    status["conditions"] = [c for c in conditions if c["type"] != cond["type"]] + [cond]


def remove_condition(status: Obj, kind: str) -> None:
    if "conditions" in status:
        status["conditions"] = [c for c in status["conditions"] if c["type"] != kind]


def _get_condition(status: Obj, kind: str) -> Obj | None:
    return next((c for c in status.get("conditions") or [] if c["type"] == kind), None)


def _omit_zero(status: Obj) -> Obj:
    """Go's omitempty: zero counts are not written."""
    return {k: v for k, v in status.items() if v not in (0, None, [])}


class Controllers:
    """The two controllers over one store; ``sync`` runs one pass of both."""

    def __init__(self, ctx: Context, delete: Deleter) -> None:
        self.ctx = ctx
        self.delete = delete
        self.deployments = ctx.rtype("apps", "v1", "deployments")
        self.replicasets = ctx.rtype("apps", "v1", "replicasets")
        self.pods = ctx.rtype("", "v1", "pods")

    # --- replica sets ---------------------------------------------------------------------------------
    def sync_replicaset(self, rs: Obj, pods: list[Obj]) -> None:
        store = self.ctx.store
        meta = rs["metadata"]
        selector = (rs.get("spec") or {}).get("selector") or {}
        mine = []
        for pod in pods:
            if pod["metadata"].get("namespace") != meta.get("namespace"):
                continue
            if owned_by(pod, rs):
                mine.append(pod)
            elif (
                controller_of(pod) is None
                and not meta.get("deletionTimestamp")
                and not pod["metadata"].get("deletionTimestamp")
                and selector_matches(selector, pod["metadata"].get("labels") or {})
            ):
                pod["metadata"].setdefault("ownerReferences", []).append(
                    owner_reference(rs, self.replicasets)
                )
                store.replace(self.pods, pod)
                mine.append(pod)
        running = [p for p in mine if active(p)]
        failure = None
        if not meta.get("deletionTimestamp"):
            diff = len(running) - _replicas(rs)
            if diff < 0:
                for _ in range(min(-diff, BURST)):
                    try:
                        created = self.ctx.create(self.pods, self._pod_from(rs))
                    except Exception as exc:
                        failure = str(exc)
                        self.ctx.event(
                            rs,
                            "ReplicaSet",
                            "FailedCreate",
                            f"Error creating: {exc}",
                            COMPONENT_REPLICASET,
                            event_type="Warning",
                        )
                        break
                    running.append(created)
                    mine.append(created)
                    self.ctx.event(
                        rs,
                        "ReplicaSet",
                        "SuccessfulCreate",
                        f"Created pod: {created['metadata']['name']}",
                        COMPONENT_REPLICASET,
                    )
            elif diff > 0:
                for pod in sorted(running, key=_deletion_rank)[:diff]:
                    self.delete(self.pods, pod, {})
                    self.ctx.event(
                        rs,
                        "ReplicaSet",
                        "SuccessfulDelete",
                        f"Deleted pod: {pod['metadata']['name']}",
                        COMPONENT_REPLICASET,
                    )
                    running.remove(pod)
        current = {p["metadata"]["name"]: p for p in store.list(self.pods, meta.get("namespace"))}
        mine = [current[p["metadata"]["name"]] for p in mine if p["metadata"]["name"] in current]
        running = [p for p in mine if active(p)]
        labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds", 0) or 0)
        status = _omit_zero(
            {
                "replicas": len(running),
                "fullyLabeledReplicas": sum(
                    1
                    for p in running
                    if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())
                ),
                "readyReplicas": sum(1 for p in running if pod_ready(p)),
                "availableReplicas": sum(1 for p in running if pod_available(p, min_ready)),
                "terminatingReplicas": sum(
                    1
                    for p in mine
                    if p["metadata"].get("deletionTimestamp")
                    and (p.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}
                ),
            }
        )
        status["observedGeneration"] = meta.get("generation", 1)
        old = rs.get("status") or {}
        conditions = [c for c in old.get("conditions") or [] if c.get("type") != "ReplicaFailure"]
        if failure:
            conditions.append(
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "lastTransitionTime": stamp(),
                    "reason": "FailedCreate",
                    "message": failure,
                }
            )
        if conditions:
            status["conditions"] = conditions
        if status != old:
            fresh = store.get(self.replicasets, meta["namespace"], meta["name"])
            if fresh is not None:
                fresh["status"] = status
                store.replace(self.replicasets, fresh)

    def _pod_from(self, rs: Obj) -> Obj:
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        meta: Obj = {
            "generateName": f"{rs['metadata']['name']}-",
            "namespace": rs["metadata"]["namespace"],
            "labels": tmeta.get("labels") or {},
            "ownerReferences": [owner_reference(rs, self.replicasets)],
        }
        if tmeta.get("annotations"):
            meta["annotations"] = tmeta["annotations"]
        if tmeta.get("finalizers"):
            meta["finalizers"] = tmeta["finalizers"]
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": template.get("spec") or {}}

    # --- deployments ----------------------------------------------------------------------------------
    def sync_deployment(self, d: Obj, all_rs: list[Obj], pods: list[Obj]) -> None:
        meta = d["metadata"]
        namespace = meta["namespace"]
        selector = d["spec"].get("selector") or {}
        rss = []
        for rs in all_rs:
            if rs["metadata"].get("namespace") != namespace:
                continue
            if owned_by(rs, d):
                rss.append(rs)
            elif (
                controller_of(rs) is None
                and not meta.get("deletionTimestamp")
                and selector_matches(selector, rs["metadata"].get("labels") or {})
            ):
                rs["metadata"].setdefault("ownerReferences", []).append(owner_reference(d, self.deployments))
                self.ctx.store.replace(self.replicasets, rs)
                rss.append(rs)
        if meta.get("deletionTimestamp") or d["spec"].get("paused"):
            new, _olds = self._new_and_old(d, rss, create=False)
            self._sync_rollout_status(d, rss, new)
            return
        if d["spec"].get("strategy", {}).get("type") == "Recreate":
            self._recreate(d, rss, pods)
        else:
            self._rolling(d, rss)

    def _find_new(self, d: Obj, rss: list[Obj]) -> Obj | None:
        wanted = _without_hash(d["spec"]["template"])
        for rs in sorted(rss, key=_created):
            if _without_hash((rs.get("spec") or {}).get("template") or {}) == wanted:
                return rs
        return None

    def _new_rs_replicas(self, d: Obj, rss: list[Obj], new: Obj | None) -> int:
        replicas = int(d["spec"].get("replicas", 1))
        if d["spec"].get("strategy", {}).get("type") != "RollingUpdate":
            return replicas
        surge, _ = fenceposts(d)
        current = sum(_replicas(rs) for rs in rss)
        most = replicas + surge
        have = _replicas(new) if new is not None else 0
        if current >= most:
            return have
        return min(have + most - current, replicas)

    def _annotate_rs(self, d: Obj, rs: Obj, revision: int) -> bool:
        annotations = rs["metadata"].setdefault("annotations", {})
        before = dict(annotations)
        for key, value in (d["metadata"].get("annotations") or {}).items():
            if key not in SKIP_ANNOTATIONS:
                annotations[key] = value
        if _revision(rs) < revision:
            annotations[REVISION] = str(revision)
        surge, _ = fenceposts(d)
        annotations[DESIRED] = str(d["spec"].get("replicas", 1))
        annotations[MAX_REPLICAS] = str(int(d["spec"].get("replicas", 1)) + surge)
        return bool(annotations != before)

    def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        annotations = d["metadata"].setdefault("annotations", {})
        if annotations.get(REVISION) != revision:
            annotations[REVISION] = revision
            fresh = self.ctx.store.get(self.deployments, d["metadata"]["namespace"], d["metadata"]["name"])
            if fresh is not None:
                fresh["metadata"].setdefault("annotations", {})[REVISION] = revision
                d.update(self.ctx.store.replace(self.deployments, fresh))

    def _write_status(self, d: Obj, status: Obj) -> None:
        fresh = self.ctx.store.get(self.deployments, d["metadata"]["namespace"], d["metadata"]["name"])
        if fresh is not None and fresh.get("status") != status:
            fresh["status"] = status
            d.update(self.ctx.store.replace(self.deployments, fresh))

    def _new_and_old(self, d: Obj, rss: list[Obj], create: bool) -> tuple[Obj | None, list[Obj]]:
        store = self.ctx.store
        new = self._find_new(d, rss)
        olds = [rs for rs in rss if rs is not new]
        revision = max((_revision(rs) for rs in olds), default=0) + 1
        deadline = d["spec"].get("progressDeadlineSeconds") is not None
        if new is not None:
            if self._annotate_rs(d, new, revision):
                new.update(store.replace(self.replicasets, new))
            self._set_deployment_revision(d, new["metadata"]["annotations"][REVISION])
            status = copy.deepcopy(d.get("status") or {})
            if deadline and _get_condition(status, "Progressing") is None:
                set_condition(
                    status,
                    new_condition(
                        "Progressing",
                        "True",
                        "FoundNewReplicaSet",
                        f'Found new replica set "{new["metadata"]["name"]}"',
                    ),
                )
                self._write_status(d, status)
            return new, olds
        if not create:
            return None, olds
        template = copy.deepcopy(d["spec"]["template"])
        collisions = (d.get("status") or {}).get("collisionCount")
        pod_hash = template_hash(template, collisions)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = pod_hash
        name = f"{d['metadata']['name']}-{pod_hash}"
        selector = copy.deepcopy(d["spec"]["selector"])
        selector.setdefault("matchLabels", {})[HASH_LABEL] = pod_hash
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": d["metadata"]["namespace"],
                "labels": template["metadata"]["labels"],
                "ownerReferences": [owner_reference(d, self.deployments)],
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": int(d["spec"].get("minReadySeconds", 0) or 0),
                "selector": selector,
                "template": template,
            },
        }
        self._annotate_rs(d, rs, revision)
        rs["spec"]["replicas"] = self._new_rs_replicas(d, rss, None)
        existing = store.get(self.replicasets, rs["metadata"]["namespace"], name)
        if existing is not None:
            if owned_by(existing, d) and _without_hash(existing["spec"]["template"]) == _without_hash(
                template
            ):
                return existing, olds
            # a hash collision: count it and try again with the next name on the next pass
            status = copy.deepcopy(d.get("status") or {})
            status["collisionCount"] = int(status.get("collisionCount", 0)) + 1
            self._write_status(d, status)
            return None, olds
        created = self.ctx.create(self.replicasets, rs)
        replicas = created["spec"]["replicas"]
        if replicas > 0:
            self.ctx.event(
                d,
                "Deployment",
                "ScalingReplicaSet",
                f"Scaled up replica set {name} from 0 to {replicas}",
                COMPONENT_DEPLOYMENT,
            )
        self._set_deployment_revision(d, str(revision))
        if deadline:
            status = copy.deepcopy(d.get("status") or {})
            set_condition(
                status,
                new_condition(
                    "Progressing", "True", "NewReplicaSetCreated", f'Created new replica set "{name}"'
                ),
            )
            self._write_status(d, status)
        rss.append(created)
        return created, olds

    def _scale(self, d: Obj, rs: Obj, replicas: int) -> bool:
        before = _replicas(rs)
        annotated = self._annotate_rs(d, rs, _revision(rs))
        if before == replicas and not annotated:
            return False
        rs["spec"]["replicas"] = replicas
        rs.update(self.ctx.store.replace(self.replicasets, rs))
        if before != replicas:
            way = "up" if replicas > before else "down"
            self.ctx.event(
                d,
                "Deployment",
                "ScalingReplicaSet",
                f"Scaled {way} replica set {rs['metadata']['name']} from {before} to {replicas}",
                COMPONENT_DEPLOYMENT,
            )
        return before != replicas

    def _rolling(self, d: Obj, rss: list[Obj]) -> None:
        new, olds = self._new_and_old(d, rss, create=True)
        every = [*olds, *([new] if new is not None else [])]
        replicas = int(d["spec"].get("replicas", 1))
        if new is not None:
            if _replicas(new) > replicas:
                if self._scale(d, new, replicas):
                    self._sync_rollout_status(d, every, new)
                    return
            elif _replicas(new) < replicas and self._scale(d, new, self._new_rs_replicas(d, every, new)):
                self._sync_rollout_status(d, every, new)
                return
        if self._scale_down_old(d, every, [rs for rs in olds if _replicas(rs) > 0], new):
            self._sync_rollout_status(d, every, new)
            return
        if self._complete(d, self._calculate(d, every, new)):
            self._cleanup(d, olds)
        self._sync_rollout_status(d, every, new)

    def _scale_down_old(self, d: Obj, every: list[Obj], olds: list[Obj], new: Obj | None) -> bool:
        old_pods = sum(_replicas(rs) for rs in olds)
        if old_pods == 0:
            return False
        all_pods = sum(_replicas(rs) for rs in every)
        minimum = int(d["spec"].get("replicas", 1)) - max_unavailable(d)
        new_unavailable = (_replicas(new) - _status(new, "availableReplicas")) if new is not None else 0
        most = all_pods - minimum - new_unavailable
        if most <= 0:
            return False
        scaled = 0
        # old replica sets' unhealthy pods go first (cleanupUnhealthyReplicas), oldest replica set first
        for rs in sorted(olds, key=_created):
            if scaled >= most:
                break
            unhealthy = _replicas(rs) - _status(rs, "availableReplicas")
            if unhealthy <= 0:
                continue
            down = min(most - scaled, unhealthy)
            self._scale(d, rs, _replicas(rs) - down)
            scaled += down
        available = sum(_status(rs, "availableReplicas") for rs in every)
        total = available - minimum
        done = 0
        if total > 0:
            for rs in sorted(olds, key=_created):
                if done >= total or _replicas(rs) == 0:
                    continue
                down = min(_replicas(rs), total - done)
                self._scale(d, rs, _replicas(rs) - down)
                done += down
        return scaled + done > 0

    def _recreate(self, d: Obj, rss: list[Obj], pods: list[Obj]) -> None:
        new, olds = self._new_and_old(d, rss, create=False)
        every = [*olds, *([new] if new is not None else [])]
        scaled = False
        for rs in olds:
            if _replicas(rs) > 0:
                scaled = self._scale(d, rs, 0) or scaled
        if scaled:
            self._sync_rollout_status(d, every, new)
            return
        if self._old_pods_running(olds, pods):
            self._sync_rollout_status(d, every, new)
            return
        if new is None:
            new, olds = self._new_and_old(d, rss, create=True)
            every = [*olds, *([new] if new is not None else [])]
        if new is not None:
            self._scale(d, new, int(d["spec"].get("replicas", 1)))
        if self._complete(d, self._calculate(d, every, new)):
            self._cleanup(d, olds)
        self._sync_rollout_status(d, every, new)

    def _old_pods_running(self, olds: list[Obj], pods: list[Obj]) -> bool:
        if any(_status(rs, "replicas") > 0 for rs in olds):
            return True
        for rs in olds:
            for pod in pods:
                if owned_by(pod, rs) and (pod.get("status") or {}).get("phase") not in {
                    "Succeeded",
                    "Failed",
                }:
                    return True
        return False

    def _cleanup(self, d: Obj, olds: list[Obj]) -> None:
        limit = d["spec"].get("revisionHistoryLimit")
        if limit is None:
            return
        alive = [rs for rs in olds if not rs["metadata"].get("deletionTimestamp")]
        diff = len(alive) - int(limit)
        if diff <= 0:
            return
        for rs in sorted(alive, key=lambda r: (_revision(r), _created(r)))[:diff]:
            if (
                _status(rs, "replicas")
                or _replicas(rs)
                or rs["metadata"].get("generation", 1) > _status(rs, "observedGeneration")
            ):
                continue
            self.delete(self.replicasets, rs, {})

    def _calculate(self, d: Obj, every: list[Obj], new: Obj | None) -> Obj:
        available = sum(_status(rs, "availableReplicas") for rs in every)
        total = sum(_replicas(rs) for rs in every)
        status = _omit_zero(
            {
                "replicas": sum(_status(rs, "replicas") for rs in every),
                "updatedReplicas": _status(new, "replicas") if new is not None else 0,
                "readyReplicas": sum(_status(rs, "readyReplicas") for rs in every),
                "availableReplicas": available,
                "unavailableReplicas": max(total - available, 0),
                "terminatingReplicas": sum(_status(rs, "terminatingReplicas") for rs in every),
            }
        )
        status = {"observedGeneration": d["metadata"].get("generation", 1), **status}
        before = d.get("status") or {}
        if before.get("collisionCount") is not None:
            status["collisionCount"] = before["collisionCount"]
        status["conditions"] = copy.deepcopy(before.get("conditions") or [])
        replicas = int(d["spec"].get("replicas", 1))
        if available >= replicas - max_unavailable(d):
            set_condition(
                status,
                new_condition(
                    "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability."
                ),
            )
        else:
            set_condition(
                status,
                new_condition(
                    "Available",
                    "False",
                    "MinimumReplicasUnavailable",
                    "Deployment does not have minimum availability.",
                ),
            )
        return status

    @staticmethod
    def _complete(d: Obj, status: Obj) -> bool:
        replicas = int(d["spec"].get("replicas", 1))
        return bool(
            status.get("updatedReplicas", 0) == replicas
            and status.get("replicas", 0) == replicas
            and status.get("availableReplicas", 0) == replicas
            and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
        )

    def _sync_rollout_status(self, d: Obj, every: list[Obj], new: Obj | None) -> None:
        fresh = self.ctx.store.get(self.deployments, d["metadata"]["namespace"], d["metadata"]["name"])
        if fresh is None:
            return
        d = fresh
        status = self._calculate(d, every, new)
        deadline = d["spec"].get("progressDeadlineSeconds")
        if deadline is None:
            remove_condition(status, "Progressing")
        before = d.get("status") or {}
        current = _get_condition(before, "Progressing")
        finished = (
            status.get("replicas", 0) == status.get("updatedReplicas", 0)
            and current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
        )
        new_name = new["metadata"]["name"] if new is not None else ""
        if deadline is not None and not finished:
            if self._complete(d, status):
                message = (
                    f'ReplicaSet "{new_name}" has successfully progressed.'
                    if new
                    else f'Deployment "{d["metadata"]["name"]}" has successfully progressed.'
                )
                set_condition(status, new_condition("Progressing", "True", "NewReplicaSetAvailable", message))
            elif _progressing(before, status):
                message = (
                    f'ReplicaSet "{new_name}" is progressing.'
                    if new
                    else f'Deployment "{d["metadata"]["name"]}" is progressing.'
                )
                cond = new_condition("Progressing", "True", "ReplicaSetUpdated", message)
                if current is not None:
                    if current.get("status") == "True":
                        cond["lastTransitionTime"] = current.get(
                            "lastTransitionTime", cond["lastTransitionTime"]
                        )
                    remove_condition(status, "Progressing")
                set_condition(status, cond)
            elif _timed_out(status, int(deadline)):
                message = (
                    f'ReplicaSet "{new_name}" has timed out progressing.'
                    if new
                    else f'Deployment "{d["metadata"]["name"]}" has timed out progressing.'
                )
                set_condition(
                    status, new_condition("Progressing", "False", "ProgressDeadlineExceeded", message)
                )
        failures = [
            c
            for rs in every
            for c in (rs.get("status") or {}).get("conditions") or []
            if c.get("type") == "ReplicaFailure" and c.get("status") == "True"
        ]
        if failures:
            set_condition(
                status,
                {
                    "type": "ReplicaFailure",
                    "status": "True",
                    "lastUpdateTime": failures[0].get("lastTransitionTime", stamp()),
                    "lastTransitionTime": failures[0].get("lastTransitionTime", stamp()),
                    "reason": failures[0].get("reason", "FailedCreate"),
                    "message": failures[0].get("message", ""),
                },
            )
        else:
            remove_condition(status, "ReplicaFailure")
        if status != before:
            d["status"] = status
            self.ctx.store.replace(self.deployments, d)

    # --- one pass -------------------------------------------------------------------------------------
    def sync(self) -> None:
        store = self.ctx.store
        pods = store.list(self.pods)
        for d in store.list(self.deployments):
            self.sync_deployment(d, store.list(self.replicasets, d["metadata"]["namespace"]), pods)
        pods = store.list(self.pods)
        for rs in store.list(self.replicasets):
            self.sync_replicaset(rs, pods)
        # the replica sets' new status feeds the deployments' status in the same pass
        pods = store.list(self.pods)
        for d in store.list(self.deployments):
            self.sync_deployment(d, store.list(self.replicasets, d["metadata"]["namespace"]), pods)


def _progressing(before: Obj, status: Obj) -> bool:
    def old(s: Obj) -> int:
        return int(s.get("replicas", 0)) - int(s.get("updatedReplicas", 0))

    return (
        status.get("updatedReplicas", 0) > before.get("updatedReplicas", 0)
        or old(status) < old(before)
        or status.get("readyReplicas", 0) > before.get("readyReplicas", 0)
        or status.get("availableReplicas", 0) > before.get("availableReplicas", 0)
    )


def _timed_out(status: Obj, deadline: int, at: dt.datetime | None = None) -> bool:
    cond = _get_condition(status, "Progressing")
    if cond is None or cond.get("reason") == "NewReplicaSetAvailable":
        return False
    if cond.get("reason") == "ProgressDeadlineExceeded":
        return True
    since = parse_time(cond.get("lastUpdateTime"))
    return since is not None and since + dt.timedelta(seconds=deadline) < (at or now())


def _deletion_rank(pod: Obj) -> tuple[int, int, int, str]:
    """controller.ActivePods order: unscheduled < scheduled, Pending < Unknown < Running, not ready < ready,
    then the newest first (by creation time, reversed through the name tie-break)."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase", "Pending")
    rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(phase, 0)
    created = pod["metadata"].get("creationTimestamp", "")
    inverted = "".join(chr(0x10FFFF - ord(c)) for c in created)
    return (1 if spec.get("nodeName") else 0, rank, 1 if pod_ready(pod) else 0, inverted)


def _rs_images(o: Obj) -> str:
    containers = ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(str(c.get("image", "")) for c in containers)


def _rs_containers(o: Obj) -> str:
    containers = ((o.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []
    return ",".join(str(c.get("name", "")) for c in containers)


def _rs_selector(o: Obj) -> str:
    labels = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "<none>"


def _rs_create(obj: Obj, _store: Any) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("minReadySeconds", 0)
    obj["status"] = {"replicas": 0}


REPLICASETS = ResourceType(
    "apps",
    "v1",
    "ReplicaSet",
    "replicasets",
    namespaced=True,
    short_names=("rs",),
    categories=("all",),
    subresources=("status",),
    uses_generation=True,
    on_create=_rs_create,
    merge_keys=dict(DEPLOYMENTS.merge_keys),  # the same pod template and conditions
    columns=(
        NAME,
        Column(
            "Desired",
            "integer",
            "Number of desired pods.",
            lambda o: (o.get("spec") or {}).get("replicas", 1),
        ),
        Column(
            "Current",
            "integer",
            "Number of actual pods.",
            lambda o: (o.get("status") or {}).get("replicas", 0),
        ),
        Column(
            "Ready",
            "integer",
            "Number of ready pods.",
            lambda o: (o.get("status") or {}).get("readyReplicas", 0),
        ),
        AGE,
        Column(
            "Containers", "string", "Names of each container in the template.", _rs_containers, priority=1
        ),
        Column(
            "Images", "string", "Images referenced by each container in the template.", _rs_images, priority=1
        ),
        Column("Selector", "string", "Label selector for the pods.", _rs_selector, priority=1),
    ),
)
