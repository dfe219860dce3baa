"""Ollama over HTTP: ``/api/chat``, ``/api/tags`` and ``/api/ps``, on one pooled aiohttp session.

One :class:`OllamaClient` (one ``aiohttp.ClientSession``) serves every backend of the roster for the life
of the process. A call whose caller listens to the text as it comes (``CallOptions.on_text``) streams
NDJSON and assembles the reply; a line with an ``error`` key (an error after the response has started) ends
the call with that error. Every other call asks for the reply in one piece (``"stream": false``): one JSON
body to read and parse instead of one line per token, for the model server and for this process. A server
that streams anyway (``application/x-ndjson``) is read as a stream. Deadlines belong to the caller (the
pipeline wraps each call in ``asyncio.timeout``); this module only bounds connecting.

Why not the official ``ollama`` client: see app/README.md ("Ollama client"). Its response types are still
used by the tests to check every body the stand-in sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from gorkheavy import __version__
from gorkheavy.core.redact import redact
from gorkheavy.core.roster import KeepAlive, ModelSpec
from gorkheavy.core.text import repair_text
from gorkheavy.core.types import CallOptions, ChatMessage, ErrorCause, ModelCallError, ModelReply

_NO_OPTIONS = CallOptions()
_JSON = {"Content-Type": "application/json"}
_NDJSON = "application/x-ndjson"

_CONNECTION_ERRORS = (
    aiohttp.ClientConnectionError,  # refused, reset, server disconnected, connect timeout
    aiohttp.ClientPayloadError,  # body cut short
)
_URL_ERRORS = (aiohttp.InvalidURL, ValueError)  # base_url aiohttp cannot use (yarl raises ValueError)

# after the final chunk of a reply, what of the body is still read so its connection can be pooled (the
# end of the chunked encoding, a few bytes, normally already there); past either bound it is closed
_DRAIN_SECONDS = 0.5
_DRAIN_BYTES = 64 * 1024

ConnectionListener = Callable[[], None]
"""Told of every new connection to a model server (a call that finds one in the pool opens none)."""


def pull_hint(spec: ModelSpec) -> str:
    return f"OLLAMA_HOST={spec.where} ollama pull {spec.model}"


def model_present(model: str, available: Sequence[str]) -> bool:
    """Whether ``model`` is among the names /api/tags listed (a tag without ':' means ':latest')."""
    wanted = model if ":" in model else f"{model}:latest"
    return any(name in (model, wanted) for name in available)


def _counting_sockets(listener: ConnectionListener) -> Callable[[tuple[Any, ...]], socket.socket]:
    """The connector's socket factory: a socket as aiohttp makes it, and ``listener`` told of it."""

    def make(addr_info: tuple[Any, ...]) -> socket.socket:
        family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
        sock = socket.socket(family=family, type=kind, proto=proto)
        listener()
        return sock

    return make


def make_session(
    *,
    connect_timeout: float,
    max_connections: int = 0,
    keepalive_s: float = 15.0,
    on_connection: ConnectionListener | None = None,
) -> aiohttp.ClientSession:
    """The process's one pooled session (``max_connections`` 0 means bounded only by the caller; an idle
    connection is kept ``keepalive_s`` seconds; ``on_connection`` hears of every new connection)."""
    connector = aiohttp.TCPConnector(
        limit=max_connections,
        limit_per_host=0,
        ttl_dns_cache=30,
        keepalive_timeout=keepalive_s,
        socket_factory=_counting_sockets(on_connection) if on_connection else None,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        headers={"User-Agent": f"gorkheavy/{__version__}"},
        raise_for_status=False,
        # model servers set no cookies, and one server's must not go to another: none are kept or sent
        cookie_jar=aiohttp.DummyCookieJar(),
    )


@dataclass(frozen=True, slots=True)
class TagsResult:
    models: tuple[str, ...]


