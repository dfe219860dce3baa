"""Exec, attach and logs streaming for the K3s stand-in: the kubelet's ``/exec``, ``/attach`` and
``/containerLogs`` endpoints (``kubelet_routes``) and the API server's ``pods/exec``, ``pods/attach`` and
``pods/log`` subresources that relay to them."""

from __future__ import annotations

from aiohttp import web

from .runtime import ContainerRuntime

__all__ = ["ContainerRuntime", "kubelet_routes"]


def kubelet_routes(app: web.Application, runtime: ContainerRuntime) -> None:
    """Add the kubelet's streaming endpoints to ``app`` (the node's ``:10250`` HTTPS server, which must only
    admit clients with a certificate the cluster's client CA signed, as the API server's is)."""
    from .kubelet import KubeletStreams  # noqa: PLC0415 - keeps this module importable on its own

    KubeletStreams(runtime).add_to(app)
