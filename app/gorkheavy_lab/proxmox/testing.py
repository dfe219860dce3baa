"""Helpers for tests that drive the stand-in: a running server, a proxmoxer client, task waiting."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from proxmoxer import ProxmoxAPI

from gorkheavy_lab.proxmox.standin import ProxmoxStandin, Server

TOKEN_ID = "gorkheavy@pve!ansible"
TOKEN_SECRET = "5f0c6a8e-2b1d-4c3e-9a7f-0d4e1b2c3a4f"

# A syntactically valid OpenSSH public key (the blob starts with its length-prefixed type).
SSH_KEY = (
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh3Qx8nNfWl3KtXoP0m5TqKmY3fYkJvR2lW1v5bq7Zs ansible@controller"
)


def client(server: Server, tokenid: str = TOKEN_ID, secret: str = TOKEN_SECRET) -> Any:
    user, _, token_name = tokenid.partition("!")
    return ProxmoxAPI(
        server.host,
        port=server.port,
        user=user,
        token_name=token_name,
        token_value=secret,
        verify_ssl=server.ca_path,
        timeout=10,
    )


def wait_task(
    api: Any, node: str, upid: str, timeout: float = 10.0, interval: float = 0.02
) -> dict[str, Any]:
    """Poll ``/nodes/{node}/tasks/{upid}/status`` until the task has stopped; return the final status."""
    deadline = time.monotonic() + timeout
    while True:
        status: dict[str, Any] = api.nodes(node).tasks(upid).status.get()
        if status["status"] == "stopped":
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"task {upid} still running")
        time.sleep(interval)


@contextmanager
def running_standin(**kwargs: Any) -> Iterator[tuple[ProxmoxStandin, Server]]:
    standin = ProxmoxStandin(**kwargs)
    standin.add_token(TOKEN_ID, TOKEN_SECRET)
    with standin.serve_https() as server:
        yield standin, server
    assert standin.internal_errors == [], "\n".join(standin.internal_errors)
