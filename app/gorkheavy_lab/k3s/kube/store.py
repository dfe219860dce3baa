"""Objects by resource type, namespace and name, with one cluster-wide resourceVersion counter (as etcd's
revision), persisted in SQLite under ``<data-dir>/server/db/state.db`` (K3s keeps its kine SQLite there too)
and fanned out to watchers."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import sqlite3
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .registry import Obj, ResourceType

Key = tuple[str, str, str, str]  # group, plural, namespace, name
HISTORY = 1000


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Event:
    type: str  # ADDED, MODIFIED, DELETED
    rtype: ResourceType
    obj: Obj
    rv: int


class Store:
    def __init__(self, path: Path | None) -> None:
        self._objects: dict[Key, Obj] = {}
        self._rv = 1
        self._watchers: list[asyncio.Queue[Event]] = []
        # the watch cache: recent events, so a watch from a resourceVersion replays what came after it
        self._history: deque[Event] = deque(maxlen=HISTORY)
        self._db: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None)
            self._db.execute("CREATE TABLE IF NOT EXISTS objects (k TEXT PRIMARY KEY, data TEXT NOT NULL)")
            self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)")
            for k, data in self._db.execute("SELECT k, data FROM objects"):
                group, plural, namespace, name = json.loads(k)
                self._objects[(group, plural, namespace, name)] = json.loads(data)
            row = self._db.execute("SELECT v FROM meta WHERE k = 'rv'").fetchone()
            if row:
                self._rv = int(row[0])

    @property
    def resource_version(self) -> int:
        return self._rv

    def _persist(self, key: Key, obj: Obj | None) -> None:
        if self._db is None:
            return
        k = json.dumps(list(key))
        if obj is None:
            self._db.execute("DELETE FROM objects WHERE k = ?", (k,))
        else:
            self._db.execute("INSERT OR REPLACE INTO objects (k, data) VALUES (?, ?)", (k, json.dumps(obj)))
        self._db.execute("INSERT OR REPLACE INTO meta (k, v) VALUES ('rv', ?)", (str(self._rv),))

    def _bump(self) -> int:
        self._rv += 1
        return self._rv

    def _notify(self, event: Event) -> None:
        self._history.append(event)
        for queue in list(self._watchers):
            queue.put_nowait(event)

    @staticmethod
    def key(rtype: ResourceType, namespace: str, name: str) -> Key:
        return (rtype.group, rtype.plural, namespace if rtype.namespaced else "", name)

    def get(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        obj = self._objects.get(self.key(rtype, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(self, rtype: ResourceType, namespace: str | None = None) -> list[Obj]:
        # filter first, then sort and copy only the type's objects (the controllers list often)
        group, plural = rtype.key
        found = [
            (key, obj)
            for key, obj in self._objects.items()
            if key[0] == group and key[1] == plural and (namespace is None or key[2] == namespace)
        ]
        return [copy.deepcopy(obj) for _key, obj in sorted(found, key=lambda item: item[0])]

    def items(self) -> Iterator[tuple[Key, Obj]]:
        yield from list(self._objects.items())

    def create(self, rtype: ResourceType, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", now_rfc3339())
        if rtype.uses_generation:
            meta["generation"] = 1
        key = self.key(rtype, meta.get("namespace", ""), meta["name"])
        self._objects[key] = copy.deepcopy(obj)
        self._persist(key, obj)
        self._notify(Event("ADDED", rtype, copy.deepcopy(obj), rv))
        return obj

    def replace(self, rtype: ResourceType, obj: Obj) -> Obj:
        meta = obj["metadata"]
        rv = self._bump()
        meta["resourceVersion"] = str(rv)
        key = self.key(rtype, meta.get("namespace", ""), meta["name"])
        self._objects[key] = copy.deepcopy(obj)
        self._persist(key, obj)
        self._notify(Event("MODIFIED", rtype, copy.deepcopy(obj), rv))
        return obj

    def delete(self, rtype: ResourceType, namespace: str, name: str) -> Obj | None:
        key = self.key(rtype, namespace, name)
        obj = self._objects.pop(key, None)
        if obj is None:
            return None
        rv = self._bump()
        obj["metadata"]["resourceVersion"] = str(rv)
        self._persist(key, None)
        self._notify(Event("DELETED", rtype, copy.deepcopy(obj), rv))
        return obj

    def delete_key(self, key: Key) -> None:
        obj = self._objects.pop(key, None)
        if obj is None:
            return
        self._bump()
        self._persist(key, None)

    def events_after(self, rv: int) -> Sequence[Event] | None:
        """The events after ``rv``, or None when ``rv`` is older than the watch cache holds (410 Gone)."""
        oldest = self._history[0].rv if self._history else self._rv + 1
        if rv < oldest - 1 and rv < self._rv:
            return None
        return [e for e in self._history if e.rv > rv]

    def subscribe(self) -> asyncio.Queue[Event]:
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._watchers.append(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[Event]) -> None:
        if queue in self._watchers:
            self._watchers.remove(queue)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def as_dict(value: Any) -> Obj:
    return value if isinstance(value, dict) else {}
