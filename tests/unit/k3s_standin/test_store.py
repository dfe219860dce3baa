"""The store's watch cache: a watch from a recent resourceVersion replays what came after it; after a restart
an older resourceVersion is too old (410 Gone), as with the apiserver's watch cache."""

from __future__ import annotations

from pathlib import Path

from gorkheavy_lab.k3s.kube import core
from gorkheavy_lab.k3s.kube.store import Store


def test_events_after_and_too_old_after_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    core.seed(store)
    start = store.resource_version
    store.create(core.NODES, {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}})
    node = store.get(core.NODES, "", "n1")
    assert node is not None
    node["metadata"]["labels"] = {"a": "b"}
    store.replace(core.NODES, node)
    replay = store.events_after(start)
    assert replay is not None
    assert [e.type for e in replay] == ["ADDED", "MODIFIED"]
    assert store.events_after(store.resource_version) == []
    rv = store.resource_version
    store.close()

    again = Store(tmp_path / "state.db")
    assert again.resource_version == rv
    assert again.get(core.NODES, "", "n1") == node | {
        "metadata": {**node["metadata"], "resourceVersion": str(rv)}
    }
    assert again.events_after(start) is None  # 410 Gone: the cache did not survive the restart
    assert again.events_after(rv) == []
    again.close()
