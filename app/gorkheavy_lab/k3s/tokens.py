"""K3s join tokens (k3s-io/k3s ``pkg/clientaccess/token.go``).

Secure form: ``K10<sha256 hex of the CA bundle>::<username>:<password>``. A bare string is a password with no
CA hash. The CA hash of a single-certificate bundle is the sha256 of the PEM file's bytes as served on
``/cacerts``. Agents authenticate to the supervisor with HTTP basic auth ``node:<password>``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

PREFIX = "K10"
HASH_LEN = 64


class TokenError(ValueError):
    pass


@dataclass(frozen=True)
class Token:
    ca_hash: str
    username: str
    password: str

    def secure(self, ca_pem: bytes) -> str:
        return f"{PREFIX}{ca_hash(ca_pem)}::{self.username}:{self.password}"


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(ca_pem).hexdigest()


def parse(token: str) -> Token:
    """Parse like K3s: a bare password gets an empty CA hash; a bad hash length or no password is refused.
    (Kubeadm-style bootstrap tokens ``abcdef.0123456789abcdef`` are not modelled.)"""
    if not token:
        raise TokenError("token must not be empty")
    if not token.startswith(PREFIX):
        token = PREFIX + ":::" + token
    body = token[len(PREFIX) :]
    ca = ""
    if "::" in body:
        ca, body = body.split("::", 1)
        if ca and len(ca) != HASH_LEN:
            raise TokenError("invalid token CA hash length")
    parts = body.split(":", 1)
    if len(parts) != 2 or not parts[1]:
        raise TokenError("invalid token format")
    return Token(ca, parts[0], parts[1])
