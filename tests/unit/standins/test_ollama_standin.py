"""The Ollama stand-in against the official client and Ollama's own references (tests/fixtures/ollama)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import jsonschema
import ollama
import pytest
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin
from gorkheavy_lab.ollama import _server as server
from gorkheavy_lab.ollama._golang import GoDecodeError, decode_json, go_json, parse_duration, rfc3339nano
from gorkheavy_lab.ollama._schema import instance_for_schema
from gorkheavy_lab.ollama._server import MAX_QUEUE_ERROR
from ollama import _types

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "ollama"
REPO = Path(__file__).resolve().parents[3]

# Go's time.Time in JSON (RFC3339Nano: fraction without trailing zeros, UTC as Z).
RFC3339NANO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{0,8}[1-9])?(Z|[+-]\d\d:\d\d)$")
METRICS = ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration", "eval_duration")
USER = [{"role": "user", "content": "Why is the sky blue at noon?"}]


def make_standin() -> OllamaStandin:
    return OllamaStandin(
        {
            "gemma3:1b": ModelBehavior(),
            "granite4:350m": ModelBehavior(),
            "qwen3:0.6b": ModelBehavior(thinking="Rayleigh scattering, probably."),
            "plain:latest": ModelBehavior(capabilities=("completion",)),
            "embedder": ModelBehavior(capabilities=("embedding",)),
        }
    )


@pytest.fixture
async def served() -> AsyncIterator[tuple[OllamaStandin, str]]:
    standin = make_standin()
    async with standin.serve() as url:
        yield standin, url


@pytest.fixture
async def http(served: tuple[OllamaStandin, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=served[1], timeout=10) as client:
        yield client


async def drain(parts: AsyncIterator[Any], into: list[Any] | None = None) -> list[Any]:
    """Read a stream of the client to its end (``into`` keeps what arrived before an error)."""
    received = [] if into is None else into
    async for part in parts:
        received.append(part)
    return received


def ndjson(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = response.text.split("\n")
    assert lines[-1] == "", "every NDJSON object ends with a newline"
    return [json.loads(line) for line in lines[:-1]]


# ------------------------------------------------------------------------------------------------------------
# the official client


async def test_chat_streams_chunks_the_client_parses(served: tuple[OllamaStandin, str]) -> None:
    _, url = served
    client = ollama.AsyncClient(host=url)
    parts = [part async for part in await client.chat(model="gemma3:1b", messages=USER, stream=True)]
    assert len(parts) > 2
    assert all(isinstance(p, _types.ChatResponse) for p in parts)
    assert all(p.model == "gemma3:1b" and p.message.role == "assistant" for p in parts)
    assert all(RFC3339NANO.match(p.created_at or "") for p in parts)
    *chunks, final = parts
    assert all(p.done is False and p.done_reason is None and p.total_duration is None for p in chunks)
    assert final.done is True
    assert final.done_reason == "stop"
    assert final.message.content == ""
    assert all(getattr(final, name) > 0 for name in METRICS)
    assert final.eval_count == len(chunks)
    streamed = "".join(p.message.content or "" for p in chunks)

    whole = await client.chat(model="gemma3:1b", messages=USER, stream=False)
    assert isinstance(whole, _types.ChatResponse)
    assert whole.done is True
    assert whole.done_reason == "stop"
    assert whole.message.content == streamed
    assert whole.eval_count == len(chunks)
    assert "gemma3:1b" in streamed
    assert "Why is the sky blue" in streamed


async def test_models_answer_differently_and_deterministically(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    first = await client.chat(model="gemma3:1b", messages=USER)
    again = await client.chat(model="gemma3:1b", messages=USER)
    other = await client.chat(model="granite4:350m", messages=USER)
    assert first.message.content == again.message.content
    assert first.message.content != other.message.content
    assert other.message.content
    assert other.message.content.startswith("granite4:350m")


async def test_generate_stream_and_whole(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    parts = [p async for p in await client.generate(model="gemma3:1b", prompt="Hello there", stream=True)]
    assert all(isinstance(p, _types.GenerateResponse) for p in parts)
    *chunks, final = parts
    assert all(p.done is False for p in chunks)
    assert final.done
    assert final.done_reason == "stop"
    assert final.response == ""
    assert final.context
    assert all(isinstance(t, int) for t in final.context)
    whole = await client.generate(model="gemma3:1b", prompt="Hello there")
    assert whole.response == "".join(p.response or "" for p in chunks)
    assert whole.context == final.context
    raw = await client.generate(model="gemma3:1b", prompt="Hello there", raw=True)
    assert raw.context is None  # raw mode returns no context


async def test_tags_show_ps_version(served: tuple[OllamaStandin, str], http: httpx.AsyncClient) -> None:
    client = ollama.AsyncClient(host=served[1])
    tags = await client.list()
    assert isinstance(tags, _types.ListResponse)
    names = {m.model for m in tags.models}
    assert names == {"gemma3:1b", "granite4:350m", "qwen3:0.6b", "plain:latest", "embedder:latest"}
    gemma = next(m for m in tags.models if m.model == "gemma3:1b")
    assert gemma.details
    assert gemma.details.format == "gguf"
    assert gemma.details.parameter_size == "1B"
    assert gemma.digest
    assert re.fullmatch(r"[0-9a-f]{64}", gemma.digest)
    assert gemma.size
    assert gemma.modified_at

    show = await client.show("qwen3:0.6b")
    assert isinstance(show, _types.ShowResponse)
    assert show.capabilities == ["completion", "tools", "thinking"]
    assert show.modelinfo
    assert show.modelinfo["general.architecture"] == "qwen3"
    assert show.details
    assert show.details.family == "qwen3"

    assert (await client.ps()).models == []
    await client.chat(model="gemma3:1b", messages=USER, keep_alive="10m")
    ps = await client.ps()
    assert isinstance(ps, _types.ProcessResponse)
    assert [m.model for m in ps.models] == ["gemma3:1b"]
    assert ps.models[0].expires_at
    assert ps.models[0].context_length == 4096

    version = await http.get("/api/version")
    assert version.json() == {"version": "0.33.0"}
    assert version.headers["content-type"] == "application/json; charset=utf-8"
    assert (await http.head("/api/version")).status_code == 200


async def test_pull_installs_models_and_delete_removes_them(served: tuple[OllamaStandin, str]) -> None:
    standin, url = served
    client = ollama.AsyncClient(host=url)
    steps = [p async for p in await client.pull("llama3.2:1b", stream=True)]
    assert all(isinstance(p, _types.ProgressResponse) for p in steps)
    assert steps[0].status == "pulling manifest"
    assert steps[-1].status == "success"
    assert any(p.total and p.completed == p.total for p in steps)
    assert "llama3.2:1b" in standin.model_names
    assert (await client.pull("phi4-mini", stream=False)).status == "success"
    assert "phi4-mini:latest" in {m.model for m in (await client.list()).models}
    reply = await client.chat(model="phi4-mini", messages=USER)
    assert reply.message.content

    assert (await client.delete("llama3.2:1b")).status == "success"
    assert "llama3.2:1b" not in standin.model_names
    with pytest.raises(ollama.ResponseError) as excinfo:
        await client.delete("llama3.2:1b")
    assert excinfo.value.status_code == 404
    assert excinfo.value.error == "model 'llama3.2:1b' not found"


async def test_pull_can_be_told_to_fail() -> None:
    standin = OllamaStandin(["gemma3:1b"], allow_pull=False, pull_errors={"broken:1b": "registry on fire"})
    async with standin.serve() as url, httpx.AsyncClient(base_url=url) as http:
        client = ollama.AsyncClient(host=url)
        with pytest.raises(ollama.ResponseError) as excinfo:
            await drain(await client.pull("unknown:7b", stream=True))
        assert excinfo.value.error == "pull model manifest: file does not exist"
        response = await http.post("/api/pull", json={"model": "broken:1b"})
        assert ndjson(response) == [{"status": "pulling manifest"}, {"error": "registry on fire"}]
        response = await http.post("/api/pull", json={"model": "broken:1b", "stream": False})
        assert (response.status_code, response.json()) == (500, {"error": "registry on fire"})
        assert standin.model_names == ["gemma3:1b"]
        assert (await client.pull("gemma3:1b", stream=False)).status == "success"  # present: fine


async def test_embed(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    result = await client.embed(model="embedder", input=["sky", "grass"])
    assert isinstance(result, _types.EmbedResponse)
    assert len(result.embeddings) == 2
    assert len(result.embeddings[0]) == 384
    assert abs(sum(v * v for v in result.embeddings[0]) - 1) < 1e-5
    assert result.embeddings[0] != result.embeddings[1]
    again = await client.embed(model="embedder", input="sky", dimensions=16)
    assert len(again.embeddings[0]) == 16
    assert (await client.embed(model="embedder", input=[])).embeddings == []
    legacy = await client.embeddings(model="embedder", prompt="sky")
    assert isinstance(legacy, _types.EmbeddingsResponse)
    assert len(legacy.embedding) == 384


async def test_unknown_model_is_a_404_response_error(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    for call in (
        client.chat(model="missing:7b", messages=USER),
        client.generate(model="missing:7b", prompt="hi"),
        client.embed(model="missing:7b", input="hi"),
    ):
        with pytest.raises(ollama.ResponseError) as excinfo:
            await call
        assert excinfo.value.status_code == 404
        assert excinfo.value.error == "model 'missing:7b' not found"
    with pytest.raises(ollama.ResponseError) as excinfo:
        await drain(await client.chat(model="missing:7b", messages=USER, stream=True))
    assert (excinfo.value.status_code, excinfo.value.error) == (404, "model 'missing:7b' not found")
    with pytest.raises(ollama.ResponseError) as excinfo:
        await client.show("missing")
    assert (excinfo.value.status_code, excinfo.value.error) == (404, "model 'missing:latest' not found")


async def test_model_names_match_as_ollama_matches_them(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    reply = await client.chat(model="Gemma3:1B", messages=USER)
    assert reply.model == "Gemma3:1B"  # the name as asked, found case-insensitively
    assert (await client.chat(model="plain", messages=USER)).model == "plain"  # :latest implied
    assert (await client.chat(model="registry.ollama.ai/library/gemma3:1b", messages=USER)).message.content


async def test_sync_client_against_the_threaded_server() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(reply="hello from a thread")})
    with standin.serve_in_thread() as url:
        client = ollama.Client(host=url)
        assert client.chat(model="gemma3:1b", messages=USER).message.content == "hello from a thread"
        assert "".join(p.response or "" for p in client.generate("gemma3:1b", "x", stream=True)) == (
            "hello from a thread"
        )
    assert [r.path for r in standin.requests] == ["/api/chat", "/api/generate"]


# ------------------------------------------------------------------------------------------------------------
# raw wire format


async def test_raw_chunks_validate_with_the_client_types(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": USER})
    lines = ndjson(response)
    for line in lines:
        _types.ChatResponse.model_validate(line)
    assert lines[0].keys() == {"model", "created_at", "message", "done"}
    assert lines[0]["message"].keys() == {"role", "content"}
    assert list(lines[-1]) == [
        "model",
        "created_at",
        "message",
        "done",
        "done_reason",
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ]
    response = await http.post("/api/generate", json={"model": "gemma3:1b", "prompt": "a <b> & c"})
    lines = ndjson(response)
    for line in lines:
        _types.GenerateResponse.model_validate(line)
    assert '"\\u003cb\\u003e ' in response.text
    assert '"\\u0026 ' in response.text
    whole = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": USER, "stream": False})
    assert whole.headers["content-type"] == "application/json; charset=utf-8"
    _types.ChatResponse.model_validate(whole.json())


async def test_root_and_unknown_routes(http: httpx.AsyncClient, served: tuple[OllamaStandin, str]) -> None:
    for method in ("GET", "HEAD"):
        response = await http.request(method, "/")
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert (await http.get("/")).text == "Ollama is running"
    missing = await http.get("/api/nothing")
    assert (missing.status_code, missing.text) == (404, "404 page not found")
    wrong = await http.get("/api/chat")
    assert (wrong.status_code, wrong.text) == (405, "405 method not allowed")
    assert (await http.post("/api/tags")).status_code == 405
    assert (await http.get("/api/tags/")).status_code == 301  # gin redirects trailing slashes
    recorded = [(r.method, r.path, r.status) for r in served[0].requests]
    assert ("GET", "/api/nothing", 404) in recorded
    assert ("GET", "/api/chat", 405) in recorded


async def test_load_and_unload_requests(http: httpx.AsyncClient, served: tuple[OllamaStandin, str]) -> None:
    standin, _ = served
    loaded = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": []})
    assert loaded.json()["done_reason"] == "load"
    assert loaded.json()["message"] == {
        "role": "assistant",
        "content": "",
    }
    assert standin.loaded_models() == ["gemma3:1b"]
    unloaded = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": [], "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload"
    assert standin.loaded_models() == []
    loaded = await http.post("/api/generate", json={"model": "gemma3:1b"})
    assert loaded.json()["done_reason"] == "load"
    assert loaded.json()["response"] == ""
    unloaded = await http.post("/api/generate", json={"model": "gemma3:1b", "keep_alive": "0s"})
    assert unloaded.json()["done_reason"] == "unload"
    _types.GenerateResponse.model_validate(unloaded.json())


@pytest.mark.parametrize(
    ("keep_alive", "expires_in"),
    [
        (None, 300),
        ("5m", 300),
        ("1h30m", 5400),
        (60, 60),
        (2.5, 2.5),
        ("-1m", None),
        (-1, None),
        ("1.5s", 1.5),
    ],
)
async def test_keep_alive_forms(http: httpx.AsyncClient, keep_alive: Any, expires_in: float | None) -> None:
    body: dict[str, Any] = {"model": "gemma3:1b", "messages": USER, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    assert (await http.post("/api/chat", json=body)).status_code == 200
    (running,) = (await http.get("/api/ps")).json()["models"]
    expires = _types.ProcessResponse.Model.model_validate(running).expires_at
    assert expires is not None
    left = expires.timestamp() - time.time()
    if expires_in is None:
        assert left > 100 * 365 * 86400  # for ever
    else:
        assert expires_in - 2 < left <= expires_in + 0.5


# ------------------------------------------------------------------------------------------------------------
# refusals, as the real server answers them


CHAT = "/api/chat"
GEN = "/api/generate"
REFUSALS: list[tuple[str, str, Any, int, str]] = [
    ("POST", CHAT, b"", 400, "missing request body"),
    ("POST", CHAT, b"  \n", 400, "missing request body"),
    ("POST", CHAT, b"{", 400, "unexpected EOF"),
    ("POST", CHAT, b'{"model": "gemma3:1b",', 400, "unexpected EOF"),
    ("POST", CHAT, b"{model}", 400, "invalid character 'm' looking for beginning of object key string"),
    ("POST", CHAT, b'{"model" "x"}', 400, "invalid character '\"' after object key"),
    ("POST", CHAT, b'{"model": "x" "y"}', 400, "invalid character '\"' after object key:value pair"),
    ("POST", CHAT, b"nope", 400, "invalid character 'o' in literal null (expecting 'u')"),
    ("POST", CHAT, b"hello", 400, "invalid character 'h' looking for beginning of value"),
    ("POST", CHAT, b"[1]", 400, "json: cannot unmarshal array into Go value of type api.ChatRequest"),
    ("POST", CHAT, {"model": 1}, 400,
     "json: cannot unmarshal number into Go struct field ChatRequest.model of type string"),
    ("POST", CHAT, {"model": "gemma3:1b", "stream": "yes"}, 400,
     "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": "hi"}, 400,
     "json: cannot unmarshal string into Go struct field ChatRequest.messages of type []api.Message"),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": [{"role": 1}]}, 400,
     "json: cannot unmarshal number into Go struct field Alias.role of type string"),
    ("POST", CHAT, {"messages": USER}, 400, "model is required"),
    ("POST", CHAT, {"model": "  ", "messages": USER}, 400, "model is required"),
    ("POST", CHAT, {"model": "bad name!", "messages": USER}, 400, "invalid model name"),
    ("POST", CHAT, {"model": "gemma3:", "messages": USER}, 400, "invalid model name"),
    ("POST", CHAT, {"model": "nope:1b", "messages": USER}, 404, "model 'nope:1b' not found"),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": "abc"}, 400, 'time: invalid duration "abc"'),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": "10"}, 400, 'time: missing unit in duration "10"'),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": "5y"}, 400,
     'time: unknown unit "y" in duration "5y"'),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": "-1"}, 400, 'time: missing unit in duration "-1"'),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": True}, 400, "Unsupported type: 'bool'"),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": {}}, 400,
     "Unsupported type: 'map[string]interface {}'"),
    ("POST", CHAT, {"model": "gemma3:1b", "keep_alive": []}, 400, "Unsupported type: '[]interface {}'"),
    ("POST", CHAT, {"model": "gemma3:1b", "think": "loud"}, 400,
     'invalid think value: "loud" (must be "high", "medium", "low", "max", true, or false)'),
    ("POST", CHAT, {"model": "gemma3:1b", "think": 1}, 400,
     'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'),
    ("POST", CHAT, {"model": "gemma3:1b", "top_logprobs": 21}, 400, "top_logprobs must be between 0 and 20"),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": USER, "think": True}, 400,
     '"gemma3:1b" does not support thinking'),
    ("POST", CHAT, {"model": "plain", "messages": USER, "tools": [{"type": "function", "function": {}}]},
     400, "registry.ollama.ai/library/plain:latest does not support tools"),
    ("POST", CHAT, {"model": "embedder", "messages": USER}, 400, '"embedder" does not support chat'),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": USER, "options": {"temperature": "hot"}}, 500,
     'option "temperature" must be of type float32'),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": USER, "options": {"num_predict": "x"}}, 500,
     'option "num_predict" must be of type integer'),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": USER, "options": {"stop": "x"}}, 500,
     'option "stop" must be of type array'),
    ("POST", CHAT, {"model": "gemma3:1b", "messages": USER, "format": "xml"}, 500,
     'invalid format: "\\"xml\\""; expected "json" or a valid JSON Schema object'),
    ("POST", GEN, {}, 404, "model '' not found"),
    ("POST", GEN, {"prompt": "hi"}, 404, "model '' not found"),
    ("POST", GEN, {"model": "nope", "prompt": "hi"}, 404, "model 'nope' not found"),
    ("POST", GEN, {"model": "gemma3:1b", "prompt": "hi", "raw": True, "system": "s"}, 400,
     "raw mode does not support template, system, or context"),
    ("POST", GEN, {"model": "gemma3:1b", "prompt": "def f(", "suffix": "return 1"}, 400,
     "registry.ollama.ai/library/gemma3:1b does not support insert"),
    ("POST", GEN, {"model": "embedder", "prompt": "hi"}, 400, '"embedder" does not support generate'),
    ("POST", GEN, {"model": "gemma3:1b", "prompt": "hi", "context": ["a"]}, 400,
     "json: cannot unmarshal string into Go struct field GenerateRequest.context of type int"),
    ("POST", "/api/show", {}, 400, "model is required"),
    ("POST", "/api/show", {"model": "nope"}, 404, "model 'nope:latest' not found"),
    ("POST", "/api/show", {"model": "bad name!"}, 400, "invalid model name"),
    ("DELETE", "/api/delete", {}, 400, "model is required"),
    ("DELETE", "/api/delete", {"model": "bad name!"}, 400, 'name "bad name!" is invalid'),
    ("DELETE", "/api/delete", {"model": "nope"}, 404, "model 'nope' not found"),
    ("POST", "/api/pull", {}, 400, "invalid model name"),
    ("POST", "/api/pull", b"", 400, "missing request body"),
    ("POST", "/api/embed", {}, 404, "model '' not found"),
    ("POST", "/api/embed", {"model": "gemma3:1b", "input": 3}, 400, "invalid input type"),
    ("POST", "/api/embed", {"model": "gemma3:1b", "input": ["a", 1]}, 400, "invalid input type"),
    ("POST", "/api/embeddings", {"model": "nope", "prompt": "x"}, 404,
     'model "nope" not found, try pulling it first'),
]  # fmt: skip


@pytest.mark.parametrize("case", REFUSALS, ids=[f"{c[1]} {c[2]!r:.60} {c[4]:.40}" for c in REFUSALS])
async def test_refusals_match_the_real_server(
    http: httpx.AsyncClient, case: tuple[str, str, Any, int, str]
) -> None:
    method, path, body, status, message = case
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = await http.request(method, path, content=content)
    assert (response.status_code, response.json()) == (status, {"error": message})
    assert response.headers["content-type"].startswith("application/json")


async def test_go_decoder_leniencies(http: httpx.AsyncClient) -> None:
    """What Go accepts and Python's json would not: trailing data, keys in any case, ``null`` as the body."""
    response = await http.post(
        "/api/chat", content=b'{"Model": "gemma3:1b", "MESSAGES": [], "Stream": false} junk'
    )
    assert response.status_code == 200
    assert response.json()["done_reason"] == "load"
    response = await http.post("/api/chat", content=b"null")
    assert (response.status_code, response.json()) == (400, {"error": "model is required"})
    response = await http.post(
        "/api/chat",
        json={"model": "gemma3:1b", "messages": [{"role": "USER", "content": "hi"}], "stream": False},
    )
    assert response.status_code == 200  # roles are lowercased, and not checked


