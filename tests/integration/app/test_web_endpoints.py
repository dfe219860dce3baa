"""The web page's routes on a real server: the page and its assets, and the read-only JSON under /v1/ui/."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
from gorkheavy.config import build
from gorkheavy.server import create_app

from .conftest import MODELS, Backend, roster
from .test_server import post, running

ROOT = Path(__file__).parents[3]


async def test_the_page_and_every_asset_it_names_are_served_with_a_strict_policy(backend: Backend) -> None:
    async with running(create_app(build(roster(backend.url)), {})) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            policy = response.headers["Content-Security-Policy"]
            page = await response.text()
        assert "default-src 'none'" in policy
        assert "script-src 'self' 'sha256-" in policy  # the inline import map, by its hash, nothing else
        assert "unsafe-inline" not in policy
        assets = re.findall(r'(?:src|href)="(\./)?(ui/[^"]+)"', page)
        assets += re.findall(r'"(?:\./)?(ui/vendor/[^"]+)"', page)
        paths = {a[1] if isinstance(a, tuple) else a for a in assets}
        assert {"ui/app.js", "ui/style.css", "ui/vendor/preact/preact.mjs", "ui/vendor/htm/htm.mjs"} <= paths
        for path in sorted(paths):
            async with http.get(f"{url}/{path}") as response:
                assert response.status == 200, path
                assert await response.read(), path
        async with http.get(f"{url}/ui/../server.py") as response:
            assert response.status in (403, 404)


async def test_the_page_is_open_but_its_data_needs_the_token(backend: Backend) -> None:
    app = create_app(build(roster(backend.url)), {"GORKHEAVY_API_TOKEN": "s3cret"})
    async with running(app) as url, aiohttp.ClientSession() as http:
        for path in ("/", "/ui/app.js"):
            async with http.get(f"{url}{path}") as response:
                assert response.status == 200
        for path in ("overview", "models", "performance", "sessions/a/memory"):
            async with http.get(f"{url}/v1/ui/{path}") as response:
                assert response.status == 401, path
                assert (await response.json())["error"]["code"] == "invalid_api_key"
            wrong = {"Authorization": "Bearer nope"}
            async with http.get(f"{url}/v1/ui/{path}", headers=wrong) as response:
                assert response.status == 401, path
            right = {"Authorization": "Bearer s3cret"}
            async with http.get(f"{url}/v1/ui/{path}", headers=right) as response:
                assert response.status == 200, path


async def test_memory_of_each_session_is_what_its_next_request_sees(backend: Backend) -> None:
    app = create_app(build(roster(backend.url, memory={"store": "none", "turns": 2})), {})
    async with running(app) as url, aiohttp.ClientSession() as http:
        for session, message in [("alice", "one"), ("alice", "two"), ("alice", "three"), ("bob", "four")]:
            status, _, _ = await post(http, f"{url}/v1/chat", {"session": session, "message": message})
            assert status == 200
        async with http.get(f"{url}/v1/ui/sessions/alice/memory") as response:
            alice = await response.json()
        async with http.get(f"{url}/v1/ui/sessions/bob/memory") as response:
            bob = await response.json()
        async with http.get(f"{url}/v1/ui/sessions/nobody/memory") as response:
            nobody = await response.json()
        async with http.get(f"{url}/v1/ui/sessions/-bad/memory") as response:
            bad = response.status, await response.json()
        async with http.get(f"{url}/v1/ui/overview") as response:
            overview = await response.json()
    assert [x["user"] for x in alice["exchanges"]] == ["two", "three"]  # the last 2 turns
    assert [x["user"] for x in bob["exchanges"]] == ["four"]
    assert alice["exchanges"][0]["winner"] in ("qwen", "qwen-small", "llama")
    assert nobody["exchanges"] == []
    assert bad[0] == 400
    assert bad[1]["error"]["param"] == "session"
    assert overview["memory_turns"] == 2
    assert overview["strategies"] == ["select", "synthesize"]
    assert [m["name"] for m in overview["roster"]] == ["promptimizer", "qwen-small", "qwen", "llama", "judge"]


async def test_models_say_health_loaded_latency_and_error_rate(backend: Backend) -> None:
    backend.standin.remove_model(MODELS["llama"])  # not pulled: doctor's problem, with the fix
    async with running(create_app(build(roster(backend.url)), {})) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/ui/models") as response:
            before = {b["name"]: b for b in (await response.json())["backends"]}
        backend.behavior("qwen").failure = "http_500"
        for message in ("a", "b"):
            status, _, _ = await post(http, f"{url}/v1/chat", {"session": "m", "message": message})
            assert status == 200
        backend.standin.add_model(MODELS["llama"])
        async with http.get(f"{url}/v1/ui/models") as response:
            cached = {b["name"]: b for b in (await response.json())["backends"]}
        assert cached == before  # polled at once again: the same answer, no new probe of every server
    assert before["llama"]["ok"] is False
    assert "ollama pull llama3.2:1b" in before["llama"]["fix"]
    assert before["qwen"]["ok"] is True
    assert before["qwen"]["loaded"] is False  # nothing asked yet: nothing in /api/ps


async def test_models_and_performance_after_traffic(backend: Backend) -> None:
    async with running(create_app(build(roster(backend.url)), {})) as url, aiohttp.ClientSession() as http:
        backend.behavior("qwen").failure = "http_500"
        for message in ("a", "b", "c"):
            status, _, _ = await post(http, f"{url}/v1/chat", {"session": "p", "message": message})
            assert status == 200
        async with http.get(f"{url}/v1/ui/models") as response:
            models = {b["name"]: b for b in (await response.json())["backends"]}
        async with http.get(f"{url}/v1/ui/performance") as response:
            performance = await response.json()
    assert models["qwen"]["recent"]["errors"] == 3
    assert models["qwen"]["recent"]["error_rate"] == 1.0
    assert models["qwen"]["recent"]["causes"] == {"http_status": 3}
    assert models["llama"]["loaded"] is True  # it answered: Ollama keeps it in memory (keep_alive)
    assert models["llama"]["recent"]["calls"] == 3
    assert models["llama"]["recent"]["error_rate"] == 0.0
    assert models["llama"]["recent"]["p50"] is not None
    assert performance["stages"]["total"]["count"] == 3
    assert set(performance["stages"]) == {"promptimizer", "experts", "judge", "total"}
    assert sum(performance["winners"].values()) == 3
    assert "qwen" not in performance["winners"]
    assert 0 <= performance["window_seconds"] < 60  # the server is younger than the window
