"""The kubelet's streaming endpoints on ``:10250``."""

from __future__ import annotations

from aiohttp import web

from .runtime import ContainerRuntime


class KubeletStreams:
    def __init__(self, runtime: ContainerRuntime) -> None:
        self.runtime = runtime

    def add_to(self, app: web.Application) -> None:
        """The endpoints themselves follow in the next change; until then a node serves none of them."""
        del app
