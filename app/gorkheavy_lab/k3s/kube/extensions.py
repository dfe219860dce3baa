"""How a stage adds to the API the server serves: an extension is a function that gets the cluster (registry,
store, API server, the server's flag values, the log), registers its resource types, seeds objects, adds
non-resource routes, and returns the controllers (coroutines) the server runs next to the API. The server
runs every extension in ``server.EXTENSIONS`` in order, before it starts listening."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..logs import Logger
from .api import ApiServer
from .registry import Registry
from .store import Store


@dataclass
class Cluster:
    registry: Registry
    store: Store
    api: ApiServer
    values: dict[str, Any]  # the server's resolved flags (config files, command line, environment)
    log: Logger

    def component_args(self, flag: str) -> dict[str, str]:
        """``--<component>-arg key=value`` flags as a dict (e.g. ``kube-controller-manager-arg``)."""
        out = {}
        for item in self.values.get(flag, []) or []:
            key, _, value = str(item).partition("=")
            out[key.lstrip("-")] = value
        return out


Controller = Coroutine[Any, Any, None]
Extension = Callable[[Cluster], list[Controller]]
