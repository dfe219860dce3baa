"""The resource types of the ensemble stage: ConfigMaps, Secrets, Services, PersistentVolumeClaims,
Deployments and NetworkPolicies.

What the apiserver does for them that the apply path can see is modelled here, as in Kubernetes 1.36:

- Services get a ClusterIP from the service network (``10.43.0.0/16``, K3s's default; ``.1`` is the
  ``kubernetes`` Service's and ``.10`` CoreDNS's), ``type`` ``ClusterIP``, ``sessionAffinity`` ``None``,
  ``ipFamilies`` ``[IPv4]``, ``ipFamilyPolicy`` ``SingleStack``, ``internalTrafficPolicy`` ``Cluster``, and
  each port's ``protocol`` ``TCP`` and ``targetPort`` (the port) when missing; the ClusterIP cannot change.
- PersistentVolumeClaims start ``Pending`` (``local-path`` binds on first consumer) and their spec is
  immutable, as for a claim that is not bound yet (a bound one may only grow its storage request).
- Deployments count spec changes in ``metadata.generation``, default ``replicas`` (1),
  ``revisionHistoryLimit`` (10), ``progressDeadlineSeconds`` (600) and the rolling-update strategy
  (25%/25%), refuse a selector that does not match the template's labels or that changes (immutable in
  apps/v1), and carry a ``status`` subresource. The deployment controller (ReplicaSets, Pods, status) is
  in ``controllers/deployments.py``.
- ConfigMaps, Secrets (``type`` ``Opaque`` by default and immutable, ``stringData`` folded into ``data``)
  and NetworkPolicies (``policyTypes`` defaulted from the rules) are stored as sent. Ingresses are served by
  ``controllers/ingress.py``.

Validation against the 1.36 schemas (``validation.py``) applies to all of them; the schema subsets are in
``data/schemas/v1.36`` (``schemas.KINDS``)."""

from __future__ import annotations

import base64
import ipaddress
from typing import Any

from .errors import invalid
from .extensions import Cluster, Controller
from .registry import Column, Obj, Registry, ResourceType
from .store import Store
from .tables import AGE, NAME

SERVICE_NETWORK = ipaddress.ip_network("10.43.0.0/16")


def _service_create(obj: Obj, store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    spec.setdefault("ipFamilies", ["IPv4"])
    spec.setdefault("ipFamilyPolicy", "SingleStack")
    spec.setdefault("internalTrafficPolicy", "Cluster")
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec.get("clusterIP") in (None, ""):
        taken = {s.get("spec", {}).get("clusterIP") for s in store.list(SERVICES)}
        # 10.43.0.1 is the kubernetes Service's and 10.43.0.10 CoreDNS's in K3s
        reserved = {str(SERVICE_NETWORK.network_address + 1), str(SERVICE_NETWORK.network_address + 10)}
        for address in SERVICE_NETWORK.hosts():
            if str(address) not in taken and str(address) not in reserved:
                spec["clusterIP"] = str(address)
                break
    spec["clusterIPs"] = [spec["clusterIP"]]


def _service_update(old: Obj, new: Obj, _store: Store) -> None:
    spec = new.setdefault("spec", {})
    before = old.get("spec", {})
    for key in ("type", "sessionAffinity", "ipFamilies", "ipFamilyPolicy", "internalTrafficPolicy"):
        if key in before:
            spec.setdefault(key, before[key])
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))
    if spec.get("clusterIP") in (None, ""):
        spec["clusterIP"] = before.get("clusterIP")
    if spec["clusterIP"] != before.get("clusterIP"):
        raise invalid(
            "Service",
            new["metadata"]["name"],
            [("spec.clusterIPs[0]", "Invalid value: []string{...}: may not change once set")],
        )
    spec["clusterIPs"] = [spec["clusterIP"]]


