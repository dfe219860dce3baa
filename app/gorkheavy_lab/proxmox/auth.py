"""API tokens, tickets, CSRF tokens and the privilege checks of the schema's ``permissions``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from gorkheavy_lab.proxmox.state import ALL_PRIVILEGES, ApiError, Cluster, Token, User, perm_error

TICKET_LIFETIME = 7200


class Auth:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self._key = secrets.token_bytes(32)

    # -- accounts ---------------------------------------------------------------------------------------

    def add_user(
        self, userid: str, password: str | None, privileges: Mapping[str, Iterable[str]] | None
    ) -> None:
        self.cluster.users[userid] = User(
            userid, password, _privs(privileges) if privileges is not None else None
        )

    def add_token(
        self, tokenid: str, secret: str, privsep: bool, privileges: Mapping[str, Iterable[str]] | None
    ) -> None:
        if not re.match(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+$", tokenid):
            raise ValueError(f"invalid API token ID '{tokenid}' (user@realm!name, name of 2+ characters)")
        userid = tokenid.split("!", 1)[0]
        if userid not in self.cluster.users:
            self.add_user(userid, None, None)
        self.cluster.tokens[tokenid] = Token(tokenid, secret, privsep, _privs(privileges or {}))

    # -- authentication ---------------------------------------------------------------------------------

    def authenticate(self, method: str, path: str, headers: Mapping[str, str]) -> str | None:
        """Return the auth id, or None for the calls that need no authentication. Raise 401 otherwise."""
        if (path == "/access/ticket" and method in ("GET", "POST")) or (
            path == "/access/domains" and method == "GET"
        ):
            return None
        cookie = headers.get("Cookie", "")
        auth_header = headers.get("Authorization", "")
        ticket = _extract(cookie, "PVEAuthCookie") or _extract(auth_header, "PVEAuthCookie")
        if ticket:
            userid = self.verify_ticket(ticket)
            if userid is None:
                raise ApiError(401, "Authentication failed!", bare=True)
            if method != "GET":
                csrf = headers.get("CSRFPreventionToken")
                if not csrf or not self.verify_csrf(userid, csrf):
                    raise ApiError(401, "Permission denied - invalid csrf token", bare=True)
            return userid
        token = _extract(auth_header, "PVEAPIToken")
        if not token:
            raise ApiError(401, "No ticket", bare=True)
        # like PVE::AccessControl::verify_token: the token ID is everything before the last "="
        match = re.match(r"^(.*)=(.*)$", token, re.DOTALL)
        if not match:
            raise ApiError(401, "Authentication failed!", bare=True)
        tokenid, secret = match.group(1), match.group(2)
        known = self.cluster.tokens.get(tokenid)
        if known is None or not hmac.compare_digest(known.secret, secret):
            raise ApiError(401, "Authentication failed!", bare=True)
        return tokenid

    def login(self, username: str, password: str, realm: str | None) -> dict[str, Any]:
        if realm and "@" not in username:
            username = f"{username}@{realm}"
        user = self.cluster.users.get(username)
        if user is None or user.password is None or not hmac.compare_digest(user.password, password):
            raise ApiError(401, "authentication failure")
        return {
            "username": username,
            "ticket": self.make_ticket(username),
            "CSRFPreventionToken": self.make_csrf(username),
            "cap": {},
        }

    def make_ticket(self, userid: str) -> str:
        plain = f"PVE:{userid}:{int(time.time()):08X}"
        signature = base64.b64encode(hmac.new(self._key, plain.encode(), hashlib.sha256).digest()).decode()
        return f"{plain}::{signature}"

    def verify_ticket(self, ticket: str) -> str | None:
        match = re.match(r"^(PVE:(\S+?):([0-9A-F]{8}))::(\S+)$", ticket)
        if not match:
            return None
        plain, userid, stamp, signature = match.groups()
        expected = base64.b64encode(hmac.new(self._key, plain.encode(), hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            return None
        if time.time() - int(stamp, 16) > TICKET_LIFETIME:
            return None
        return userid

    def make_csrf(self, userid: str) -> str:
        stamp = f"{int(time.time()):08X}"
        digest = base64.b64encode(
            hmac.new(self._key, f"{stamp}:{userid}".encode(), hashlib.sha256).digest()
        ).decode()
        return f"{stamp}:{digest.rstrip('=')}"

    def verify_csrf(self, userid: str, token: str) -> bool:
        match = re.match(r"^([0-9A-F]{8}):(\S+)$", token)
        if not match:
            return False
        digest = base64.b64encode(
            hmac.new(self._key, f"{match.group(1)}:{userid}".encode(), hashlib.sha256).digest()
        ).decode()
        return hmac.compare_digest(digest.rstrip("="), match.group(2))

    # -- authorization ----------------------------------------------------------------------------------

    def effective_privileges(self, authid: str) -> dict[str, set[str]]:
        userid, _, tokenname = authid.partition("!")
        user = self.cluster.users.get(userid)
        user_privs = (
            {"/": set(ALL_PRIVILEGES)} if user is None or user.privileges is None else user.privileges
        )
        if not tokenname:
            return user_privs
        token = self.cluster.tokens.get(authid)
        if token is None or not token.privsep:
            return user_privs
        result: dict[str, set[str]] = {}
        for path, privs in token.privileges.items():
            allowed = {p for p in privs if self.has(user_privs, path, p)}
            if allowed:
                result[path] = allowed
        return result

    @staticmethod
    def has(privileges: Mapping[str, set[str]], path: str, priv: str) -> bool:
        for acl_path, privs in privileges.items():
            if priv not in privs:
                continue
            if acl_path in ("/", path) or path.startswith(acl_path.rstrip("/") + "/"):
                return True
        return False

    def allowed_any(self, authid: str, path: str, privs: list[str]) -> bool:
        if authid == "root@pam":
            return True
        privileges = self.effective_privileges(authid)
        return any(self.has(privileges, path, p) for p in privs)

    def check(self, authid: str, path: str, privs: list[str], any_: bool = False) -> None:
        if authid == "root@pam":
            return
        privileges = self.effective_privileges(authid)
        if any_:
            if not any(self.has(privileges, path, p) for p in privs):
                raise perm_error(f"{path}, {'|'.join(privs)}")
            return
        for priv in privs:
            if not self.has(privileges, path, priv):
                raise perm_error(f"{path}, {priv}")

    def check_schema_permissions(
        self, authid: str | None, permissions: Mapping[str, Any], params: Mapping[str, str]
    ) -> None:
        if authid is None or authid == "root@pam":
            return
        if permissions.get("user") in ("all", "world"):
            return
        check = permissions.get("check")
        if not check:
            return
        self._eval(authid, check, params)

    def _eval(self, authid: str, expr: list[Any], params: Mapping[str, str]) -> None:
        op = expr[0]
        if op == "and":
            for sub in expr[1:]:
                self._eval(authid, sub, params)
        elif op == "or":
            for sub in expr[1:]:
                try:
                    self._eval(authid, sub, params)
                    return
                except ApiError:
                    continue
            raise perm_error()
        elif op == "perm":
            path_template, privs = expr[1], list(expr[2])
            options = dict(zip(expr[3::2], expr[4::2], strict=False))
            if "require_param" in options and options["require_param"] not in params:
                raise perm_error()
            path = re.sub(r"\{(\w[\w-]*)\}", lambda m: params.get(m.group(1), m.group(0)), path_template)
            self.check(authid, path, privs, any_=bool(options.get("any")))
        elif op == "userid-param":
            if params.get("userid", "").split("!")[0] != authid.split("!", maxsplit=1)[0]:
                self.check(authid, "/access", ["User.Modify"])
        else:
            # userid-group and friends: only administrators pass
            self.check(authid, "/", ["Sys.Modify"])


def _privs(privileges: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {}
    for path, privs in privileges.items():
        names = set(privs)
        unknown = names - ALL_PRIVILEGES
        if unknown:
            raise ValueError(f"unknown privileges: {sorted(unknown)}")
        result[path] = names
    return result


def _extract(header: str, key: str) -> str | None:
    if not header:
        return None
    match = re.search(rf"(?:^|\s){re.escape(key)}(?:=| )([^;]*)", header)
    if not match or not match.group(1):
        return None
    return urllib.parse.unquote(match.group(1))
