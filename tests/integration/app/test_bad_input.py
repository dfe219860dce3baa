"""Bad input never gives a 500: odd bodies, headers, bytes from a backend, slow clients, broken HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from gorkheavy.config import build
from gorkheavy.server import create_app

from .conftest import Backend, roster
from .test_server import Serve, post, read_events, running, serve  # noqa: F401 - the fixture

BODY = b'{"session": "s", "message": "q"}'


async def exchange(url: str, data: bytes, wait: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the server; (status, headers, body) of its answer, or (0, {}, b'') if it closed."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(data)
    await writer.drain()
    try:
        raw = await asyncio.wait_for(reader.read(), wait)
    finally:
        writer.close()
    if not raw:
        return 0, {}, b""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def request(headers: str, body: bytes = BODY, path: str = "/v1/chat") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}"
    if "Content-Length" not in headers and "Transfer-Encoding" not in headers:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/completions"])
async def test_an_integer_of_5000_digits_is_a_400(serve: Serve, path: str) -> None:  # noqa: F811
    async with serve() as (url, http):
        status, payload, _ = await post(
            http, f"{url}{path}", b'{"session": "s", "message": ' + b"7" * 5000 + b"}"
        )
    assert status == 400
    assert "digits" in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


async def test_a_non_utf8_authorization_header_is_a_401_with_www_authenticate(serve: Serve) -> None:  # noqa: F811
    async with serve(environ={"GORKHEAVY_API_TOKEN": "tok"}) as (url, _):
        status, headers, body = await exchange(url, request("Authorization: Bearer t\xffok\r\n"))
        assert status == 401
        assert headers["www-authenticate"] == "Bearer"
        assert json.loads(body)["error"]["code"] == "invalid_api_key"
        status, headers, _ = await exchange(url, request(""))
        assert status == 401
        assert headers["www-authenticate"] == "Bearer"


async def test_a_session_id_with_a_trailing_newline_is_refused(serve: Serve) -> None:  # noqa: F811
    async with serve() as (url, http):
        status, payload, _ = await post(http, f"{url}/v1/chat", {"session": "alice\n", "message": "q"})
    assert status == 400
    assert payload["error"]["param"] == "session"


@pytest.mark.parametrize(
    ("headers", "body", "status", "fragment"),
    [
        ("Content-Length: abc\r\n", BODY, 400, "not valid HTTP: Invalid character in Content-Length"),
        ("Transfer-Encoding: chunked\r\n", b"zz\r\nabc\r\n0\r\n\r\n", 400, "not valid HTTP"),
        ("Content-Encoding: gzip\r\n", BODY, 400, "the body could not be read"),
        ("Content-Type: multipart/form-data; boundary=x\r\n", BODY, 415, "send application/json"),
        ("Content-Type: application/json; charset=utf-16\r\n", BODY, 415, "send the body as UTF-8"),
    ],
)
async def test_protocol_errors_come_back_as_json_in_the_error_shape(
    serve: Serve,  # noqa: F811
    headers: str,
    body: bytes,
    status: int,
    fragment: str,
) -> None:
    async with serve() as (url, _):
        got, response_headers, raw = await exchange(url, request(headers, body))
    assert got == status
    assert response_headers["content-type"].startswith("application/json")
    error = json.loads(raw)["error"]
    assert fragment in error["message"]
    assert set(error) == {"message", "type", "param", "code"}


async def test_a_slow_client_is_cut_after_the_read_timeout(serve: Serve) -> None:  # noqa: F811
    async with serve(server={"read_timeout": 0.5}) as (url, _):
        started = time.monotonic()
        status, _, raw = await exchange(url, request("Content-Length: 100\r\n", b'{"session": '))
        assert status == 408
        assert "did not arrive within 0.5 s" in json.loads(raw)["error"]["message"]
        # headers that never end: the connection is closed
        status, _, _ = await exchange(url, b"POST /v1/chat HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        assert status == 0
        assert time.monotonic() - started < 4


# -- a backend that sends lone UTF-16 surrogates ---------------------------------------------------------


def _chunk(content: str, done: bool = False) -> bytes:
    body: dict[str, Any] = {"model": "m", "message": {"role": "assistant", "content": content}, "done": done}
    if done:
        body.update(done_reason="stop", eval_count=3, prompt_eval_count=5, total_duration=1000)
    return json.dumps(body).encode() + b"\n"  # ensure_ascii: surrogates as \\ud83d escapes


@pytest.fixture
async def odd_backend() -> AsyncIterator[str]:
    """Streams a surrogate pair split over two chunks, then a lone high surrogate."""

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for part in ("split \ud83d", "\ude00 and lone \ud83d!"):
            await response.write(_chunk(part))
        await response.write(_chunk("", done=True))
        return response

    app = web.Application()
    app.router.add_post("/api/chat", chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield "http://127.0.0.1:{}".format(*runner.addresses[0][1:2])
    finally:
        await runner.cleanup()


async def test_lone_surrogates_from_a_backend_are_repaired(backend: Backend, odd_backend: str) -> None:
    data = roster(backend.url)
    for entry in data["models"][1:4]:
        entry["base_url"] = odd_backend
    async with running(create_app(build(data), {})) as url, aiohttp.ClientSession() as http:
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        async with http.post(f"{url}/v1/chat", json={"session": "t", "message": "q", "stream": True}) as r:
            events = await read_events(r)
        completion_status, completion, _ = await post(
            http,
            f"{url}/v1/chat/completions",
            {"model": "gorkheavy", "messages": [{"role": "user", "content": "q"}]},
        )
    assert status == 200
    assert body["answer"] == "split \U0001f600 and lone \ufffd!"
    assert events[-1][0] == "result"
    assert events[-1][1]["answer"] == body["answer"]
    assert completion_status == 200
    assert completion["choices"][0]["message"]["content"] == body["answer"]


async def test_a_lone_surrogate_in_a_request_is_repaired(serve: Serve) -> None:  # noqa: F811
    async with serve() as (url, http):
        status, body, _ = await post(http, f"{url}/v1/chat", b'{"session": "s", "message": "caf\\ud83d?"}')
    assert status == 200
    assert body["question"] == "caf\ufffd?"


async def test_event_streams_that_end_in_an_error_count_as_errors(backend: Backend, serve: Serve) -> None:  # noqa: F811
    for name in ("qwen-small", "qwen", "llama"):
        backend.behavior(name).failure = "http_500"
    async with serve() as (url, http):
        async with http.post(f"{url}/v1/chat", json={"session": "s", "message": "q", "stream": True}) as r:
            events = await read_events(r)
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
    assert events[-1][0] == "error"
    assert 'gorkheavy_requests_total{code="502",endpoint="/v1/chat"} 1.0' in metrics
