"""What the streaming endpoints need from the node's container runtime (the kubelet implements it).

The kubelet's ``:10250`` server calls :func:`gorkheavy_lab.k3s.stream.kubelet_routes` with an object of this
shape; the exec, attach and containerLogs endpoints use nothing else of the kubelet. Every method is called
from the event loop and must not block for long (no network, no waiting on processes)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol


class ContainerRuntime(Protocol):
    @property
    def log_root(self) -> Path:
        """Where the CRI-format container logs live: ``/var/log/pods`` on a node, as the kubelet keeps them
        (``<log_root>/<ns>_<pod>_<uid>/<container>/<restartCount>.log``)."""
        ...

    def pod(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The Pod as this kubelet runs it (metadata with ``uid``, ``spec``, and the ``status`` it last
        reported, with ``containerStatuses``/``initContainerStatuses``: ``state``, ``lastState``,
        ``restartCount``), or None when this node does not run a pod of that name."""
        ...

    def exec_argv(
        self, namespace: str, pod: str, container: str, argv: list[str]
    ) -> tuple[list[str], dict[str, str]]:
        """The argv and the complete environment that run ``argv`` inside that running container (its
        namespaces, user, environment, workingDir; e.g. through ``nsenter``). The caller runs it as a child
        process, under a pty when a terminal was asked for, so it must be a program that runs in the
        foreground and ends with the exit status of ``argv``.

        Raises ``LookupError`` with the kubelet's own message when the container is not running, e.g.
        ``container not found ("x")``."""
        ...

    def attach_stdin(self, namespace: str, pod: str, container: str) -> Path | None:
        """A path the attach endpoint may open for writing to reach the running container's stdin (a FIFO or
        the container's pty), when the container has ``stdin: true``; None otherwise. Output for attach is
        read from the container's log file as it grows.

        Raises ``LookupError`` with the kubelet's own message when the container is not running."""
        ...


# Optional, looked up with getattr: a runtime may also have
#     def ptmx(self, namespace: str, pod: str, container: str) -> Path | None
# the container's own /dev/ptmx as the node sees it (e.g. /proc/<pid>/root/dev/ptmx of a process in the
# container, when the container mounts a devpts of its own), so that an exec's terminal is allocated in the
# container as runc allocates it and `tty` inside names it; without it the terminal comes from the node's
# /dev/ptmx and works the same, but the container cannot name it (`tty`: "not a tty").
