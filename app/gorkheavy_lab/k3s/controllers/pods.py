"""What the apiserver adds to Pods: the defaults of a created Pod (v1 defaulting and the admission plugins a
K3s server runs: DefaultTolerationSeconds, Priority), the ``pods/binding`` subresource the scheduler binds
through, and the columns of ``kubectl get pods`` (STATUS as kubectl's printer derives it).

An update may change only what the apiserver lets a Pod's spec change (the containers' images,
``activeDeadlineSeconds``, added tolerations, removed scheduling gates); anything else is 422 with the
apiserver's "pod updates may not change fields other than ..." (without its diff of the specs).

Not modelled: the ServiceAccount admission plugin (no ServiceAccount objects are served: no
``kube-api-access-*`` projected volume is added and ``serviceAccountName`` is only defaulted), ephemeral
containers, resize."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..kube.errors import ApiError, bad_request, invalid, not_found
from ..kube.registry import Column, Obj, ResourceType
from ..kube.store import Store
from ..kube.tables import AGE, NAME
from .common import condition, stamp

NOT_READY_TOLERATIONS = (
    {
        "key": "node.kubernetes.io/not-ready",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
    {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 300,
    },
)
PROBE_DEFAULTS = {"timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}


def _container_defaults(container: Obj) -> None:
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    image = str(container.get("image", ""))
    tag = image.rsplit("/", 1)[-1]
    latest = "@" not in image and (":" not in tag or tag.endswith(":latest"))
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if isinstance(probe, dict):
            for key, value in PROBE_DEFAULTS.items():
                probe.setdefault(key, value)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("scheme", "HTTP")
                probe["httpGet"].setdefault("path", "/")


def qos_class(spec: Obj) -> str:
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
    requests_any = limits_all = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        if req or lim:
            requests_any = True
        for name in ("cpu", "memory"):
            if name not in lim or str(req.get(name, lim.get(name))) != str(lim.get(name)):
                guaranteed = False
        limits_all = limits_all or bool(lim)
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed and limits_all else "Burstable"


def pod_defaults(obj: Obj, _store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("serviceAccountName", spec.get("serviceAccount") or "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        _container_defaults(container)
    tolerations = spec.setdefault("tolerations", [])
    for default in NOT_READY_TOLERATIONS:
        if not any(
            t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute") for t in tolerations
        ):
            tolerations.append(dict(default))
    status: Obj = {"phase": "Pending", "qosClass": qos_class(spec)}
    if spec.get("nodeName"):
        status["conditions"] = [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp()}
        ]
    obj["status"] = {**status, **(obj.get("status") or {})}


UPDATE_FORBIDDEN = (
    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to "
    "existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
    "previously negative)"
)


def _mutable_view(spec: Obj) -> Obj:
    view = json.loads(json.dumps(spec))
    for key in ("containers", "initContainers"):
        for container in view.get(key) or []:
            container.pop("image", None)
    for key in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        view.pop(key, None)
    return dict(view)


def pod_update(old: Obj, new: Obj, _store: Store) -> None:
    """ValidatePodUpdate's gist: the spec is immutable but for images, the deadline, added tolerations and
    removed scheduling gates."""
    before, after = old.get("spec") or {}, new.get("spec") or {}
    if before == after:
        return
    tolerations = after.get("tolerations") or []
    kept = all(t in tolerations for t in before.get("tolerations") or [])
    gates = after.get("schedulingGates") or []
    fewer_gates = all(g in (before.get("schedulingGates") or []) for g in gates)
    if _mutable_view(before) != _mutable_view(after) or not kept or not fewer_gates:
        raise invalid("Pod", new["metadata"]["name"], [("spec", UPDATE_FORBIDDEN)])


def bind(
    store: Store, pods: ResourceType, pod: Obj, node: str, annotations: dict[str, str] | None = None
) -> Obj:
    """What the apiserver's binding storage does: set spec.nodeName once, and the PodScheduled condition."""
    meta = pod["metadata"]
    if meta.get("deletionTimestamp"):
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on pods/binding "{meta["name"]}": pod {meta["name"]} is being '
            "deleted, cannot be assigned to a host",
        )
    current = (pod.get("spec") or {}).get("nodeName")
    if current:
        raise ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on pods/binding "{meta["name"]}": pod {meta["name"]} is already '
            f'assigned to node "{current}"',
            {"name": meta["name"], "kind": "pods/binding"},
        )
    pod.setdefault("spec", {})["nodeName"] = node
    if annotations:
        meta.setdefault("annotations", {}).update(annotations)
    status = pod.setdefault("status", {})
    conditions = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
    conditions.insert(
        0, {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp()}
    )
    status["conditions"] = conditions
    return store.replace(pods, pod)