def _pvc_create(obj: Obj, _store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("volumeMode", "Filesystem")
    obj["status"] = {"phase": "Pending"}


def _pvc_update(old: Obj, new: Obj, _store: Store) -> None:
    before, after = dict(old.get("spec", {})), dict(new.get("spec", {}))
    after.setdefault("volumeMode", before.get("volumeMode", "Filesystem"))
    new["spec"] = after
    for spec in (before, after):
        spec.pop("volumeAttributesClassName", None)
    old_size = before.get("resources", {}).get("requests", {}).get("storage")
    new_size = after.get("resources", {}).get("requests", {}).get("storage")
    before.pop("resources", None)
    after_cmp = {k: v for k, v in after.items() if k != "resources"}
    if before != after_cmp:
        raise invalid(
            "PersistentVolumeClaim",
            new["metadata"]["name"],
            [
                (
                    "spec",
                    "Forbidden: spec is immutable after creation except resources.requests and "
                    "volumeAttributesClassName for bound claims",
                )
            ],
        )
    if old_size != new_size:
        raise invalid(
            "PersistentVolumeClaim",
            new["metadata"]["name"],
            [
                (
                    "spec",
                    "Forbidden: spec is immutable after creation except resources.requests for bound claims",
                )
            ],
        )
    new["status"] = old.get("status", {"phase": "Pending"})


def _deployment_defaults(obj: Obj) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    strategy = spec.setdefault("strategy", {"type": "RollingUpdate"})
    if strategy.get("type", "RollingUpdate") == "RollingUpdate":
        strategy["type"] = "RollingUpdate"
        strategy.setdefault("rollingUpdate", {"maxSurge": "25%", "maxUnavailable": "25%"})
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector or any(labels.get(k) != v for k, v in selector.items()):
        raise invalid(
            "Deployment",
            obj["metadata"]["name"],
            [
                (
                    "spec.template.metadata.labels",
                    f"Invalid value: {labels!r}: `selector` does not match template `labels`",
                )
            ],
            "apps",
        )


def _deployment_create(obj: Obj, _store: Store) -> None:
    _deployment_defaults(obj)
    obj["metadata"]["generation"] = 1
    obj["status"] = {}


def _deployment_update(old: Obj, new: Obj, _store: Store) -> None:
    _deployment_defaults(new)
    if new["spec"].get("selector") != old.get("spec", {}).get("selector"):
        raise invalid(
            "Deployment",
            new["metadata"]["name"],
            [("spec.selector", "Invalid value: field is immutable")],
            "apps",
        )


def _secret_create(obj: Obj, _store: Store) -> None:
    obj.setdefault("type", "Opaque")
    _fold_string_data(obj)


def _secret_update(old: Obj, new: Obj, _store: Store) -> None:
    new.setdefault("type", old.get("type", "Opaque"))
    if new["type"] != old.get("type", "Opaque"):
        raise invalid("Secret", new["metadata"]["name"], [("type", "Invalid value: field is immutable")])
    _fold_string_data(new)


def _fold_string_data(obj: Obj) -> None:
    string_data = obj.pop("stringData", None) or {}
    if string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()


def _policy_defaults(obj: Obj, *_rest: Any) -> None:
    spec = obj.setdefault("spec", {})
    if "policyTypes" not in spec:
        spec["policyTypes"] = ["Ingress", *(["Egress"] if "egress" in spec else [])]


def _policy_update(_old: Obj, new: Obj, _store: Store) -> None:
    _policy_defaults(new)


def _ports(obj: Obj) -> str:
    ports = obj.get("spec", {}).get("ports") or []
    return ",".join(f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports) or "<none>"


def _ready(obj: Obj) -> str:
    status = obj.get("status") or {}
    return f"{status.get('readyReplicas', 0)}/{obj.get('spec', {}).get('replicas', 1)}"


CONFIGMAPS = ResourceType(
    "",
    "v1",
    "ConfigMap",
    "configmaps",
    namespaced=True,
    short_names=("cm",),
    columns=(
        NAME,
        Column("Data", "string", "Number of data keys.", lambda o: len(o.get("data") or {})),
        AGE,
    ),
)
SECRETS = ResourceType(
    "",
    "v1",
    "Secret",
    "secrets",
    namespaced=True,
    on_create=_secret_create,
    on_update=_secret_update,
    columns=(
        NAME,
        Column("Type", "string", "The type of the secret.", lambda o: o.get("type", "Opaque")),
        Column("Data", "string", "Number of data keys.", lambda o: len(o.get("data") or {})),
        AGE,
    ),
)
SERVICES = ResourceType(
    "",
    "v1",
    "Service",
    "services",
    namespaced=True,
    short_names=("svc",),
    categories=("all",),
    subresources=("status",),
    on_create=_service_create,
    on_update=_service_update,
    merge_keys={"spec.ports": "port"},
    columns=(
        NAME,
        Column("Type", "string", "The type of service.", lambda o: o.get("spec", {}).get("type", "")),
        Column("Cluster-IP", "string", "The cluster IP.", lambda o: o.get("spec", {}).get("clusterIP", "")),
        Column("External-IP", "string", "External addresses.", lambda _o: "<none>"),
        Column("Port(s)", "string", "The ports of the service.", _ports),
        AGE,
    ),
)
PERSISTENTVOLUMECLAIMS = ResourceType(
    "",
    "v1",
    "PersistentVolumeClaim",
    "persistentvolumeclaims",
    namespaced=True,
    short_names=("pvc",),
    subresources=("status",),
    on_create=_pvc_create,
    on_update=_pvc_update,
    columns=(
        NAME,
        Column("Status", "string", "The phase of the claim.", lambda o: o.get("status", {}).get("phase", "")),
        Column("Volume", "string", "The bound volume.", lambda o: o.get("spec", {}).get("volumeName", "")),
        Column(
            "Capacity",
            "string",
            "The requested size.",
            lambda o: o.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", ""),
        ),
        Column("Access Modes", "string", "", lambda o: ",".join(o.get("spec", {}).get("accessModes") or [])),
        Column("StorageClass", "string", "", lambda o: o.get("spec", {}).get("storageClassName", "")),
        AGE,
    ),
)
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "Deployment",
    "deployments",
    namespaced=True,
    short_names=("deploy",),
    categories=("all",),
    subresources=("status",),
    uses_generation=True,
    on_create=_deployment_create,
    on_update=_deployment_update,
    merge_keys={
        "spec.template.spec.containers": "name",
        "spec.template.spec.initContainers": "name",
        "spec.template.spec.volumes": "name",
        "status.conditions": "type",
    },
    columns=(
        NAME,
        Column("Ready", "string", "Ready replicas of the wanted ones.", _ready),
        Column(
            "Up-to-date",
            "integer",
            "Replicas with the current template.",
            lambda o: (o.get("status") or {}).get("updatedReplicas", 0),
        ),
        Column(
            "Available",
            "integer",
            "Available replicas.",
            lambda o: (o.get("status") or {}).get("availableReplicas", 0),
        ),
        AGE,
    ),
)
NETWORKPOLICIES = ResourceType(
    "networking.k8s.io",
    "v1",
    "NetworkPolicy",
    "networkpolicies",
    namespaced=True,
    short_names=("netpol",),
    on_create=_policy_defaults,
    on_update=_policy_update,
    columns=(
        NAME,
        Column(
            "Pod-Selector",
            "string",
            "The pods the policy selects.",
            lambda o: (
                ",".join(
                    f"{k}={v}"
                    for k, v in (
                        (o.get("spec", {}).get("podSelector") or {}).get("matchLabels") or {}
                    ).items()
                )
                or "<none>"
            ),
        ),
        AGE,
    ),
)


def register(registry: Registry) -> None:
    for rtype in (CONFIGMAPS, SECRETS, SERVICES, PERSISTENTVOLUMECLAIMS, DEPLOYMENTS, NETWORKPOLICIES):
        registry.register(rtype)


def extension(cluster: Cluster) -> list[Controller]:
    """The ensemble stage's API: the workload types above (their controllers are in ``controllers/``)."""
    register(cluster.registry)
    return []
