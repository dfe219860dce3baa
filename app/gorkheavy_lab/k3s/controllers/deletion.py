"""Deletion as the apiserver's registry and kube-controller-manager's garbage collector do it.

The apiserver (``Deleter.delete``, hooked into the API's DELETE routes):
- DeleteOptions from the body or the query: ``gracePeriodSeconds``, ``propagationPolicy`` (``Background``,
  the default, ``Foreground``, ``Orphan``; the old ``orphanDependents``), ``dryRun``.
- A Pod on a node is deleted gracefully: ``deletionTimestamp`` (now + the grace period, by default its
  ``terminationGracePeriodSeconds``, 30) and ``deletionGracePeriodSeconds`` are set and the Pod stays
  (Terminating) until its kubelet has stopped it and deletes it with grace period 0; a second delete may only
  shorten the period. A Pod that is not scheduled, or has finished, goes at once. So a Pod on a node whose
  kubelet is gone stays Terminating, as on a cluster.
- An object with finalizers (``foregroundDeletion`` for Foreground, ``orphan`` for Orphan, or any other) gets
  ``deletionTimestamp`` and stays until they are removed; the update that removes the last one deletes it.

The garbage collector (``collect``, one pass): an object whose every owner (by uid) is gone is deleted
(Background); an owner being deleted in the foreground has its dependents deleted first, then loses the
``foregroundDeletion`` finalizer; ``orphan`` removes the owner's references from its dependents first."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from ..kube.errors import bad_request
from ..kube.registry import Obj, ResourceType
from .common import Context, now, stamp

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"


class Deleter:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def delete(self, rtype: ResourceType, obj: Obj, options: Obj) -> Obj:
        store = self.ctx.store
        meta = obj["metadata"]
        dry = "All" in (options.get("dryRun") or [])
        policy = options.get("propagationPolicy")
        if policy is None and options.get("orphanDependents") is not None:
            policy = "Orphan" if options["orphanDependents"] else "Background"
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise bad_request(
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}"'
            )
        grace = self._grace(rtype, obj, options)
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        elif policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        if dry:
            return obj
        if meta.get("deletionTimestamp"):
            # already being deleted: only a shorter grace period (or the kubelet's final 0) changes anything
            before = int(meta.get("deletionGracePeriodSeconds") or 0)
            if grace >= before and finalizers == list(meta.get("finalizers") or []):
                return obj
            if grace < before:
                meta["deletionGracePeriodSeconds"] = grace
                meta["deletionTimestamp"] = stamp(now() + dt.timedelta(seconds=grace))
        if grace > 0 or finalizers:
            meta.setdefault("deletionTimestamp", stamp(now() + dt.timedelta(seconds=grace)))
            meta.setdefault("deletionGracePeriodSeconds", grace)
            if finalizers:
                meta["finalizers"] = finalizers
            if grace == 0:
                meta["deletionGracePeriodSeconds"] = 0
            return store.replace(rtype, obj)
        return self.remove(rtype, obj)

    def remove(self, rtype: ResourceType, obj: Obj) -> Obj:
        if rtype.on_delete is not None:
            rtype.on_delete(obj, self.ctx.store)
        meta = obj["metadata"]
        return self.ctx.store.delete(rtype, meta.get("namespace", ""), meta["name"]) or obj

    def _grace(self, rtype: ResourceType, obj: Obj, options: Obj) -> int:
        if (rtype.group, rtype.plural) != ("", "pods"):
            return 0
        spec = obj.get("spec") or {}
        if not spec.get("nodeName") or (obj.get("status") or {}).get("phase") in {"Succeeded", "Failed"}:
            return 0
        value: Any = options.get("gracePeriodSeconds")
        if value is None:
            value = spec.get("terminationGracePeriodSeconds", 30)
        grace = int(value)
        # a negative period means the default; 0 deletes at once (the kubelet's last word, or --force)
        return max(grace, 0) if grace >= 0 else int(spec.get("terminationGracePeriodSeconds", 30))

    def written(self, rtype: ResourceType, obj: Obj) -> None:
        """After an update: the last finalizer gone from an object being deleted, with no grace period left,
        deletes it."""
        meta = obj["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
        ):
            self.remove(rtype, obj)

    # --- the garbage collector ------------------------------------------------------------------------
    def collect(self) -> None:
        store = self.ctx.store
        types = {rtype.key: rtype for rtype in self.ctx.registry.all()}
        index: dict[str, tuple[ResourceType, Obj]] = {}
        typed: list[tuple[ResourceType, Obj]] = []
        # read without copying: only objects that have owners or are being deleted are worked on (copied)
        for (group, plural, _ns, _name), raw in store.items():
            rtype = types.get((group, plural))
            if rtype is None:
                continue
            meta = raw.get("metadata") or {}
            index[meta.get("uid", "")] = (rtype, raw)
            if meta.get("ownerReferences") or meta.get("deletionTimestamp"):
                typed.append((rtype, copy.deepcopy(raw)))
        dependents: dict[str, list[tuple[ResourceType, Obj]]] = {}
        for rtype, obj in typed:
            for ref in obj["metadata"].get("ownerReferences") or []:
                dependents.setdefault(ref.get("uid", ""), []).append((rtype, obj))
        for rtype, obj in typed:
            meta = obj["metadata"]
            refs = meta.get("ownerReferences") or []
            if refs and not meta.get("deletionTimestamp"):
                owners = [index.get(ref.get("uid", "")) for ref in refs]
                if all(o is None for o in owners):
                    self.delete(rtype, obj, {"propagationPolicy": "Background"})
                    continue
                foreground = any(
                    o is not None and FOREGROUND in (o[1]["metadata"].get("finalizers") or []) for o in owners
                )
                if foreground:
                    self.delete(rtype, obj, {"propagationPolicy": "Foreground"})
        for rtype, obj in typed:
            meta = obj["metadata"]
            finalizers = list(meta.get("finalizers") or [])
            if not meta.get("deletionTimestamp"):
                continue
            uid = meta.get("uid", "")
            current = store.get(rtype, meta.get("namespace", ""), meta["name"])
            if current is None:
                continue
            if ORPHAN in finalizers:
                for drtype, dep in dependents.get(uid, []):
                    fresh = store.get(drtype, dep["metadata"].get("namespace", ""), dep["metadata"]["name"])
                    if fresh is not None:
                        fresh["metadata"]["ownerReferences"] = [
                            r for r in fresh["metadata"].get("ownerReferences") or [] if r.get("uid") != uid
                        ] or None
                        if fresh["metadata"]["ownerReferences"] is None:
                            del fresh["metadata"]["ownerReferences"]
                        store.replace(drtype, fresh)
                finalizers.remove(ORPHAN)
            if FOREGROUND in finalizers:
                blocking = [
                    dep
                    for drtype, dep in dependents.get(uid, [])
                    if store.get(drtype, dep["metadata"].get("namespace", ""), dep["metadata"]["name"])
                    is not None
                    and any(
                        r.get("uid") == uid and r.get("blockOwnerDeletion")
                        for r in dep["metadata"].get("ownerReferences") or []
                    )
                ]
                if not blocking:
                    finalizers.remove(FOREGROUND)
            if finalizers != list(meta.get("finalizers") or []):
                current["metadata"]["finalizers"] = finalizers
                if not finalizers:
                    del current["metadata"]["finalizers"]
                current = store.replace(rtype, current)
            self.written(rtype, current)