def binding_handler(store: Store) -> Any:
    async def handle(request: web.Request, rtype: ResourceType, namespace: str, name: str) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw.decode() or "null")
        except ValueError as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc
        if not isinstance(body, dict) or body.get("kind", "Binding") != "Binding":
            raise bad_request("the body of the request must be a Binding")
        target = body.get("target") or {}
        if not target.get("name"):
            raise ApiError(
                422,
                "Invalid",
                f'Binding.core "{name}" is invalid: target.name: Required value',
                {"name": name, "kind": "Binding"},
            )
        if target.get("kind", "Node") != "Node":
            raise ApiError(
                422,
                "Invalid",
                f'Binding.core "{name}" is invalid: target.kind: Unsupported value: "{target.get("kind")}"',
            )
        pod = store.get(rtype, namespace, name)
        if pod is None:
            raise not_found("pods", name)
        bind(store, rtype, pod, target["name"], (body.get("metadata") or {}).get("annotations"))
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201},
            status=201,
        )

    return handle


def pod_phase_column(pod: Obj) -> str:
    """The STATUS column as kubectl's printPod computes it."""
    status = pod.get("status") or {}
    reason = status.get("reason") or status.get("phase") or "Pending"
    initializing = False
    inits = status.get("initContainerStatuses") or []
    total_inits = len((pod.get("spec") or {}).get("initContainers") or [])
    for i, container in enumerate(inits):
        state = container.get("state") or {}
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if terminated and terminated.get("exitCode") == 0:
            continue
        if terminated:
            if terminated.get("reason"):
                reason = f"Init:{terminated['reason']}"
            elif terminated.get("signal"):
                reason = f"Init:Signal:{terminated['signal']}"
            else:
                reason = f"Init:ExitCode:{terminated.get('exitCode')}"
        elif waiting and waiting.get("reason") and waiting["reason"] != "PodInitializing":
            reason = f"Init:{waiting['reason']}"
        else:
            reason = f"Init:{i}/{total_inits}"
        initializing = True
        break
    if not initializing:
        has_running = False
        for container in reversed(status.get("containerStatuses") or []):
            state = container.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                term = state["terminated"]
                reason = (
                    f"Signal:{term['signal']}" if term.get("signal") else f"ExitCode:{term.get('exitCode')}"
                )
            elif state.get("running") and container.get("ready"):
                has_running = True
        if reason == "Completed" and has_running:
            ready = condition(pod, "Ready")
            reason = "Running" if ready and ready.get("status") == "True" else "NotReady"
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return str(reason)


def _ready_column(pod: Obj) -> str:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    total = len((pod.get("spec") or {}).get("containers") or [])
    return f"{sum(1 for c in statuses if c.get('ready'))}/{total}"


def _restarts(pod: Obj) -> int:
    return sum(
        int(c.get("restartCount", 0)) for c in (pod.get("status") or {}).get("containerStatuses") or []
    )


POD_COLUMNS = (
    NAME,
    Column(
        "Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", _ready_column
    ),
    Column("Status", "string", "The aggregate status of the containers in this pod.", pod_phase_column),
    Column(
        "Restarts", "string", "The number of times the containers in this pod have been restarted.", _restarts
    ),
    AGE,
    Column(
        "IP",
        "string",
        "IP address allocated to the pod.",
        lambda p: (p.get("status") or {}).get("podIP") or "<none>",
        priority=1,
    ),
    Column(
        "Node",
        "string",
        "Name of the Node this pod runs on.",
        lambda p: (p.get("spec") or {}).get("nodeName") or "<none>",
        priority=1,
    ),
    Column(
        "Nominated Node",
        "string",
        "Name of the node the pod is nominated to by the scheduler.",
        lambda p: (p.get("status") or {}).get("nominatedNodeName") or "<none>",
        priority=1,
    ),
    Column(
        "Readiness Gates",
        "string",
        "The readiness gates of the pod.",
        lambda p: (
            ",".join(g.get("conditionType", "") for g in (p.get("spec") or {}).get("readinessGates") or [])
            or "<none>"
        ),
        priority=1,
    ),
)
