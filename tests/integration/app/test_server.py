"""The HTTP API: native and OpenAI-compatible endpoints, limits, auth, overload, probes, metrics, drain."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
import yaml
from aiohttp import web
from gorkheavy import api, server
from gorkheavy.backends.memory import SqliteStore
from gorkheavy.config import build
from gorkheavy.server import STATE, create_app, make_runner
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin

from .conftest import MODELS, Backend, roster

ROOT = Path(__file__).parents[3]


@asynccontextmanager
async def running(app: web.Application) -> AsyncIterator[str]:
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


Serve = Callable[..., Any]


@pytest.fixture
async def serve(backend: Backend) -> Serve:
    """``async with serve(**config, environ={...}) as (url, http)``: the API on a free port."""

    @asynccontextmanager
    async def start(environ: dict[str, str] | None = None, **settings: Any) -> AsyncIterator[tuple[str, Any]]:
        config = build(roster(backend.url, **settings))
        async with running(create_app(config, environ or {})) as url, aiohttp.ClientSession() as http:
            yield url, http

    return start


async def post(http: aiohttp.ClientSession, url: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    async with http.post(url, data=data, **kw) as response:
        return response.status, await response.json(content_type=None), response.headers


async def test_chat_returns_answer_winner_candidates_and_timings(backend: Backend, serve: Serve) -> None:
    async with serve() as (url, http):
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s1", "message": "What is K3s?"})
        assert status == 200
        assert body["answer"]
        assert body["winner"] in {"qwen-small", "qwen", "llama"}
        assert [c["name"] for c in body["candidates"]] == ["qwen-small", "qwen", "llama"]
        assert set(body["timings"]) >= {"promptimizer", "experts", "judge", "total"}
        status, _, _ = await post(http, f"{url}/v1/chat", {"session": "s1", "message": "And K3d?"})
        assert status == 200
    messages = backend.chats("llama")[-1].body["messages"]
    assert [m["content"] for m in messages if m["role"] == "user"] == ["What is K3s?", "And K3d?"]


async def read_events(response: aiohttp.ClientResponse) -> list[tuple[str, Any]]:
    events = []
    kind = "message"
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            events.append((kind, json.loads(line[6:])))
            kind = "message"
    return events


@pytest.mark.parametrize("how", ["body", "accept"])
async def test_chat_streams_stage_progress_and_the_result(backend: Backend, serve: Serve, how: str) -> None:
    backend.behavior("judge").latency = 0.2
    body: dict[str, Any] = {"session": "s", "message": "q"}
    headers = {}
    if how == "body":
        body["stream"] = True
    else:
        headers["Accept"] = "text/event-stream"
    async with serve() as (url, http), http.post(f"{url}/v1/chat", json=body, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await read_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[-1] == "result"
    assert set(kinds[:-1]) == {"stage"}
    stages = [(d["stage"], d["name"], d["status"]) for _, d in events[:-1]]
    assert stages[0][2] == "start"
    assert ("judge", "judge", "start") in stages
    assert stages.index(("judge", "judge", "start")) > stages.index(("expert", "llama", "ok"))
    assert events[-1][1]["answer"]


async def test_chat_stream_reports_all_experts_failing_as_an_error_event(
    backend: Backend, serve: Serve
) -> None:
    for name in ("qwen-small", "qwen", "llama"):
        backend.standin.configure(MODELS[name], failure="http_500")
    async with serve() as (url, http):
        async with http.post(
            f"{url}/v1/chat", json={"session": "s", "message": "q", "stream": True}
        ) as response:
            events = await read_events(response)
        assert events[-1][0] == "error"
        assert events[-1][1]["error"]["code"] == "all_experts_failed"
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        assert status == 502
        assert body["error"]["message"].startswith("no expert produced an answer")
        assert {c["cause"] for c in body["candidates"]} == {"http_status"}


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "the body is not valid JSON: Expecting property name enclosed in double quotes"),
        (b"", 400, "the body is empty"),
        (b"[1, 2]", 400, "must be a JSON object"),
        ({"session": "s"}, 400, "message: required field is missing"),
        ({"session": "s", "message": "q", "colour": "red"}, 400, "colour: unknown field; remove it"),
        ({"session": "s", "message": 5}, 400, "message: Input should be a valid string"),
        ({"session": "../etc", "message": "q"}, 400, "session: use 1 to 128 letters"),
        ({"session": "s", "message": "   "}, 400, "message: is blank"),
        ({"session": "s", "message": "x" * 101}, 400, "message: 101 characters, the limit is 100"),
        ({"session": "s", "message": "q", "strategy": "vote"}, 400, "strategy: Input should be 'select' or"),
        ({"session": "s", "message": "y" * 3000}, 413, "the body is larger than 2048 bytes"),
    ],
)
async def test_bad_requests_get_a_json_error_saying_what_is_wrong(
    serve: Serve, body: Any, status: int, fragment: str
) -> None:
    async with serve(server={"max_message_chars": 100, "max_body_bytes": 2048}) as (url, http):
        got, payload, _ = await post(http, f"{url}/v1/chat", body)
    assert got == status
    assert fragment in payload["error"]["message"]
    assert payload["error"]["type"] == "invalid_request_error"


async def test_unknown_paths_and_methods_answer_in_json(serve: Serve) -> None:
    async with serve() as (url, http):
        async with http.get(f"{url}/v1/chat") as response:
            assert response.status == 405
            assert "GET is not allowed on /v1/chat" in (await response.json())["error"]["message"]
        async with http.get(f"{url}/nope") as response:
            assert response.status == 404
            assert (await response.json())["error"]["message"] == "Not Found"


async def test_bearer_token_guards_the_api_but_not_the_probes(serve: Serve) -> None:
    async with serve(environ={"GORKHEAVY_API_TOKEN": "s3cret"}) as (url, http):
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        assert status == 401
        assert "Authorization: Bearer" in body["error"]["message"]
        wrong = {"Authorization": "Bearer s3cre"}
        assert (await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"}, headers=wrong))[0] == 401
        right = {"Authorization": "Bearer s3cret"}
        assert (await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"}, headers=right))[0] == 200
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert [m.id async for m in client.models.list()] == list(api.model_ids("gorkheavy"))
        with pytest.raises(openai.AuthenticationError):
            await openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="nope", max_retries=0).models.list()


async def test_overload_is_refused_with_503_and_retry_after(backend: Backend, serve: Serve) -> None:
    backend.behavior("judge").latency = 0.5
    async with serve(server={"max_in_flight": 1, "max_queue": 1}) as (url, http):
        results = await asyncio.gather(
            *(post(http, f"{url}/v1/chat", {"session": f"s{i}", "message": "q"}) for i in range(5))
        )
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, 503, 503, 503]
        refused = next(r for r in results if r[0] == 503)
        assert int(refused[2]["Retry-After"]) >= 1
        assert refused[1]["error"]["code"] == "overloaded"
        async with http.get(f"{url}/metrics") as response:
            text = await response.text()
        assert "gorkheavy_requests_rejected_total 3.0" in text


async def test_openai_client_uses_the_ensemble_as_one_model(backend: Backend, serve: Serve) -> None:
    async with serve() as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        ids = [m.id async for m in client.models.list()]
        assert ids == ["gorkheavy", "gorkheavy-select", "gorkheavy-synthesize"]

        reply = await client.chat.completions.create(
            model="gorkheavy",
            messages=[
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "What's the capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": [{"type": "text", "text": "And its population?"}]},
            ],
        )
        assert reply.choices[0].message.role == "assistant"
        assert reply.choices[0].message.content
        assert reply.choices[0].finish_reason == "stop"
        assert reply.model_extra is not None
        assert reply.model_extra["gorkheavy"]["winner"] in {"qwen-small", "qwen", "llama"}
        history = backend.chats("qwen")[-1].body["messages"]
        assert [(m["role"], m["content"]) for m in history[1:]] == [
            ("system", "Be brief."),
            ("user", "What's the capital of France?"),
            ("assistant", "Paris."),
            ("user", "And its population?"),
        ]

        stream = await client.chat.completions.create(
            model="gorkheavy-synthesize",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        pieces, finish, usage = [], None, None
        async for chunk in stream:
            if chunk.usage is not None:
                usage = chunk.usage
            for choice in chunk.choices:
                pieces.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        assert "".join(pieces).startswith("gemma3:1b answer")  # the judge wrote it (synthesize)
        assert finish == "stop"
        assert usage is not None
        assert usage.total_tokens > 0
        assert "format" not in backend.chats("judge")[-1].body


async def test_openai_errors_reach_the_client_as_exceptions(backend: Backend, serve: Serve) -> None:
    async with serve() as (url, _):
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError, match="model 'gpt-4o' does not exist"):
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        with pytest.raises(openai.BadRequestError, match="last message must be a non-empty user message"):
            await client.chat.completions.create(
                model="gorkheavy", messages=[{"role": "assistant", "content": "hi"}]
            )
        for name in ("qwen-small", "qwen", "llama"):
            backend.standin.configure(MODELS[name], failure="http_500")
        with pytest.raises(openai.APIStatusError, match="no expert produced an answer") as caught:
            await client.chat.completions.create(
                model="gorkheavy", messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 502
        stream = await client.chat.completions.create(
            model="gorkheavy", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="no expert produced an answer"):
            async for _ in stream:
                pass


async def test_readiness_checks_backends_and_models(backend: Backend, serve: Serve) -> None:
    async with serve() as (url, http):
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 200
            body = await response.json()
        assert body["ready"] is True
        assert len(body["backends"]) == 5
        assert body["memory"]["ok"] is True
    backend.standin.remove_model(MODELS["judge"])
    async with serve() as (url, http), http.get(f"{url}/readyz") as response:
        assert response.status == 503
        body = await response.json()
        judge = next(b for b in body["backends"] if b["name"] == "judge")
        assert judge["ok"] is False
        assert "ollama pull gemma3:1b" in judge["fix"]
        async with http.get(f"{url}/healthz") as live:
            assert live.status == 200


async def test_metrics_expose_stage_and_model_latency_errors_and_in_flight(
    backend: Backend, serve: Serve
) -> None:
    backend.standin.configure(MODELS["qwen"], failure="mid_stream_error")
    async with serve() as (url, http):
        assert (await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"}))[0] == 200
        async with http.get(f"{url}/metrics") as response:
            assert response.status == 200
            text = await response.text()
    assert re.search(r'gorkheavy_stage_duration_seconds_count\{stage="experts"\} 1\.0', text)
    assert re.search(
        r'gorkheavy_model_duration_seconds_count\{name="llama",outcome="ok",stage="expert"\} 1\.0', text
    )
    # not streamed (nobody reads qwen's reply as it comes): Ollama answers the failure with HTTP 500
    assert 'gorkheavy_model_errors_total{cause="http_status",name="qwen"} 1.0' in text
    assert "gorkheavy_requests_in_flight 0.0" in text
    assert 'gorkheavy_requests_total{code="200",endpoint="/v1/chat"} 1.0' in text
    assert re.search(r'gorkheavy_winner_total\{name="(qwen-small|llama)"\} 1\.0', text)
    # five calls: the three that start at once opened a connection at most, the later ones found one
    opened = re.search(r"gorkheavy_backend_connections_opened_total (\d+)\.0", text)
    assert opened, text
    assert 1 <= int(opened.group(1)) <= 3
    assert re.search(r'^python_gc_collections_total\{generation="0"\} \d+\.0$', text, re.MULTILINE)
    # a second app has a registry of its own
    async with serve() as (url, http), http.get(f"{url}/metrics") as response:
        assert "gorkheavy_model_errors_total{" not in await response.text()


async def test_serve_collects_garbage_seldom_while_it_serves_and_restores_the_collector(
    backend: Backend,
) -> None:
    before = gc.get_threshold()
    config = build(roster(backend.url, server={"host": "127.0.0.1", "port": 0}))
    serving = asyncio.create_task(server.serve(config, {}))
    try:
        async with asyncio.timeout(10):
            while gc.get_threshold() != server.GC_THRESHOLDS:
                assert not serving.done(), serving.result()
                await asyncio.sleep(0.01)
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        gc.unfreeze()  # what serve froze at its start is this test process's, not a server's
    assert gc.get_threshold() == before


# -- SIGTERM drain, on a real `gorkheavy serve` process ------------------------------------------------


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    standin = OllamaStandin({model: ModelBehavior() for model in MODELS.values()})
    standin.behavior(MODELS["judge"]).latency = 1.0
    with standin.serve_in_thread() as ollama_url:
        data = roster(ollama_url, server={"host": "127.0.0.1", "port": 0, "drain_seconds": 0.5})
        config = tmp_path / "c.yml"
        config.write_text(yaml.safe_dump(data))
        process = subprocess.Popen(
            [sys.executable, "-m", "gorkheavy", "serve", "--config", str(config)],
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
        )
        try:
            assert process.stderr is not None
            line = process.stderr.readline()
            match = re.search(r"serving on (http://\S+)", line)
            assert match, line
            assert "event loop uvloop" in line  # server.event_loop: auto, and uvloop is installed
            url = match.group(1)
            outcome = asyncio.run(drain_scenario(url, process))
            assert outcome["chat"] == 200
            assert outcome["ready_during_drain"] == 503
            assert process.wait(timeout=10) == 0
            assert outcome["answer"]
            assert "draining" in process.stderr.read()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


async def drain_scenario(url: str, process: subprocess.Popen[str]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        request = asyncio.create_task(post(http, f"{url}/v1/chat", {"session": "s", "message": "slow one"}))
        await asyncio.sleep(0.4)  # the request is now waiting for the judge
        process.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)
        async with http.get(f"{url}/readyz") as response:
            ready = response.status
        started = time.monotonic()
        status, body, _ = await request
        return {"chat": status, "ready_during_drain": ready, "answer": body.get("answer"), "waited": started}


async def test_a_client_leaving_an_event_stream_frees_its_slot_quietly(
    backend: Backend, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gorkheavy")
    backend.behavior("judge").latency = 0.4
    async with serve() as (url, http):
        async with http.post(
            f"{url}/v1/chat", json={"session": "s", "message": "q", "stream": True}
        ) as response:
            assert (await response.content.readline()).startswith(b"event: stage")
        # the client is gone: the next write fails, the work is cancelled, the slot is freed, nothing is
        # logged as an error by the server
        await asyncio.sleep(0.8)
        async with http.get(f"{url}/metrics") as response:
            assert "gorkheavy_requests_in_flight 0.0" in await response.text()
        status, _, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "again"})
        assert status == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR" and r.name.startswith("gorkheavy")]
    assert any("client went away" in r.getMessage() for r in caplog.records)


async def test_in_flight_gauge_counts_running_requests(backend: Backend, serve: Serve) -> None:
    backend.behavior("judge").latency = 1.0
    async with serve() as (url, http):
        running_requests = [
            asyncio.create_task(post(http, f"{url}/v1/chat", {"session": f"s{i}", "message": "q"}))
            for i in range(3)
        ]
        await asyncio.sleep(0.5)
        async with http.get(f"{url}/metrics") as response:
            assert "gorkheavy_requests_in_flight 3.0" in await response.text()
        assert [status for status, _, _ in await asyncio.gather(*running_requests)] == [200, 200, 200]


@asynccontextmanager
async def sqlite_server(
    backend: Backend, tmp_path: Path, breaking_sql: str
) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    """The API with SQLite memory on which ``breaking_sql`` has been run after start-up."""
    config = build(roster(backend.url, memory={"store": "sqlite", "path": str(tmp_path / "m.db")}))
    app = create_app(config, {})
    async with running(app) as url, aiohttp.ClientSession() as http:
        runtime = app[STATE].runtime
        assert runtime is not None
        store = runtime.store
        assert isinstance(store, SqliteStore)
        await store._run(store._db.execute, breaking_sql)
        yield url, http


async def test_a_failing_memory_write_still_returns_the_answer_flagged(
    backend: Backend, tmp_path: Path
) -> None:
    async with sqlite_server(backend, tmp_path, "PRAGMA query_only=1") as (url, http):
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        async with http.get(f"{url}/metrics") as response:
            metrics = await response.text()
    assert status == 200
    assert body["answer"]
    assert body["memory_error"].startswith("cannot write the SQLite memory at <path>")
    assert "gorkheavy_memory_errors_total 1.0" in metrics


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/completions"])
async def test_deeply_nested_json_is_a_400(serve: Serve, path: str) -> None:
    async with serve() as (url, http):
        status, payload, _ = await post(http, f"{url}{path}", b"[" * 200_000)
        assert status == 400
        assert "JSON nested too deeply" in payload["error"]["message"]
        status, _, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        assert status == 200


async def test_a_client_leaving_a_plain_request_frees_its_slot(backend: Backend, serve: Serve) -> None:
    backend.behavior("judge").latency = 5.0
    async with serve() as (url, http):
        with pytest.raises(TimeoutError):
            await post(
                http,
                f"{url}/v1/chat",
                {"session": "s", "message": "q"},
                timeout=aiohttp.ClientTimeout(total=0.3),
            )
        left = time.monotonic()
        gauge = ""
        while time.monotonic() - left < 1.0:
            async with http.get(f"{url}/metrics") as response:
                gauge = next(
                    line
                    for line in (await response.text()).splitlines()
                    if line.startswith("gorkheavy_requests_in_flight ")
                )
            if gauge == "gorkheavy_requests_in_flight 0.0":
                break
            await asyncio.sleep(0.05)
        assert gauge == "gorkheavy_requests_in_flight 0.0"


async def test_no_password_on_readyz_in_client_errors_or_in_the_log(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gorkheavy")
    data = roster(backend.url)
    for entry in data["models"][1:4]:  # every expert on a closed port, behind a password
        entry["base_url"] = "http://admin:s3cret@127.0.0.1:9"
    data["retries"] = 0
    async with running(create_app(build(data), {})) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 503
            ready = await response.text()
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        async with http.post(f"{url}/v1/chat", json={"session": "s", "message": "q", "stream": True}) as r:
            events = await r.text()
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(
                model="gorkheavy", messages=[{"role": "user", "content": "q"}]
            )
    assert "s3cret" not in ready
    assert "admin:***@127.0.0.1:9" in ready  # the operator still sees which backend
    assert status == 502
    client_texts = json.dumps(body) + events + str(caught.value)
    assert "s3cret" not in client_texts
    assert "127.0.0.1" not in client_texts  # no backend URL or address
    assert "connection failed" in body["error"]["message"]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection failed" in logged
    assert "s3cret" not in logged


async def test_memory_errors_sent_to_clients_carry_no_file_path(backend: Backend, tmp_path: Path) -> None:
    async with sqlite_server(backend, tmp_path, "DROP TABLE exchanges") as (url, http):
        status, body, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
    assert status == 503
    assert str(tmp_path) not in json.dumps(body)
    assert "<path>" in body["error"]["message"]


async def test_retry_after_reflects_the_observed_latency(backend: Backend, serve: Serve) -> None:
    backend.behavior("judge").latency = 2.2
    async with serve(server={"max_in_flight": 1, "max_queue": 0}) as (url, http):
        status, first, _ = await post(http, f"{url}/v1/chat", {"session": "a", "message": "q"})
        assert status == 200
        both = await asyncio.gather(
            *(post(http, f"{url}/v1/chat", {"session": name, "message": "q"}) for name in "bc")
        )
    assert sorted(status for status, _, _ in both) == [200, 503]
    refused = next(headers for status, _, headers in both if status == 503)
    assert refused["Retry-After"] == str(math.ceil(first["timings"]["total"]))  # not a constant 1 or 2


async def test_serve_can_open_warm_connections_before_it_listens(backend: Backend, serve: Serve) -> None:
    async with serve(http={"warm_connections": 3}) as (url, http):
        warmed = backend.standin.requests_for(path="/api/version")
        assert len(warmed) == 3  # done before serving; every model of the roster is on this one stand-in
        status, _, _ = await post(http, f"{url}/v1/chat", {"session": "s", "message": "q"})
        assert status == 200
