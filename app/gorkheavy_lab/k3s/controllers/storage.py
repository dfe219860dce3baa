"""Persistent volumes as a K3s server has them: the ``local-path`` StorageClass K3s deploys (default class,
provisioner ``rancher.io/local-path``, ``WaitForFirstConsumer``, reclaim ``Delete``), the provisioner's
PersistentVolumes, and the parts of kube-controller-manager's PV controller and kube-scheduler's
VolumeBinding plugin that bind them.

- The DefaultStorageClass admission plugin gives a claim without ``storageClassName`` the default class; the
  StorageObjectInUseProtection plugin adds ``kubernetes.io/pvc-protection`` (claims) and
  ``kubernetes.io/pv-protection`` (volumes); the protection controllers remove them once no pod uses the
  claim / no claim is bound to the volume.
- A ``WaitForFirstConsumer`` claim stays Pending (event ``WaitForFirstConsumer``) until the scheduler places
  the first pod that uses it: the scheduler writes ``volume.kubernetes.io/selected-node`` on the claim, the PV
  controller adds the ``volume.kubernetes.io/storage-provisioner`` annotations (event
  ``ExternalProvisioning``), and the provisioner creates ``pvc-<claim uid>`` with hostPath
  ``/var/lib/rancher/k3s/storage/pvc-<uid>_<namespace>_<claim>`` (``DirectoryOrCreate``) and a required node
  affinity on ``kubernetes.io/hostname`` of that node (events ``Provisioning``, ``ProvisioningSucceeded``);
  the PV controller binds both ways (``spec.volumeName``, ``claimRef``, phase ``Bound``,
  ``pv.kubernetes.io/bind-completed``/``bound-by-controller``). Pods of a bound claim then only fit that node
  ("node(s) had volume node affinity conflict").
- A deleted claim releases its volume, which the provisioner deletes (reclaim ``Delete``).

Not modelled: the provisioner's helper pods (``helper-pod-create-pvc-*``, which make and remove the directory
on the node; here the kubelet makes the hostPath directory, ``DirectoryOrCreate``, and nothing removes it),
the ``local-path-config`` ConfigMap's per-node paths, volume expansion, ``Immediate`` binding of pre-made
volumes to claims (no static provisioning)."""

from __future__ import annotations

from ..kube.registry import Column, Obj, Registry, ResourceType
from ..kube.store import Store
from ..kube.tables import AGE, NAME
from .common import Context
from .scheduling import Node, Pod, Status, node_affinity_ok

PROVISIONER = "rancher.io/local-path"
STORAGE_DIR = "/var/lib/rancher/k3s/storage"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
PV_COMPONENT = "persistentvolume-controller"
PROVISIONER_COMPONENT = "rancher.io/local-path_local-path-provisioner"

LOCAL_PATH: Obj = {
    "apiVersion": "storage.k8s.io/v1",
    "kind": "StorageClass",
    "metadata": {"name": "local-path", "annotations": {DEFAULT_CLASS: "true"}},
    "provisioner": PROVISIONER,
    "reclaimPolicy": "Delete",
    "volumeBindingMode": "WaitForFirstConsumer",
}


def _class_create(obj: Obj, _store: Store) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


def _pv_create(obj: Obj, _store: Store) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("persistentVolumeReclaimPolicy", "Retain")
    spec.setdefault("volumeMode", "Filesystem")
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if PV_PROTECTION not in finalizers:
        finalizers.append(PV_PROTECTION)
    obj["status"] = {"phase": "Bound" if spec.get("claimRef") else "Available"}


def _claim_of(pv: Obj) -> str:
    ref = (pv.get("spec") or {}).get("claimRef") or {}
    return f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""


def _is_default(sc: Obj) -> str:
    return " (default)" if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true" else ""