async def test_the_client_sees_refusals_as_response_errors(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    with pytest.raises(ollama.ResponseError) as excinfo:
        await client.chat(model="gemma3:1b", messages=USER, keep_alive="soon")
    assert (excinfo.value.status_code, excinfo.value.error) == (400, 'time: invalid duration "soon"')
    with pytest.raises(ollama.ResponseError) as excinfo:
        await client.chat(model="gemma3:1b", messages=USER, think=True)
    assert excinfo.value.status_code == 400


# ------------------------------------------------------------------------------------------------------------
# behaviour: replies, formats, options, thinking, tools


async def test_reply_function_sees_the_parsed_request() -> None:
    seen: list[dict[str, Any]] = []

    def judge(body: dict[str, Any]) -> str:
        seen.append(body)
        return json.dumps({"winner": len(body["messages"]), "reason": "longest"})

    standin = OllamaStandin({"judge:1b": ModelBehavior(reply=judge)})
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        reply = await client.chat(
            model="judge:1b", messages=[*USER, *USER], format="json", options={"seed": 1}
        )
    assert json.loads(reply.message.content or "") == {"winner": 2, "reason": "longest"}
    assert seen[0]["model"] == "judge:1b"
    assert seen[0]["format"] == "json"
    assert seen[0]["options"] == {"seed": 1}


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}},
        "required": ["age", "available"],
    },
    {
        "type": "object",
        "properties": {
            "winner": {"type": "integer", "enum": [1, 2]},
            "score": {"type": "number", "minimum": 0, "maximum": 1},
            "rank": {"type": "integer", "exclusiveMinimum": 3, "maximum": 4},
            "reasons": {"type": "array", "items": {"type": "string", "minLength": 40}, "minItems": 3},
            "verdict": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
            "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
            "meta": {"allOf": [{"properties": {"a": {"const": "x"}}, "required": ["a"]}, {"type": "object"}]},
            "when": {"type": "string", "format": "date-time"},
            "step": {"type": "number", "multipleOf": 0.25, "minimum": 1.1},
            "maybe": {"type": ["null", "integer"]},
        },
        "required": ["winner", "score", "reasons", "extra"],
        "additionalProperties": {"type": "integer"},
        "$defs": {
            "tag": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
        },
    },
    {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
    {"type": "string", "enum": ["yes", "no"]},
]


