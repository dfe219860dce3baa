"""sd_notify(3): tell systemd a ``Type=notify`` service is ready: ``READY=1`` to ``$NOTIFY_SOCKET``."""

from __future__ import annotations

import os
import socket


def notify(state: str = "READY=1") -> bool:
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())
    return True
