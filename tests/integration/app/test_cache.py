"""The answer cache: keyed by question and context, with a TTL, in the process or in a real redis-server."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from .conftest import Backend
from .test_server import Serve, post, serve  # noqa: F401 - the fixture

REDIS = shutil.which("redis-server")


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    """A throwaway redis-server on a Unix socket, nothing saved to disk."""
    if REDIS is None:
        pytest.skip(
            "redis-server not found (Debian package redis-server; scripts/system-deps.sh installs it)"
        )
    root = Path(tempfile.mkdtemp(prefix="gorkheavy-redis-"))
    sock = root / "redis.sock"
    process = subprocess.Popen(
        [
            REDIS,
            "--port",
            "0",
            "--unixsocket",
            str(sock),
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert process.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["process", "redis"])
async def cache_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    settings: dict[str, Any] = {"enabled": True, "ttl": 30}
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client = aioredis.from_url(url)
        await client.flushall()
        await client.aclose()
        settings["url"] = url
    return settings


def model_calls(backend: Backend) -> int:
    return len(backend.standin.requests_for(path="/api/chat"))


async def chat(http: Any, url: str, session: str, message: str, **extra: Any) -> dict[str, Any]:
    status, body, _ = await post(http, f"{url}/v1/chat", {"session": session, "message": message, **extra})
    assert status == 200, body
    result: dict[str, Any] = body
    return result


async def test_a_hit_answers_without_calling_any_model(
    backend: Backend,
    serve: Serve,  # noqa: F811
    cache_settings: dict[str, Any],
) -> None:
    async with serve(cache=cache_settings) as (url, http):
        first = await chat(http, url, "alice", "What is K3s?")
        calls = model_calls(backend)
        again = await chat(http, url, "bob", "  what is   K3S? ")  # same context: bob has no memory yet
        assert model_calls(backend) == calls
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
    assert first["cached"] is False
    assert again["cached"] is True
    assert (again["answer"], again["winner"]) == (first["answer"], first["winner"])
    assert again["candidates"] == []
    assert 'gorkheavy_answer_cache_total{result="hit"} 1.0' in metrics
    assert 'gorkheavy_answer_cache_total{result="miss"} 1.0' in metrics


async def test_a_different_context_never_shares_an_answer(
    backend: Backend,
    serve: Serve,  # noqa: F811
    cache_settings: dict[str, Any],
) -> None:
    async with serve(cache=cache_settings) as (url, http):
        await chat(http, url, "alice", "What is K3s?")
        await chat(http, url, "alice", "And its population?")
        await chat(http, url, "bob", "What is Paris?")
        calls = model_calls(backend)
        # bob's memory window differs from alice's: the same question is a miss
        follow_up = await chat(http, url, "bob", "And its population?")
        assert follow_up["cached"] is False
        assert model_calls(backend) > calls
        # the same window, another strategy: a miss too
        other = await chat(http, url, "carol", "What is K3s?", strategy="synthesize")
        assert other["cached"] is False
        # what was stored for alice's first turn is still there for an empty window
        assert (await chat(http, url, "dave", "What is K3s?"))["cached"] is True


async def test_entries_expire_after_their_ttl(
    backend: Backend,
    serve: Serve,  # noqa: F811
    cache_settings: dict[str, Any],
) -> None:
    async with serve(cache={**cache_settings, "ttl": 1.0}) as (url, http):
        await chat(http, url, "a", "What is K3s?")
        assert (await chat(http, url, "b", "What is K3s?"))["cached"] is True
        await asyncio.sleep(1.3)
        assert (await chat(http, url, "c", "What is K3s?"))["cached"] is False


async def test_the_redis_entry_carries_its_ttl(serve: Serve, redis_url: str) -> None:  # noqa: F811
    client = aioredis.from_url(redis_url)
    try:
        await client.flushall()
        async with serve(cache={"enabled": True, "ttl": 120, "url": redis_url}) as (url, http):
            await chat(http, url, "a", "What is K3s?")
        keys = await client.keys("gorkheavy:answer:*")
        assert len(keys) == 1
        assert 100_000 < await client.pttl(keys[0]) <= 120_000
    finally:
        await client.aclose()


async def test_the_cache_is_off_by_default(backend: Backend, serve: Serve) -> None:  # noqa: F811
    async with serve() as (url, http):
        await chat(http, url, "a", "What is K3s?")
        calls = model_calls(backend)
        assert (await chat(http, url, "b", "What is K3s?"))["cached"] is False
        assert model_calls(backend) > calls