@pytest.mark.parametrize("schema", SCHEMAS)
async def test_format_schema_answers_validate(
    served: tuple[OllamaStandin, str], schema: dict[str, Any]
) -> None:
    client = ollama.AsyncClient(host=served[1])
    reply = await client.chat(model="gemma3:1b", messages=USER, format=schema)
    jsonschema.validate(json.loads(reply.message.content or ""), schema)
    streamed = [
        p async for p in await client.generate(model="gemma3:1b", prompt="x", format=schema, stream=True)
    ]
    jsonschema.validate(json.loads("".join(p.response or "" for p in streamed)), schema)


def test_schema_instances_vary_with_the_seed_and_stay_valid() -> None:
    schema = SCHEMAS[1]
    values = {json.dumps(instance_for_schema(schema, f"seed {i}"), sort_keys=True) for i in range(20)}
    assert len(values) > 1
    for value in values:
        jsonschema.validate(json.loads(value), schema)


async def test_format_json(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    reply = await client.chat(model="gemma3:1b", messages=USER, format="json")
    assert json.loads(reply.message.content or "")["model"] == "gemma3:1b"
    assert (await client.chat(model="gemma3:1b", messages=USER, format="")).message.content  # "" means unset


async def test_num_predict_and_stop(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    full = await client.chat(model="gemma3:1b", messages=USER)
    cut = await client.chat(model="gemma3:1b", messages=USER, options={"num_predict": 3})
    assert cut.done_reason == "length"
    assert cut.eval_count == 3
    assert full.message.content
    assert full.message.content.startswith(cut.message.content or "-")
    parts = [
        p
        async for p in await client.chat(
            model="gemma3:1b", messages=USER, options={"num_predict": 2}, stream=True
        )
    ]
    assert len(parts) == 3
    assert parts[-1].done_reason == "length"
    stopped = await client.chat(model="gemma3:1b", messages=USER, options={"stop": ["answer"]})
    assert stopped.message.content == "gemma3:1b "
    assert stopped.done_reason == "stop"


async def test_thinking(served: tuple[OllamaStandin, str]) -> None:
    client = ollama.AsyncClient(host=served[1])
    thought = await client.chat(model="qwen3:0.6b", messages=USER)  # thinking models think by default
    assert thought.message.thinking == "Rayleigh scattering, probably."
    assert thought.message.content
    parts = [p async for p in await client.chat(model="qwen3:0.6b", messages=USER, think="high", stream=True)]
    assert parts[0].message.thinking
    assert parts[0].message.content == ""
    assert "".join(p.message.thinking or "" for p in parts) == "Rayleigh scattering, probably."
    quiet = await client.chat(model="qwen3:0.6b", messages=USER, think=False)
    assert quiet.message.thinking is None
    generated = await client.generate(model="qwen3:0.6b", prompt="hi")
    assert generated.thinking == "Rayleigh scattering, probably."
    assert (await client.chat(model="gemma3:1b", messages=USER, think=False)).message.content


async def test_tool_calls() -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Tokyo"}}}
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(reply="", tool_calls=[call])})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [*USER, {"role": "tool", "content": "11 degrees", "tool_name": "get_weather"}]
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        reply = await client.chat(model="gemma3:1b", messages=messages, tools=tools)
        parts = [
            p async for p in await client.chat(model="gemma3:1b", messages=messages, tools=tools, stream=True)
        ]
        without = await client.chat(model="gemma3:1b", messages=messages)
    assert reply.message.tool_calls
    assert reply.message.tool_calls[0].function.name == "get_weather"
    assert reply.message.tool_calls[0].function.arguments == {"city": "Tokyo"}
    assert next(p for p in parts if p.message.tool_calls).done is False
    assert without.message.tool_calls is None


