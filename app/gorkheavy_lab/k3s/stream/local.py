"""A :class:`~.runtime.ContainerRuntime` whose containers are commands on this machine, without namespaces:
what the streaming endpoints' own tests run against (the nodes' kubelet brings the real one). Pods are
plain Pod objects the caller keeps up to date (spec and status); a container is running when its status
says so; its command runs with the container's ``env`` and ``workingDir`` on top of a small base
environment."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root"}


@dataclass
class LocalRuntime:
    log_root: Path
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    stdin_paths: dict[tuple[str, str, str], Path] = field(default_factory=dict)

    def put(self, pod: Mapping[str, Any]) -> None:
        meta = pod["metadata"]
        self.pods[(meta["namespace"], meta["name"])] = copy.deepcopy(dict(pod))

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.pods.get((namespace, name))

    def _running(self, namespace: str, pod: str, container: str) -> Mapping[str, Any]:
        obj = self.pods.get((namespace, pod))
        statuses = (obj or {}).get("status", {}).get("containerStatuses") or []
        if not any(s.get("name") == container and "running" in (s.get("state") or {}) for s in statuses):
            raise LookupError(f'container not found ("{container}")')
        assert obj is not None
        return next(c for c in obj["spec"]["containers"] if c["name"] == container)

    def exec_argv(
        self, namespace: str, pod: str, container: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        spec = self._running(namespace, pod, container)
        env = dict(BASE_ENV)
        env.update({e["name"]: str(e.get("value", "")) for e in spec.get("env") or [] if "name" in e})
        if spec.get("workingDir"):
            return ["env", "-C", spec["workingDir"], "--", *argv], env
        return list(argv), env

    def ptmx(self, namespace: str, pod: str, container: str) -> Path | None:
        """The machine's own ``/dev/ptmx``: these containers share the machine's devpts."""
        self._running(namespace, pod, container)
        return Path("/dev/ptmx")

    def attach_stdin(self, namespace: str, pod: str, container: str) -> Path | None:
        self._running(namespace, pod, container)
        return self.stdin_paths.get((namespace, pod, container))
