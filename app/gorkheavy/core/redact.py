"""Credentials out of every text the orchestrator shows: URLs, PostgreSQL DSNs, messages, probes, the log.

:func:`redact` is the one place secrets are removed; every surface (doctor, ``/readyz``, error texts, log
lines) passes what it shows through it. It finds, anywhere in a text:

* the password of a URL's user info: ``postgresql://user:secret@db/x`` -> ``postgresql://user:***@db/x``
  (also ``http://`` base URLs, and a password holding ``@`` or ``/``: the word's last ``@`` ends it);
* a secret query parameter: ``?password=secret&sslmode=require`` -> ``?password=***&sslmode=require``
  (``password``, ``sslpassword``, ``passwd``, ``pwd``, ``token``, ``api_key``, ``apikey``, ``secret``,
  ``access_token``);
* a libpq key=value setting: ``host=db password=secret`` or ``password = 'a b\\' c'`` -> ``password=***``.

:func:`for_clients` goes further for texts sent to API clients: backend URLs and file paths are replaced
by ``<backend>`` and ``<path>`` (a client has no use for them, an attacker would).
"""

from __future__ import annotations

import re

MASK = "***"

_SECRET_KEYS = r"password|sslpassword|passwd|pwd|token|api_key|apikey|secret|access_token"
# scheme://user:password@ (greedy up to the last '@' of the word: a password may hold '@' or '/')
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s:@]*):[^?#\s]*@")
_QUERY = re.compile(rf"(?P<head>[?&;](?:{_SECRET_KEYS})=)[^&#\s]*", re.IGNORECASE)
_KEY_VALUE = re.compile(
    rf"(?P<head>(?<![?&;\w])(?:{_SECRET_KEYS})\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s'][^\s]*)",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")
_PATH = re.compile(r"(?<![\w/.:~-])(?:~|\.{1,2})?/(?:[\w.@+-]+/)*[\w.@+-]+/?")
_SOCKADDR = re.compile(r"\('[\w.:%-]+', \d+(?:, \d+, \d+)?\)")  # asyncio: "Connect call failed ('h', 9)"
_HOST_PORT = re.compile(r"(?<=\bhost )\[?[\w.:-]+\]?:\d+")  # aiohttp: "Cannot connect to host h:11434 ..."


def redact(text: str) -> str:
    """``text`` with every password or token of a URL or DSN replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY.sub(lambda m: m.group("head") + MASK, text)
    return _KEY_VALUE.sub(lambda m: m.group("head").rstrip().rstrip("=").rstrip() + "=" + MASK, text)


def for_clients(text: str) -> str:
    """What an API client may see of an error text: no credentials, no backend URLs, no file paths."""
    text = _URL.sub("<backend>", redact(text))
    text = _SOCKADDR.sub("<backend>", _HOST_PORT.sub("<backend>", text))
    return _PATH.sub("<path>", text)