async def test_logprobs(http: httpx.AsyncClient) -> None:
    body = {"model": "gemma3:1b", "messages": USER, "logprobs": True, "top_logprobs": 2, "stream": False}
    reply = _types.ChatResponse.model_validate((await http.post("/api/chat", json=body)).json())
    assert reply.logprobs
    assert len(reply.logprobs[0].top_logprobs or []) == 2
    assert "".join(lp.token for lp in reply.logprobs) == reply.message.content


# ------------------------------------------------------------------------------------------------------------
# failures


async def test_mid_stream_error_arrives_as_an_ndjson_line() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(failure="mid_stream_error", failure_after_chunks=3)})
    async with standin.serve() as url, httpx.AsyncClient(base_url=url) as http:
        response = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": USER})
        assert response.status_code == 200  # the stream had started
        *chunks, error = ndjson(response)
        assert len(chunks) == 3
        assert all(c["done"] is False for c in chunks)
        assert error == {"error": "an error was encountered while running the model"}
        client = ollama.AsyncClient(host=url)
        received: list[Any] = []
        with pytest.raises(ollama.ResponseError) as excinfo:
            await drain(await client.chat(model="gemma3:1b", messages=USER, stream=True), received)
        assert len(received) == 3
        assert excinfo.value.error == "an error was encountered while running the model"
        whole = await http.post("/api/chat", json={"model": "gemma3:1b", "messages": USER, "stream": False})
        assert (whole.status_code, whole.json()) == (
            500,
            {"error": "an error was encountered while running the model"},
        )
    assert {r.outcome for r in standin.requests} == {"failure:mid_stream_error"}