class OllamaClient:
    """Implements the pipeline's ModelCaller protocol against Ollama servers."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        max_line_bytes: int = 1024 * 1024,
    ) -> None:
        self._session = session
        self._max_line = max_line_bytes
        self._chat_urls: dict[str, URL] = {}  # base URL -> its /api/chat, parsed once

    @staticmethod
    def request_body(
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        keep_alive: KeepAlive,
        fmt: dict[str, Any] | None = None,
        call: CallOptions = _NO_OPTIONS,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": spec.model,
            "messages": [m.as_dict() for m in messages],
            "stream": call.on_text is not None,  # streamed only for a caller that takes the text as it comes
            "keep_alive": keep_alive,
        }
        options = {**spec.options, **call.options}
        if options:
            body["options"] = options
        if fmt is not None:
            body["format"] = fmt
        if spec.think is not None:
            body["think"] = spec.think
        return body

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        keep_alive: KeepAlive,
        fmt: dict[str, Any] | None = None,
        call: CallOptions = _NO_OPTIONS,
    ) -> ModelReply:
        body = self.request_body(spec, messages, keep_alive=keep_alive, fmt=fmt, call=call)
        url = f"{spec.base_url}/api/chat"
        try:
            parsed = self._chat_urls.get(spec.base_url)
            if parsed is None:
                parsed = self._chat_urls[spec.base_url] = URL(url)
            data = json.dumps(body).encode()
            async with self._session.post(parsed, data=data, headers=_JSON) as response:
                if response.status != 200:
                    raise await self._status_error(spec, response)
                if body["stream"] or response.content_type == _NDJSON:
                    return await self._read_stream(spec, response, call)
                return await self._read_whole(spec, response, call)
        except _CONNECTION_ERRORS as exc:
            raise ModelCallError(
                ErrorCause.CONNECTION, f"{spec.label}: connection failed ({_describe(exc)})"
            ) from None
        except aiohttp.ClientError as exc:  # e.g. not HTTP at all ("Bad status line")
            if isinstance(exc, aiohttp.InvalidURL):
                raise _bad_url(redact(url), exc) from None
            raise ModelCallError(
                ErrorCause.MALFORMED, f"{spec.label}: not an HTTP answer ({_describe(exc)})"
            ) from None
        except _URL_ERRORS as exc:
            raise _bad_url(redact(url), exc) from None

    async def _status_error(self, spec: ModelSpec, response: aiohttp.ClientResponse) -> ModelCallError:
        raw = await response.content.read(64 * 1024)
        text = raw.decode("utf-8", "replace").strip()
        try:
            parsed = json.loads(text)
            message = repair_text(str(parsed.get("error", text)) if isinstance(parsed, dict) else text)
        except ValueError:
            message = text
        if response.status == 404:
            return ModelCallError(
                ErrorCause.MODEL_NOT_FOUND,
                f"{spec.name}: model '{spec.model}' is not on {spec.where} ({message or 'not found'}); "
                f"pull it with: {pull_hint(spec)}",
                status=404,
            )
        return ModelCallError(
            ErrorCause.HTTP_STATUS,
            f"{spec.label}: HTTP {response.status}: {message or response.reason or 'no message'}",
            status=response.status,
        )

    async def _lines(self, response: aiohttp.ClientResponse) -> AsyncGenerator[list[bytes], None]:
        """The body's NDJSON lines, as many as have arrived at a time (blank ones left out)."""
        buffer = b""
        async for chunk in response.content.iter_any():
            buffer += chunk
            if b"\n" in chunk:
                *lines, buffer = buffer.split(b"\n")
                complete = [line for line in lines if line.strip()]
                if complete:
                    yield complete
            if len(buffer) > self._max_line:
                raise ValueError(f"a line longer than {self._max_line} bytes")
        if buffer.strip():
            yield [buffer]

    async def _read_stream(
        self, spec: ModelSpec, response: aiohttp.ClientResponse, call: CallOptions
    ) -> ModelReply:
        """Assemble the streamed reply; past ``max_bytes`` of text it is cut there and the call ends.

        What is kept is bounded whatever the server sends: the text by ``max_bytes``, one line by
        ``max_line_bytes``; leaving early closes the connection, so the server stops generating. After the
        final chunk the end of the body is read too, so the connection goes back to the pool.
        """
        parts: list[str] = []
        size = 0
        max_bytes = call.max_bytes
        try:
            async with contextlib.aclosing(self._lines(response)) as arrived:
                async for lines in arrived:
                    for line in lines:
                        chunk = _object(spec, line)
                        message = chunk.get("message")
                        if isinstance(message, dict):
                            content = message.get("content")
                            if isinstance(content, str) and content:
                                parts.append(content)
                                if call.on_text is not None:
                                    call.on_text(repair_text(content))
                                size += len(content.encode("utf-8", "surrogatepass"))
                                if max_bytes and size >= max_bytes:
                                    text = repair_text(_cut("".join(parts), max_bytes))
                                    return ModelReply(text, "length", truncated=True)
                        elif message is not None:
                            raise ValueError("'message' is not an object")
                        if chunk.get("done") is True:
                            await _drain(response)
                            return _final(chunk, "".join(parts), cut=False)
        except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError included
            raise ModelCallError(
                ErrorCause.MALFORMED, f"{spec.label}: unreadable reply ({_short(str(exc))})"
            ) from None
        raise ModelCallError(
            ErrorCause.CONNECTION, f"{spec.label}: the reply ended before its final chunk (done: true)"
        )

    async def _read_whole(
        self, spec: ModelSpec, response: aiohttp.ClientResponse, call: CallOptions
    ) -> ModelReply:
        """The reply asked for in one piece: one JSON object, its text cut at ``max_bytes`` as a stream is.

        The body is read up to ``max_line_bytes`` (a streamed reply's line limit: the whole reply is one line
        here); a longer one ends the call (``too_long``, with no text: a cut JSON object says nothing) and its
        connection is closed, so what is kept stays bounded whatever the server sends.
        """
        limit = self._max_line
        declared = response.content_length
        raw = bytearray()
        if declared is None or declared <= limit:
            async for data in response.content.iter_any():
                raw += data
                if len(raw) > limit:
                    break
        if len(raw) > limit or (declared is not None and declared > limit):
            raise ModelCallError(
                ErrorCause.TOO_LONG, f"{spec.label}: a reply of more than {limit} bytes (not read)"
            )
        try:
            reply = _object(spec, bytes(raw))
            message = reply.get("message")
            if not isinstance(message, dict):
                raise ValueError("no 'message' object")
        except ValueError as exc:  # UnicodeDecodeError and json.JSONDecodeError included
            raise ModelCallError(
                ErrorCause.MALFORMED, f"{spec.label}: unreadable reply ({_short(str(exc))})"
            ) from None
        if reply.get("done") is not True:
            raise ModelCallError(ErrorCause.MALFORMED, f"{spec.label}: a reply without done: true")
        content = message.get("content")
        text = content if isinstance(content, str) else ""
        max_bytes = call.max_bytes
        if max_bytes and len(text.encode("utf-8", "surrogatepass")) >= max_bytes:
            return _final(reply, _cut(text, max_bytes), cut=True)
        return _final(reply, text, cut=False)

    async def warm(self, base_urls: Sequence[str], per_server: int, limit_s: float) -> int:
        """Open ``per_server`` pooled connections to each server (``GET /api/version`` on each at once),
        so a first burst of requests does not open them all at the same moment; returns how many opened.
        A server that does not answer is skipped: the requests will say what is wrong with it."""

        async def one(url: str) -> bool:
            try:
                timeout = aiohttp.ClientTimeout(total=limit_s)
                async with self._session.get(f"{url}/api/version", timeout=timeout) as response:
                    await response.read()
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return False

        opened = await asyncio.gather(*(one(url) for url in base_urls for _ in range(per_server)))
        return sum(opened)

    async def tags(self, base_url: str, limit_s: float) -> TagsResult:
        """The models a server has (GET /api/tags); raises ModelCallError when it cannot say."""
        return TagsResult(await self._model_names(f"{base_url}/api/tags", limit_s))

    async def running(self, base_url: str, limit_s: float) -> TagsResult:
        """The models a server holds in memory now (GET /api/ps); raises ModelCallError when it cannot say."""
        return TagsResult(await self._model_names(f"{base_url}/api/ps", limit_s))

    async def _model_names(self, url: str, limit_s: float) -> tuple[str, ...]:
        """The names of a ``{"models": [{"name": ...}]}`` listing (what /api/tags and /api/ps answer)."""
        shown = redact(url)
        try:
            async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=limit_s)) as response:
                if response.status != 200:
                    raise ModelCallError(
                        ErrorCause.HTTP_STATUS,
                        f"{shown}: HTTP {response.status}",
                        status=response.status,
                    )
                data = await response.json(content_type=None)
        except _CONNECTION_ERRORS as exc:
            raise ModelCallError(ErrorCause.CONNECTION, f"{shown}: {_describe(exc)}") from None
        except aiohttp.InvalidURL as exc:
            raise _bad_url(shown, exc) from None
        except aiohttp.ClientError as exc:  # e.g. not HTTP at all ("Bad status line")
            raise ModelCallError(
                ErrorCause.MALFORMED, f"{shown}: not an HTTP answer ({_describe(exc)})"
            ) from None
        except TimeoutError:
            raise ModelCallError(ErrorCause.TIMEOUT, f"{shown}: no answer within {limit_s:g} s") from None
        except ValueError as exc:
            raise ModelCallError(ErrorCause.MALFORMED, f"{shown}: not JSON ({_short(str(exc))})") from None
        models = data.get("models") if isinstance(data, dict) else None
        if not isinstance(models, list):
            raise ModelCallError(ErrorCause.MALFORMED, f"{shown}: no 'models' list in the reply")
        return tuple(
            str(m.get("name") or m.get("model")) for m in models if isinstance(m, dict) and m.get("name")
        )


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read the rest of a finished reply's body (normally only the end of its chunked encoding, which may
    arrive just after the final chunk), so aiohttp returns the connection to the pool instead of closing
    it. A server that sends more than ``_DRAIN_BYTES`` or takes longer than ``_DRAIN_SECONDS`` only loses
    the connection: the reply is complete either way."""
    content = response.content
    if content.at_eof():
        return
    left = _DRAIN_BYTES
    with contextlib.suppress(TimeoutError, aiohttp.ClientError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            while left > 0 and not content.at_eof():
                data = await content.readany()
                if not data:
                    break
                left -= len(data)


def _object(spec: ModelSpec, line: bytes) -> dict[str, Any]:
    """One reply object (a streamed line or a whole body); one that carries an ``error`` ends the call.
    Raises ValueError when it is not a JSON object."""
    chunk = json.loads(line.decode("utf-8"))
    if not isinstance(chunk, dict):
        raise ValueError(f"expected a JSON object, got {type(chunk).__name__}")
    if "error" in chunk:
        raise ModelCallError(
            ErrorCause.STREAM_ERROR,
            f"{spec.label}: error while generating: {repair_text(str(chunk['error']))}",
        )
    return chunk


def _final(chunk: dict[str, Any], text: str, *, cut: bool) -> ModelReply:
    """The reply whose final object (``done: true``) is ``chunk``; ``cut``: ``text`` was cut at the cap."""
    reason = "length" if cut else str(chunk.get("done_reason") or "")
    return ModelReply(
        text=repair_text(text),
        done_reason=reason,
        eval_count=_int(chunk.get("eval_count")),
        total_duration_ns=_int(chunk.get("total_duration")),
        prompt_eval_count=_int(chunk.get("prompt_eval_count")),
        truncated=reason == "length",
    )


def _bad_url(url: str, exc: BaseException) -> ModelCallError:
    return ModelCallError(ErrorCause.CONNECTION, f"{url}: not a usable URL ({_describe(exc)})")


def _cut(text: str, max_bytes: int) -> str:
    """``text`` shortened to at most ``max_bytes`` UTF-8 bytes, never splitting a character."""
    raw = text.encode("utf-8", "surrogatepass")
    return raw[:max_bytes].decode("utf-8", "ignore") if len(raw) > max_bytes else text


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(exc: BaseException) -> str:
    text = redact(str(exc)) or type(exc).__name__
    return _short(text)
