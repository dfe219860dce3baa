"""What every controller here shares: creating objects as the apiserver does (generateName, defaults),
owner references, conditions, time stamps, and recording Events as client-go's recorder does (one Event per
object, reason and message, its ``count`` raised when it repeats)."""

from __future__ import annotations

import copy
import datetime as dt
import secrets
import time
from dataclasses import dataclass
from typing import Any

from ..kube.registry import Obj, Registry, ResourceType
from ..kube.store import Store

# k8s.io/apimachinery/pkg/util/rand: the alphabet of generated name suffixes and of SafeEncodeString
ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
MAX_GENERATED_NAME = 63 - 5  # names.SimpleNameGenerator keeps the base under 58 characters


def random_suffix(length: int = 5) -> str:
    return "".join(secrets.choice(ALPHANUMS) for _ in range(length))


def safe_encode(text: str) -> str:
    return "".join(ALPHANUMS[ord(c) % len(ALPHANUMS)] for c in text)


def fnv32a(data: bytes) -> int:
    value = 0x811C9DC5
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(when: dt.datetime | None = None) -> str:
    return (when or now()).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: Obj, rtype: ResourceType) -> Obj:
    return {
        "apiVersion": rtype.api_version,
        "kind": rtype.kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_of(obj)
    return ref is not None and ref.get("uid") == owner["metadata"].get("uid")


def condition(obj: Obj, kind: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return dict(cond)
    return None


def pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def pod_available(pod: Obj, min_ready_seconds: int, at: dt.datetime | None = None) -> bool:
    """Ready for at least minReadySeconds (podutil.IsPodAvailable)."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = parse_time((condition(pod, "Ready") or {}).get("lastTransitionTime"))
    return since is not None and since + dt.timedelta(seconds=min_ready_seconds) <= (at or now())


def terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in {"Succeeded", "Failed"}


def active(pod: Obj) -> bool:
    """controller.IsPodActive: not finished and not being deleted."""
    return not terminal(pod) and not pod["metadata"].get("deletionTimestamp")


@dataclass
class Context:
    """What a controller works with: the types, the store, the log, and how to create objects."""

    registry: Registry
    store: Store
    log: Any

    def rtype(self, group: str, version: str, plural: str) -> ResourceType:
        rtype = self.registry.get(group, version, plural)
        if rtype is None:
            msg = f"{plural}.{group or 'core'}/{version} is not registered"
            raise KeyError(msg)
        return rtype

    def create(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Create as a client through the API would: generateName, the type's defaults and admission."""
        obj = copy.deepcopy(obj)
        obj.setdefault("apiVersion", rtype.api_version)
        obj.setdefault("kind", rtype.kind)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name"):
            base = str(meta["generateName"])[:MAX_GENERATED_NAME]
            while True:
                meta["name"] = base + random_suffix()
                if self.store.get(rtype, meta.get("namespace", ""), meta["name"]) is None:
                    break
        if rtype.on_create is not None:
            rtype.on_create(obj, self.store)
        return self.store.create(rtype, obj)

    def write(self, rtype: ResourceType, obj: Obj) -> Obj:
        """Replace unless nothing changed (a controller's update is a no-op then)."""
        meta = obj["metadata"]
        current = self.store.get(rtype, meta.get("namespace", ""), meta["name"])
        if current == obj:
            return obj
        if current is not None and rtype.uses_generation and current.get("spec") != obj.get("spec"):
            meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
        return self.store.replace(rtype, obj)

    def event(  # noqa: PLR0917 - the fields of an Event, in client-go's Eventf order
        self,
        involved: Obj,
        kind: str,
        reason: str,
        message: str,
        component: str,
        host: str = "",
        event_type: str = "Normal",
    ) -> None:
        """A core/v1 Event about ``involved`` (of ``kind``); the same reason and message again raise its
        count, as client-go's EventCorrelator aggregates repeats."""
        registry, store = self.registry, self.store
        events = registry.get("", "v1", "events")
        if events is None:
            return
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        ref = {
            "kind": kind,
            "namespace": meta.get("namespace", ""),
            "name": meta["name"],
            "uid": meta.get("uid", ""),
            "apiVersion": involved.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        }
        if not ref["namespace"]:
            ref.pop("namespace")
        when = stamp()
        for (group, plural, ns, _name), raw in store.items():
            if (group, plural) != events.key or ns != namespace:
                continue
            other = raw.get("involvedObject") or {}
            if (
                other.get("uid") == ref["uid"]
                and other.get("name") == ref["name"]
                and raw.get("reason") == reason
                and raw.get("message") == message
                and (raw.get("source") or {}).get("component") == component
            ):
                existing = copy.deepcopy(raw)
                existing["count"] = int(existing.get("count", 1)) + 1
                existing["lastTimestamp"] = when
                store.replace(events, existing)
                return
        source = {"component": component, **({"host": host} if host else {})}
        store.create(
            events,
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": f"{meta['name']}.{time.time_ns():x}", "namespace": namespace},
                "involvedObject": ref,
                "reason": reason,
                "message": message,
                "source": source,
                "firstTimestamp": when,
                "lastTimestamp": when,
                "count": 1,
                "type": event_type,
                "reportingComponent": component,
                "reportingInstance": host or component,
            },
        )