async def test_a_runaway_backend_streams_even_when_asked_for_one_body() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(failure="endless", reply="lorem ipsum", chunks=1)})
    body = {"model": "gemma3:1b", "messages": USER, "stream": False}
    async with (
        standin.serve() as url,
        aiohttp.ClientSession() as http,
        http.post(f"{url}/api/chat", json=body) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/x-ndjson"
        lines = [json.loads(await response.content.readline()) for _ in range(5)]
    assert all(line["done"] is False for line in lines)  # chunk after chunk, never the final one
    assert {line["message"]["content"] for line in lines} == {"lorem ipsum"}


async def test_failure_modes() -> None:
    standin = OllamaStandin(
        {
            "e500:1b": ModelBehavior(
                failure="http_500", error_message="model runner crashed", error_status=503
            ),
            "drop:1b": ModelBehavior(failure="disconnect"),
            "junk:1b": ModelBehavior(failure="malformed"),
            "hang:1b": ModelBehavior(failure="hang"),
            "stall:1b": ModelBehavior(failure="stall", failure_after_chunks=1),
        }
    )
    async with standin.serve() as url, httpx.AsyncClient(base_url=url, timeout=0.3) as http:
        client = ollama.AsyncClient(host=url, timeout=0.3)
        with pytest.raises(ollama.ResponseError) as excinfo:
            await client.chat(model="e500:1b", messages=USER)
        assert (excinfo.value.status_code, excinfo.value.error) == (503, "model runner crashed")
        with pytest.raises(httpx.RemoteProtocolError):
            await drain(await client.chat(model="drop:1b", messages=USER, stream=True))
        with pytest.raises(httpx.RemoteProtocolError):
            await client.chat(model="drop:1b", messages=USER)
        with pytest.raises(json.JSONDecodeError):
            await drain(await client.chat(model="junk:1b", messages=USER, stream=True))
        with pytest.raises(json.JSONDecodeError):
            await client.generate(model="junk:1b", prompt="x")
        with pytest.raises(httpx.ReadTimeout):
            await client.chat(model="hang:1b", messages=USER)
        received: list[Any] = []
        with pytest.raises(httpx.ReadTimeout):
            await drain(await client.chat(model="stall:1b", messages=USER, stream=True), received)
        assert len(received) == 1
        # everything else still works meanwhile
        assert (await http.get("/api/tags")).status_code == 200
    outcomes = [r.outcome for r in standin.requests if r.model]
    assert outcomes.count("failure:hang") == 1
    assert outcomes.count("failure:disconnect") == 2


async def test_failure_count_and_runtime_changes() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(failure="http_500", failure_count=2)})
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        for _ in range(2):
            with pytest.raises(ollama.ResponseError):
                await client.chat(model="gemma3:1b", messages=USER)
        assert (await client.chat(model="gemma3:1b", messages=USER)).done
        standin.configure("gemma3:1b", reply="changed", failure="none")
        assert (await client.chat(model="gemma3:1b", messages=USER)).message.content == "changed"
        standin.behavior("gemma3:1b").reply = "changed again"
        assert (await client.generate(model="gemma3:1b", prompt="x")).response == "changed again"
        standin.add_model("new:1b", ModelBehavior(reply="new"))
        assert (await client.chat(model="new:1b", messages=USER)).message.content == "new"
        standin.remove_model("new:1b")
        with pytest.raises(ollama.ResponseError):
            await client.chat(model="new:1b", messages=USER)
    with pytest.raises(ValueError, match="failure must be one of"):
        standin.configure("gemma3:1b", failure="explode")