STORAGECLASSES = ResourceType(
    "storage.k8s.io",
    "v1",
    "StorageClass",
    "storageclasses",
    namespaced=False,
    short_names=("sc",),
    on_create=_class_create,
    columns=(
        Column(
            "Name", "string", "Name of the storage class.", lambda o: o["metadata"]["name"] + _is_default(o)
        ),
        Column("Provisioner", "string", "The provisioner.", lambda o: o.get("provisioner", "")),
        Column("ReclaimPolicy", "string", "", lambda o: o.get("reclaimPolicy", "Delete")),
        Column("VolumeBindingMode", "string", "", lambda o: o.get("volumeBindingMode", "Immediate")),
        Column(
            "AllowVolumeExpansion", "string", "", lambda o: str(bool(o.get("allowVolumeExpansion"))).lower()
        ),
        AGE,
    ),
)
PERSISTENTVOLUMES = ResourceType(
    "",
    "v1",
    "PersistentVolume",
    "persistentvolumes",
    namespaced=False,
    short_names=("pv",),
    subresources=("status",),
    on_create=_pv_create,
    columns=(
        NAME,
        Column(
            "Capacity", "string", "", lambda o: (o.get("spec") or {}).get("capacity", {}).get("storage", "")
        ),
        Column(
            "Access Modes",
            "string",
            "",
            lambda o: ",".join(
                {
                    "ReadWriteOnce": "RWO",
                    "ReadOnlyMany": "ROX",
                    "ReadWriteMany": "RWX",
                    "ReadWriteOncePod": "RWOP",
                }.get(m, m)
                for m in (o.get("spec") or {}).get("accessModes") or []
            ),
        ),
        Column(
            "Reclaim Policy",
            "string",
            "",
            lambda o: (o.get("spec") or {}).get("persistentVolumeReclaimPolicy", ""),
        ),
        Column("Status", "string", "", lambda o: (o.get("status") or {}).get("phase", "")),
        Column("Claim", "string", "", _claim_of),
        Column("StorageClass", "string", "", lambda o: (o.get("spec") or {}).get("storageClassName", "")),
        Column("VolumeAttributesClass", "string", "", lambda _o: "<unset>"),
        Column("Reason", "string", "", lambda o: (o.get("status") or {}).get("reason", "")),
        AGE,
    ),
)


def register(registry: Registry) -> None:
    for rtype in (STORAGECLASSES, PERSISTENTVOLUMES):
        if registry.get(rtype.group, rtype.version, rtype.plural) is None:
            registry.register(rtype)


def seed(store: Store) -> None:
    if store.get(STORAGECLASSES, "", "local-path") is None:
        store.create(STORAGECLASSES, dict(LOCAL_PATH))


def claim_admission(obj: Obj, store: Store) -> None:
    """DefaultStorageClass and StorageObjectInUseProtection for a new claim."""
    spec = obj.setdefault("spec", {})
    if spec.get("storageClassName") is None:
        for sc in store.list(STORAGECLASSES):
            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true":
                spec["storageClassName"] = sc["metadata"]["name"]
                break
    finalizers = obj["metadata"].setdefault("finalizers", [])
    if PVC_PROTECTION not in finalizers:
        finalizers.append(PVC_PROTECTION)


def _claims(spec: Obj) -> list[str]:
    return [
        v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes") or []
        if v.get("persistentVolumeClaim")
    ]


