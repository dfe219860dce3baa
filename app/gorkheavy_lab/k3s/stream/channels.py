"""The channel protocols of Kubernetes' streaming WebSockets (exec and attach), as the kubelet's streaming
server and kube-apiserver speak them (k8s.io/apimachinery ``wsstream``, ``remotecommand``):

- every message carries one channel's bytes, prefixed by the channel number: a byte in the binary protocols
  (``channel.k8s.io``, ``v4.channel.k8s.io``, ``v5.channel.k8s.io``), an ASCII digit followed by base64 in the
  ``base64.`` ones (text messages);
- channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize (``{"Width": w, "Height": h}`` JSON);
- v4 and v5 carry the end of the command on the error channel as a ``v1`` ``Status`` (``Success``, or
  ``Failure`` with reason ``NonZeroExitCode`` and an ``ExitCode`` cause): clients exit with that code;
  the older protocols carry only a plain error text there;
- v5 (KEP-4006) adds the close signal: a message ``[255, channel]`` half-closes that stream (stdin's end)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
# In the order a server prefers them; the server picks the first the client offers that it knows.
PROTOCOLS = (V5, V4, V4_BASE64, V1, V1_BASE64)


class ProtocolError(ValueError):
    """A message that breaks the channel protocol."""


@dataclass(frozen=True)
class Protocol:
    name: str

    @property
    def base64(self) -> bool:
        return "base64" in self.name

    @property
    def status_json(self) -> bool:
        """v4 and later report the command's end as a JSON Status (with the exit code)."""
        return self.name.startswith(("v4.", "v5."))

    @property
    def close_signal(self) -> bool:
        return self.name.startswith("v5.")

    def encode(self, channel: int, data: bytes) -> bytes | str:
        """One message: bytes for the binary protocols, text for the base64 ones."""
        if self.base64:
            return chr(ord("0") + channel) + base64.b64encode(data).decode()
        return bytes([channel]) + data

    def decode(self, message: bytes | str) -> tuple[int, bytes]:
        """(channel, data) of one message; the close signal is (CLOSE, the closed channel's number)."""
        if isinstance(message, str):
            if not self.base64:
                raise ProtocolError(f"text message on the binary protocol {self.name}")
            if not message:
                raise ProtocolError("empty message")
            channel = ord(message[0]) - ord("0")
            if not 0 <= channel <= 9:
                raise ProtocolError(f"bad channel character {message[0]!r}")
            try:
                return channel, base64.b64decode(message[1:], validate=True)
            except ValueError as exc:
                raise ProtocolError(f"bad base64 on channel {channel}: {exc}") from exc
        if not message:
            raise ProtocolError("empty message")
        if self.base64:
            # browsers' clients of the base64 protocols may send binary messages holding the same text
            return self.decode(message.decode("ascii", "replace"))
        if message[0] == CLOSE:
            if not self.close_signal:
                raise ProtocolError(f"close signal on {self.name}, which has none")
            if len(message) != 2:
                raise ProtocolError(
                    f"Single channel byte should follow stream close signal. Got {len(message) - 1} bytes"
                )
            return CLOSE, message[1:]
        return message[0], message[1:]


def negotiate(offered: str) -> Protocol | None:
    """The protocol a server picks from a ``Sec-WebSocket-Protocol`` header (the client's order wins)."""
    for name in (p.strip() for p in offered.split(",")):
        if name in PROTOCOLS:
            return Protocol(name)
    return None


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int, message: str) -> dict[str, Any]:
    """The Status a kubelet reports for a command that exited with ``code`` (not 0)."""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: {message}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def internal_error(message: str) -> dict[str, Any]:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: {message}",
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    }


def status_message(protocol: Protocol, status: dict[str, Any]) -> bytes:
    """What goes on the error channel: the Status JSON (v4+), or for the older protocols its message only
    (nothing on success)."""
    if protocol.status_json:
        return json.dumps(status).encode()
    return b"" if status.get("status") == "Success" else str(status.get("message", "")).encode()


def terminal_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a resize message: ``{"Width": 80, "Height": 24}`` as clients send it."""
    try:
        size = json.loads(data)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ProtocolError(f"bad terminal size {data[:80]!r}: {exc}") from exc
    if not (0 <= width < 65536 and 0 <= height < 65536):
        raise ProtocolError(f"terminal size out of range: {width}x{height}")
    return width, height