# ------------------------------------------------------------------------------------------------------------
# timing and concurrency


async def test_latency_and_chunk_delay_are_honoured_and_reported() -> None:
    standin = OllamaStandin(
        {"slow:1b": ModelBehavior(latency=0.2, chunk_delay=0.05, chunks=4, reply="abcdefgh")}
    )
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        started = time.monotonic()
        parts = []
        first_at = 0.0
        async for part in await client.chat(model="slow:1b", messages=USER, stream=True):
            first_at = first_at or time.monotonic() - started
            parts.append(part)
        streamed_took = time.monotonic() - started
        whole_started = time.monotonic()
        whole = await client.chat(model="slow:1b", messages=USER)
        whole_took = time.monotonic() - whole_started
    final = parts[-1]
    assert [p.message.content for p in parts] == ["ab", "cd", "ef", "gh", ""]
    assert 0.2 <= first_at < 0.5  # time to first token
    assert 0.2 + 4 * 0.05 <= streamed_took < 1.0  # four chunks, then the final one, 50 ms apart
    sent = [datetime.fromisoformat(p.created_at or "").timestamp() for p in parts]
    assert all(b - a >= 0.045 for a, b in itertools.pairwise(sent)), sent
    assert 0.19e9 <= (final.prompt_eval_duration or 0) < 0.45e9
    assert 0.19e9 <= (final.eval_duration or 0) < 0.6e9
    assert (final.total_duration or 0) >= (final.prompt_eval_duration or 0) + (final.eval_duration or 0)
    assert final.eval_count == 4
    assert 0.4 <= whole_took < 1.0
    assert whole.message.content == "abcdefgh"
    (record, _) = standin.requests
    assert record.first_chunk
    assert record.end
    assert 0.2 <= record.first_chunk - record.start < 0.5


async def test_load_latency_applies_once_until_the_model_expires() -> None:
    standin = OllamaStandin({"cold:1b": ModelBehavior(load_latency=0.2)})
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        first, second = await asyncio.gather(*(client.chat(model="cold:1b", messages=USER) for _ in range(2)))
        warm = await client.chat(model="cold:1b", messages=USER)
        await client.chat(model="cold:1b", messages=[], keep_alive=0)
        cold_again = await client.chat(model="cold:1b", messages=USER)
    assert (first.load_duration or 0) >= 0.19e9
    assert (second.load_duration or 0) >= 0.15e9
    assert (warm.load_duration or 0) < 0.05e9
    assert (cold_again.load_duration or 0) >= 0.19e9


async def test_parallel_requests_take_about_one_latency() -> None:
    standin = OllamaStandin(
        {"gemma3:1b": ModelBehavior(latency=0.3), "granite4:350m": ModelBehavior(latency=0.3)}
    )
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        started = time.monotonic()
        replies = await asyncio.gather(
            *(client.chat(model=("gemma3:1b", "granite4:350m")[i % 2], messages=USER) for i in range(40))
        )
        took = time.monotonic() - started
    assert all(r.done for r in replies)
    assert 0.3 <= took < 0.9
    assert standin.peak_in_flight == 40
    latest_start = max(r.start for r in standin.requests)
    earliest_end = min(r.end or 0 for r in standin.requests)
    assert latest_start < earliest_end  # all were in flight together


async def test_hundreds_of_concurrent_streams() -> None:
    """The benchmark's load: 500 sessions streaming at once from one stand-in."""
    standin = OllamaStandin(
        {"gemma3:1b": ModelBehavior(latency=0.3, chunk_delay=0.01, chunks=10)}, record=False
    )
    async with standin.serve() as url, aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(i: int) -> list[dict[str, Any]]:
            body = {"model": "gemma3:1b", "messages": [{"role": "user", "content": f"question {i}"}]}
            async with http.post(f"{url}/api/chat", json=body) as response:
                return [json.loads(line) async for line in response.content]

        started, cpu_started = time.monotonic(), time.process_time()
        streams = await asyncio.gather(*(one(i) for i in range(500)))
        took, cpu = time.monotonic() - started, time.process_time() - cpu_started
    assert all(len(lines) == 11 and lines[-1]["done"] for lines in streams)
    assert len({lines[0]["message"]["content"] + lines[-2]["message"]["content"] for lines in streams}) > 1
    assert standin.peak_in_flight > 250
    assert took < 10, f"500 streams took {took:.2f} s (one alone: 0.4 s, one after the other: 200 s)"
    # cheap: about 1 ms of CPU per 11-chunk stream here, client included; a bound with room for slow hosts
    assert cpu / 500 < 0.01, f"{cpu / 500 * 1000:.1f} ms of CPU per stream"
    assert standin.requests == []  # record=False keeps nothing