class Volumes:
    """The PV controller, the local-path provisioner and the scheduler's VolumeBinding plugin."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.claims = ctx.rtype("", "v1", "persistentvolumeclaims")
        self.pods = ctx.rtype("", "v1", "pods")

    # --- the scheduler's side -------------------------------------------------------------------------
    def prefilter(self, pod: Pod) -> str | None:
        store = self.ctx.store
        for name in _claims(pod.spec):
            claim = store.get(self.claims, pod.namespace, name)
            if claim is None:
                return f'persistentvolumeclaim "{name}" not found'
            if claim["metadata"].get("deletionTimestamp"):
                return f'persistentvolumeclaim "{name}" is being deleted'
            if (claim.get("status") or {}).get("phase") == "Bound":
                continue
            class_name = (claim.get("spec") or {}).get("storageClassName") or ""
            sc = store.get(STORAGECLASSES, "", class_name) if class_name else None
            if sc is None:
                return (
                    f'storageclass.storage.k8s.io "{class_name}" not found'
                    if class_name
                    else "pod has unbound immediate PersistentVolumeClaims"
                )
            if sc.get("volumeBindingMode", "Immediate") != "WaitForFirstConsumer":
                return "pod has unbound immediate PersistentVolumeClaims"
        return None

    def filter(self, pod: Pod, node: Node) -> Status | None:
        store = self.ctx.store
        for name in _claims(pod.spec):
            claim = store.get(self.claims, pod.namespace, name)
            volume = (claim or {}).get("spec", {}).get("volumeName")
            if not volume:
                continue
            pv = store.get(PERSISTENTVOLUMES, "", volume)
            if pv is None:
                return Status("node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)")
            required = ((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required")
            if required and not node_affinity_ok(
                {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": required}}},
                node,
            ):
                return Status("node(s) had volume node affinity conflict")
        return None

    def unbound(self, pod: Pod) -> list[Obj]:
        out = []
        for name in _claims(pod.spec):
            claim = self.ctx.store.get(self.claims, pod.namespace, name)
            if claim is not None and not (claim.get("spec") or {}).get("volumeName"):
                out.append(claim)
        return out

    def select_node(self, claim: Obj, node: str) -> None:
        """The scheduler's PreBind for a WaitForFirstConsumer claim."""
        annotations = claim["metadata"].setdefault("annotations", {})
        if annotations.get(SELECTED_NODE) != node:
            annotations[SELECTED_NODE] = node
            self.ctx.store.replace(self.claims, claim)

    # --- the controllers ------------------------------------------------------------------------------
    def sync(self) -> None:
        store = self.ctx.store
        pods = store.list(self.pods)
        used = {
            (p["metadata"]["namespace"], name)
            for p in pods
            if (p.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}
            for name in _claims(p.get("spec") or {})
        }
        for claim in store.list(self.claims):
            meta = claim["metadata"]
            if meta.get("deletionTimestamp"):
                if (meta["namespace"], meta["name"]) not in used and PVC_PROTECTION in (
                    meta.get("finalizers") or []
                ):
                    meta["finalizers"] = [f for f in meta["finalizers"] if f != PVC_PROTECTION]
                    if not meta["finalizers"]:
                        del meta["finalizers"]
                    store.replace(self.claims, claim)
                    if not meta.get("finalizers"):
                        store.delete(self.claims, meta["namespace"], meta["name"])
                continue
            if (claim.get("status") or {}).get("phase") == "Bound":
                continue
            self._sync_unbound(claim)
        claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in store.list(self.claims)}
        for pv in store.list(PERSISTENTVOLUMES):
            self._sync_volume(pv, claims)

    def _sync_unbound(self, claim: Obj) -> None:
        store = self.ctx.store
        meta = claim["metadata"]
        spec = claim.get("spec") or {}
        sc = store.get(STORAGECLASSES, "", spec.get("storageClassName") or "")
        if sc is None or sc.get("provisioner") != PROVISIONER:
            return
        annotations = meta.setdefault("annotations", {})
        selected = annotations.get(SELECTED_NODE)
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not selected:
            if not self._has_event(claim, "WaitForFirstConsumer"):
                self.ctx.event(
                    claim,
                    "PersistentVolumeClaim",
                    "WaitForFirstConsumer",
                    "waiting for first consumer to be created before binding",
                    PV_COMPONENT,
                )
            return
        if annotations.get(STORAGE_PROVISIONER) != PROVISIONER:
            annotations[STORAGE_PROVISIONER] = PROVISIONER
            annotations[BETA_STORAGE_PROVISIONER] = PROVISIONER
            claim = store.replace(self.claims, claim)
            self.ctx.event(
                claim,
                "PersistentVolumeClaim",
                "ExternalProvisioning",
                "Waiting for a volume to be created either by the external provisioner "
                f"'{PROVISIONER}' or manually by the system administrator. If volume creation is delayed, "
                "please verify that the provisioner is running and correctly registered.",
                PV_COMPONENT,
            )
        name = f"pvc-{meta['uid']}"
        pv = store.get(PERSISTENTVOLUMES, "", name)
        if pv is None:
            who = f"{meta['namespace']}/{meta['name']}"
            self.ctx.event(
                claim,
                "PersistentVolumeClaim",
                "Provisioning",
                f'External provisioner is provisioning volume for claim "{who}"',
                PROVISIONER_COMPONENT,
            )
            node = selected or ""
            pv = self.ctx.create(
                PERSISTENTVOLUMES,
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {
                        "name": name,
                        "annotations": {
                            "local.path.provisioner/selected-node": node,
                            "pv.kubernetes.io/provisioned-by": PROVISIONER,
                        },
                    },
                    "spec": {
                        "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                        "capacity": {
                            "storage": ((spec.get("resources") or {}).get("requests") or {}).get(
                                "storage", "1Gi"
                            )
                        },
                        "claimRef": {
                            "apiVersion": "v1",
                            "kind": "PersistentVolumeClaim",
                            "name": meta["name"],
                            "namespace": meta["namespace"],
                            "uid": meta["uid"],
                            "resourceVersion": meta["resourceVersion"],
                        },
                        "hostPath": {
                            "path": f"{STORAGE_DIR}/{name}_{meta['namespace']}_{meta['name']}",
                            "type": "DirectoryOrCreate",
                        },
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {
                                                "key": "kubernetes.io/hostname",
                                                "operator": "In",
                                                "values": [node],
                                            }
                                        ]
                                    }
                                ]
                            }
                        },
                        "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy", "Delete"),
                        "storageClassName": sc["metadata"]["name"],
                        "volumeMode": spec.get("volumeMode", "Filesystem"),
                    },
                },
            )
            self.ctx.event(
                claim,
                "PersistentVolumeClaim",
                "ProvisioningSucceeded",
                f"Successfully provisioned volume {name}",
                PROVISIONER_COMPONENT,
            )
        # the PV controller binds the claim to the volume that names it
        fresh = store.get(self.claims, meta["namespace"], meta["name"])
        if fresh is None:
            return
        fresh["spec"]["volumeName"] = name
        fresh["metadata"].setdefault("annotations", {}).update(
            {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}
        )
        fresh["status"] = {
            "phase": "Bound",
            "accessModes": pv["spec"]["accessModes"],
            "capacity": dict(pv["spec"]["capacity"]),
        }
        store.replace(self.claims, fresh)

    def _has_event(self, obj: Obj, reason: str) -> bool:
        events = self.ctx.rtype("", "v1", "events")
        uid = obj["metadata"].get("uid")
        return any(
            (e.get("involvedObject") or {}).get("uid") == uid and e.get("reason") == reason
            for e in self.ctx.store.list(events, obj["metadata"].get("namespace"))
        )

    def _sync_volume(self, pv: Obj, claims: dict[tuple[str, str], Obj]) -> None:
        store = self.ctx.store
        meta = pv["metadata"]
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        claim = claims.get((ref.get("namespace", ""), ref.get("name", ""))) if ref else None
        bound = claim is not None and claim["metadata"].get("uid") == ref.get("uid")
        if meta.get("deletionTimestamp"):
            if not bound and PV_PROTECTION in (meta.get("finalizers") or []):
                meta["finalizers"] = [f for f in meta["finalizers"] if f != PV_PROTECTION]
                if not meta["finalizers"]:
                    del meta["finalizers"]
                    store.delete(PERSISTENTVOLUMES, "", meta["name"])
                else:
                    store.replace(PERSISTENTVOLUMES, pv)
            return
        phase = (pv.get("status") or {}).get("phase")
        if bound and phase != "Bound":
            pv["status"] = {"phase": "Bound"}
            store.replace(PERSISTENTVOLUMES, pv)
        elif ref and not bound:
            if (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete" and (
                meta.get("annotations") or {}
            ).get("pv.kubernetes.io/provisioned-by") == PROVISIONER:
                # the provisioner deletes a released volume it made (its data directory is not removed here)
                store.delete(PERSISTENTVOLUMES, "", meta["name"])
            elif phase != "Released":
                pv["status"] = {"phase": "Released"}
                store.replace(PERSISTENTVOLUMES, pv)
