"""Backend connections are pooled: a finished reply gives its connection back, however its body ends.

The server here speaks Ollama's streaming reply on raw sockets (HTTP/1.1, chunked NDJSON, as ``ollama
serve`` sends it), so the test decides exactly when the end of the chunked body arrives.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gorkheavy.backends.ollama import OllamaClient, make_session
from gorkheavy.core.roster import ModelSpec
from gorkheavy.core.types import ChatMessage

MESSAGES = [ChatMessage("user", "What is K3s?")]


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _lines() -> list[bytes]:
    first = {"model": "m:1b", "created_at": "2026-12-01T12:00:00Z", "message": {"role": "assistant"}}
    first["message"]["content"] = "K3s is a small Kubernetes."
    final = {
        "model": "m:1b",
        "created_at": "2026-12-01T12:00:01Z",
        "message": {"role": "assistant", "content": ""},
        "done": True,
        "done_reason": "stop",
        "total_duration": 1000,
        "prompt_eval_count": 5,
        "eval_count": 6,
    }
    return [json.dumps(first).encode() + b"\n", json.dumps(final).encode() + b"\n"]


@dataclass
class Chunked:
    """An Ollama-like /api/chat that sends the end of its chunked body ``end`` after the final line:
    ``"late"`` (a moment later, in its own segment), or ``"never"`` (the connection stays open, silent)."""

    end: str
    connections: int = 0
    requests: int = 0
    quiet: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
                self.requests += 1
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(_chunk(line) for line in _lines())
                )
                await writer.drain()
                if self.end == "never":
                    await self.quiet.wait()
                    return
                await asyncio.sleep(0.05)  # the client has read the final line by now
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()


@asynccontextmanager
async def chunked_server(end: str) -> AsyncIterator[tuple[Chunked, str]]:
    backend = Chunked(end)
    server = await asyncio.start_server(backend.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        try:
            yield backend, f"http://127.0.0.1:{port}"
        finally:
            backend.quiet.set()  # before the server closes: its handlers end


async def calls(url: str, count: int) -> tuple[list[str], int]:
    """``count`` calls in a row on one client: (their texts, the connections it opened)."""
    opened: list[None] = []
    session = make_session(connect_timeout=2, on_connection=lambda: opened.append(None))
    client = OllamaClient(session)
    spec = ModelSpec("m", "m:1b", url)
    try:
        async with asyncio.timeout(20):  # a bound for the test, not a figure
            texts = [(await client.chat(spec, MESSAGES, keep_alive="5m")).text for _ in range(count)]
    finally:
        await session.close()
    return texts, len(opened)


async def test_a_reply_whose_body_ends_late_still_gives_its_connection_back() -> None:
    async with chunked_server("late") as (backend, url):
        texts, opened = await calls(url, 3)
    assert texts == ["K3s is a small Kubernetes."] * 3
    assert opened == 1  # then reused from the pool
    assert (backend.connections, backend.requests) == (1, 3)


async def test_a_body_that_never_ends_after_the_final_line_costs_only_its_connection() -> None:
    async with chunked_server("never") as (backend, url):
        texts, opened = await calls(url, 2)
    assert texts == ["K3s is a small Kubernetes."] * 2  # the reply is complete: it is answered
    assert opened == 2  # the connection could not be pooled, so the next call opens one
    assert backend.connections == 2