async def test_parallel_slots_queue_requests_and_refuse_past_max_queue() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(latency=0.1, parallel=1)}, max_queue=2)
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        started = time.monotonic()
        results = await asyncio.gather(
            *(client.chat(model="gemma3:1b", messages=USER) for _ in range(4)), return_exceptions=True
        )
        took = time.monotonic() - started
        standin.configure("gemma3:1b", parallel=2)
        started = time.monotonic()
        await asyncio.gather(*(client.chat(model="gemma3:1b", messages=USER) for _ in range(2)))
        took_two = time.monotonic() - started
    answers = [r for r in results if isinstance(r, _types.ChatResponse)]
    (busy,) = [r for r in results if isinstance(r, ollama.ResponseError)]
    assert (busy.status_code, busy.error) == (503, MAX_QUEUE_ERROR)
    assert len(answers) == 3
    assert 0.3 <= took < 0.6  # one at a time
    assert 0.1 <= took_two < 0.19  # two at once
    waits = sorted((r.total_duration or 0) - (r.prompt_eval_duration or 0) for r in answers)
    # the queued ones show their wait in total_duration only
    assert waits[0] < 0.05e9
    assert 0.08e9 < waits[1] < waits[2]
    assert all(0.09e9 <= (r.prompt_eval_duration or 0) < 0.15e9 for r in answers)


async def test_load_requests_do_not_use_up_failures() -> None:
    standin = OllamaStandin({"gemma3:1b": ModelBehavior(failure="http_500", failure_count=1)})
    async with standin.serve() as url:
        client = ollama.AsyncClient(host=url)
        assert (await client.chat(model="gemma3:1b", messages=[])).done_reason == "load"
        with pytest.raises(ollama.ResponseError):
            await client.chat(model="gemma3:1b", messages=USER)
        assert (await client.chat(model="gemma3:1b", messages=USER)).done_reason == "stop"


async def test_requests_are_recorded() -> None:
    standin = make_standin()
    async with standin.serve() as url, httpx.AsyncClient(base_url=url) as http:
        await http.post("/api/chat", json={"model": "gemma3:1b", "messages": USER, "stream": False})
        await http.post("/api/generate", json={"model": "granite4:350m", "prompt": "x"})
        await http.post("/api/chat", content=b"{broken")
        await http.get("/api/tags")
    chat, generate, broken, tags = standin.requests
    assert (chat.method, chat.path, chat.model, chat.status, chat.outcome) == (
        "POST",
        CHAT,
        "gemma3:1b",
        200,
        "ok",
    )
    assert chat.body == {"model": "gemma3:1b", "messages": USER, "stream": False}
    assert chat.end is not None
    assert chat.start <= (chat.first_chunk or 0) <= chat.end
    assert generate.model == "granite4:350m"
    assert generate.path == GEN
    assert (broken.body, broken.status, broken.outcome, broken.raw) == (None, 400, "error", b"{broken")
    assert tags.path == "/api/tags"
    assert chat.end <= generate.start
    assert standin.requests_for(path=CHAT) == [chat, broken]
    assert standin.requests_for(model="granite4:350m") == [generate]
    standin.clear_requests()
    assert standin.requests == []


# ------------------------------------------------------------------------------------------------------------
# conformance with the copied references


def go_structs() -> dict[str, list[tuple[str, str, bool]]]:
    """struct name -> [(json tag, Go type, omitempty)] from types.go, embedded structs flattened."""
    text = (FIXTURES / "types.go").read_text()
    raw: dict[str, list[tuple[str, str, str | None]]] = {}
    for name, body in re.findall(r"^type (\w+) struct \{\n(.*?)^\}", text, flags=re.M | re.S):
        fields = []
        for source_line in body.splitlines():
            line = source_line.split("//")[0].strip()
            if not line:
                continue
            tagged = re.match(r'^(\w+)(?:\s+(\S+))?\s+`json:"([^"]*)"`', line)
            if tagged:
                field, go_type, tag = tagged.groups()
                fields.append((tag, go_type or field, field))
            elif re.fullmatch(r"\w+", line):
                fields.append(("", line, None))  # embedded
        raw[name] = fields

    def flatten(name: str) -> list[tuple[str, str, bool]]:
        out = []
        for tag, go_type, _ in raw[name]:
            if not tag:
                out.extend(flatten(go_type))
                continue
            json_name, *flags = tag.split(",")
            if json_name == "-":
                continue
            # Go never omits struct values (time.Time, nested structs) even with omitempty
            omit = "omitempty" in flags and (go_type not in raw and go_type != "time.Time")
            out.append((json_name, go_type, omit))
        return out

    return {name: flatten(name) for name in raw}


STRUCTS = go_structs()
# types.go structs with their own MarshalJSON (not shaped by their fields)
CUSTOM_JSON = {"Duration", "ThinkValue", "ToolCallFunctionArguments", "ToolPropertiesMap"}


def assert_conforms(value: dict[str, Any], struct: str) -> None:
    fields = STRUCTS[struct]
    order = [tag for tag, _, _ in fields]
    unknown = set(value) - set(order)
    assert not unknown, f"{struct} has no fields {unknown}"
    required = {tag for tag, _, omit in fields if not omit}
    assert required <= set(value), f"{struct} misses {required - set(value)}"
    assert list(value) == sorted(value, key=order.index), f"{struct} fields out of Go's order: {list(value)}"
    for tag, go_type, _ in fields:
        if tag not in value or value[tag] is None:
            continue
        element = go_type.removeprefix("[]").removeprefix("*")
        if element in STRUCTS and element not in CUSTOM_JSON:
            items = value[tag] if go_type.startswith("[]") else [value[tag]]
            for item in items:
                assert_conforms(item, element)


def test_types_go_is_parsed() -> None:
    assert [t for t, _, _ in STRUCTS["ChatResponse"]][:5] == [
        "model",
        "remote_model",
        "remote_host",
        "created_at",
        "message",
    ]
    assert ("total_duration", "time.Duration", True) in STRUCTS["ChatResponse"]  # from the embedded Metrics
    assert ("details", "ModelDetails", False) in STRUCTS["ListModelResponse"]
    assert ("token", "string", False) in STRUCTS["Logprob"]  # from the embedded TokenLogprob


async def test_every_body_conforms_to_types_go(
    http: httpx.AsyncClient, served: tuple[OllamaStandin, str]
) -> None:
    standin, _ = served
    standin.configure("gemma3:1b", tool_calls=[{"function": {"name": "f", "arguments": {"x": 1}}}])
    chat = {
        "model": "gemma3:1b",
        "messages": USER,
        "tools": [{"type": "function", "function": {"name": "f"}}],
    }
    for body in (chat, {**chat, "model": "qwen3:0.6b", "logprobs": True, "top_logprobs": 1}):
        for line in ndjson(await http.post(CHAT, json=body)):
            assert_conforms(line, "ChatResponse")
        assert_conforms((await http.post(CHAT, json={**body, "stream": False})).json(), "ChatResponse")
    assert_conforms(
        (await http.post(CHAT, json={"model": "gemma3:1b", "messages": []})).json(), "ChatResponse"
    )
    generate = {"model": "qwen3:0.6b", "prompt": "hi", "logprobs": True}
    for line in ndjson(await http.post(GEN, json=generate)):
        assert_conforms(line, "GenerateResponse")
    assert_conforms((await http.post(GEN, json={**generate, "stream": False})).json(), "GenerateResponse")
    assert_conforms(
        (await http.post(GEN, json={"model": "gemma3:1b", "keep_alive": 0})).json(), "GenerateResponse"
    )
    debug = {"model": "gemma3:1b", "messages": USER, "prompt": "hi", "_debug_render_only": True}
    rendered = (await http.post(CHAT, json=debug)).json()
    assert_conforms(rendered, "ChatResponse")
    assert "Why is the sky blue" in rendered["_debug_info"]["rendered_template"]
    assert_conforms((await http.post(GEN, json=debug)).json(), "GenerateResponse")
    assert_conforms((await http.get("/api/tags")).json(), "ListResponse")
    assert_conforms((await http.get("/api/ps")).json(), "ProcessResponse")
    assert (await http.get("/api/ps")).json()["models"]
    assert_conforms((await http.post("/api/show", json={"model": "gemma3:1b"})).json(), "ShowResponse")
    for line in ndjson(await http.post("/api/pull", json={"model": "x:1b"})):
        assert_conforms(line, "ProgressResponse")
    assert_conforms(
        (await http.post("/api/embed", json={"model": "gemma3:1b", "input": "x"})).json(), "EmbedResponse"
    )
    assert_conforms(
        (await http.post("/api/embeddings", json={"model": "gemma3:1b", "prompt": "x"})).json(),
        "EmbeddingResponse",
    )
    assert_conforms((await http.post(CHAT, json={"model": 1})).json(), "StatusError")
    for line in ndjson(await http.post(CHAT, json={"model": "qwen3:0.6b", "messages": USER})):
        assert RFC3339NANO.match(line["created_at"])


@pytest.mark.parametrize(
    ("struct", "fields"),
    [
        ("ChatRequest", server.CHAT_FIELDS),
        ("GenerateRequest", server.GENERATE_FIELDS),
        ("EmbedRequest", server.EMBED_FIELDS),
        ("EmbeddingRequest", server.EMBEDDINGS_FIELDS),
        ("PullRequest", server.PULL_FIELDS),
        ("DeleteRequest", server.DELETE_FIELDS),
        ("ShowRequest", server.SHOW_FIELDS),
    ],
)
def test_request_fields_match_types_go(struct: str, fields: dict[str, str]) -> None:
    """The stand-in binds requests with the fields and types of the Go request structs."""

    def plain(go_type: str) -> str:
        go_type = go_type.replace("api.", "").replace("interface {}", "any")
        return go_type if go_type.startswith("map") else go_type.lstrip("*")

    expected = {tag: plain(go_type) for tag, go_type, _ in STRUCTS[struct]}
    assert {tag: plain(go_type) for tag, go_type in fields.items()} == expected


# ------------------------------------------------------------------------------------------------------------
# Go behaviours reproduced, and the command line


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("5m", 300_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("-1s", -1_000_000_000),
        ("+2ms", 2_000_000),
        ("3us", 3_000),
        ("3\u00b5s", 3_000),
        ("10ns", 10),
        ("2562047h47m16.854775807s", 2**63 - 1),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".s", 'time: invalid duration ".s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("2562047h47m16.854775808s", 'time: invalid duration "2562047h47m16.854775808s"'),
    ],
)
def test_parse_duration_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="^" + re.escape(message) + "$"):
        parse_duration(text)


def test_go_json_and_times() -> None:
    assert go_json({"a": "<&>\u2028", "b": [1, 2.5, None, True]}) == (
        b'{"a":"\\u003c\\u0026\\u003e\\u2028","b":[1,2.5,null,true]}'
    )
    assert rfc3339nano(1_700_000_000_000_000_000) == "2023-11-14T22:13:20Z"
    assert rfc3339nano(1_700_000_000_120_000_000) == "2023-11-14T22:13:20.12Z"
    assert rfc3339nano(1_700_000_000_000_000_001) == "2023-11-14T22:13:20.000000001Z"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": tru}', "invalid character '}' in literal true (expecting 'e')"),
        (b'{"a": "\\q"}', "invalid character 'q' in string escape code"),
        (b'{"a": "\x01"}', "invalid character '\\x01' in string literal"),
        (b'{"a": -x}', "invalid character 'x' in numeric literal"),
        (b'{"a": 1.}', "invalid character '}' after decimal point in numeric literal"),
        (b'{"a": 1e}', "invalid character '}' in exponent of numeric literal"),
        (b'{"a": [1 2]}', "invalid character '2' after array element"),
        (b"{'a': 1}", "invalid character '\\'' looking for beginning of object key string"),
        (b'{"a": "\\u12g4"}', "invalid character 'g' in \\u hexadecimal character escape"),
        (b'{"a": [1,', "unexpected EOF"),
    ],
)
def test_go_syntax_errors(raw: bytes, message: str) -> None:
    with pytest.raises(GoDecodeError) as excinfo:
        decode_json(raw)
    assert excinfo.value.message == message


def test_command_line() -> None:
    command = [
        sys.executable, "-m", "gorkheavy_lab.ollama", "--port", "0", "--latency", "0.01",
        "--model", "granite4:350m", "--model", "gemma3:1b,reply=fixed,chunks=2",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO / "app")}
    with subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("listening on http://127.0.0.1:"), first
            url = first.split()[-1]
            client = ollama.Client(host=url)
            assert {m.model for m in client.list().models} == {"granite4:350m", "gemma3:1b"}
            assert client.chat(model="gemma3:1b", messages=USER).message.content == "fixed"
            parts = list(client.chat(model="gemma3:1b", messages=USER, stream=True))
            assert [p.message.content for p in parts] == ["fi", "xed", ""]
            reply = client.chat(model="granite4:350m", messages=USER)
            assert reply.message.content
            assert reply.message.content.startswith("granite4:350m")
        finally:
            process.terminate()
            assert process.wait(10) == 0
