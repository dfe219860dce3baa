"""The OpenAI endpoint honours what it is sent: instructions, sampling options, refusals, usage, streaming."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from gorkheavy_lab.ollama._server import _conversation, _tokens

from .conftest import MODELS, Backend
from .test_server import Serve, read_events, serve  # noqa: F401 - the fixture

EXPERTS = ("qwen-small", "qwen", "llama")


def client_for(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


async def test_system_and_developer_messages_reach_every_expert_and_the_judge(
    backend: Backend,
    serve: Serve,  # noqa: F811
) -> None:
    async with serve() as (url, _):
        await client_for(url).chat.completions.create(
            model="gorkheavy",
            messages=[
                {"role": "system", "content": "Answer in French."},
                {"role": "developer", "content": "Use one sentence."},
                {"role": "user", "content": "What is K3s?"},
            ],
        )
    for name in EXPERTS:
        messages = backend.chats(name)[-1].body["messages"]
        assert messages[1] == {"role": "system", "content": "Answer in French.\n\nUse one sentence."}
        assert messages[-1]["role"] == "user"
    judge = backend.chats("judge")[-1].body["messages"][1]["content"]
    assert "<instructions>\nAnswer in French.\n\nUse one sentence.\n</instructions>" in judge


async def test_sampling_parameters_reach_the_experts_and_the_synthesis(
    backend: Backend,
    serve: Serve,  # noqa: F811
) -> None:
    async with serve() as (url, _):
        await client_for(url).chat.completions.create(
            model="gorkheavy-synthesize",
            messages=[{"role": "user", "content": "q"}],
            max_tokens=7,
            stop=["END"],
            temperature=0.3,
            top_p=0.9,
            seed=42,
        )
        await client_for(url).chat.completions.create(
            model="gorkheavy-synthesize", messages=[{"role": "user", "content": "q"}], max_completion_tokens=5
        )
    wanted = {"num_predict": 7, "stop": ["END"], "temperature": 0.3, "top_p": 0.9, "seed": 42}
    for name in (*EXPERTS, "judge"):
        first, second = (r.body["options"] for r in backend.chats(name)[-2:])
        assert first == wanted, name
        assert second == {"num_predict": 5}, name
    assert backend.chats("promptimizer")[-1].body["options"] == {"num_predict": 256}  # its own cap only


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
async def test_what_the_ensemble_cannot_honour_is_refused_by_name(
    serve: Serve,  # noqa: F811
    extra: dict[str, Any],
    param: str,
) -> None:
    async with serve() as (url, _):
        with pytest.raises(openai.BadRequestError) as caught:
            await client_for(url).chat.completions.create(
                model="gorkheavy", messages=[{"role": "user", "content": "q"}], **extra
            )
    assert caught.value.param == param
    assert caught.value.message.startswith(f"{param}:") or param in caught.value.message


async def test_stream_null_is_false_and_single_models_answer(serve: Serve) -> None:  # noqa: F811
    async with serve() as (url, http):
        body = {"model": "gorkheavy", "messages": [{"role": "user", "content": "q"}], "stream": None}
        async with http.post(f"{url}/v1/chat/completions", json=body) as response:
            assert response.status == 200
            assert (await response.json())["object"] == "chat.completion"
        client = client_for(url)
        model = await client.models.retrieve("gorkheavy-synthesize")
        assert (model.id, model.owned_by) == ("gorkheavy-synthesize", "gorkheavy")
        with pytest.raises(openai.NotFoundError, match="model 'gpt-4o' does not exist"):
            await client.models.retrieve("gpt-4o")


async def test_usage_counts_the_tokens_of_every_model_call(backend: Backend, serve: Serve) -> None:  # noqa: F811
    replies = {"promptimizer": "rewritten question", "judge": "the final answer"}
    for name in MODELS:
        backend.behavior(name).reply = replies.get(name, "alpha beta gamma")
    async with serve() as (url, _):
        reply = await client_for(url).chat.completions.create(
            model="gorkheavy-synthesize", messages=[{"role": "user", "content": "What is K3s?"}]
        )
    calls = backend.standin.requests_for(path="/api/chat")
    assert len(calls) == 5
    prompt = sum(_tokens(_conversation("chat", call.body)[1]) for call in calls)
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == prompt
    assert reply.usage.completion_tokens == 2 + 3 * 3 + 3  # one token per word of each reply
    assert reply.usage.total_tokens == prompt + 14


async def test_the_synthesis_streams_token_by_token(backend: Backend, serve: Serve) -> None:  # noqa: F811
    backend.behavior("judge").reply = "K3s is a small Kubernetes"
    backend.behavior("judge").chunk_delay = 0.05
    async with serve() as (url, http):
        stream = await client_for(url).chat.completions.create(
            model="gorkheavy-synthesize", messages=[{"role": "user", "content": "q"}], stream=True
        )
        pieces = [
            c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content
        ]
        body = {"session": "s", "message": "q", "strategy": "synthesize", "stream": True}
        async with http.post(f"{url}/v1/chat", json=body) as response:
            events = await read_events(response)
    assert len(pieces) == 5  # one content chunk per token of the judge, as they came
    assert "".join(pieces) == "K3s is a small Kubernetes"
    tokens = [data["text"] for kind, data in events if kind == "token"]
    assert len(tokens) == 5
    assert "".join(tokens) == "K3s is a small Kubernetes"
    kinds = [(kind, data.get("stage"), data.get("status")) for kind, data in events]
    assert kinds.index(("token", None, None)) > kinds.index(("stage", "judge", "start"))
    assert kinds[-1][0] == "result"
    assert events[-1][1]["answer"] == "K3s is a small Kubernetes"


@pytest.mark.parametrize("path", ["/v1/chat", "/v1/chat/completions"])
async def test_streams_send_a_heartbeat_while_the_ensemble_works(
    backend: Backend,
    serve: Serve,  # noqa: F811
    path: str,
) -> None:
    backend.behavior("judge").latency = 0.5
    body: dict[str, Any] = {"stream": True}
    if path == "/v1/chat":
        body.update(session="s", message="q")
    else:
        body.update(model="gorkheavy", messages=[{"role": "user", "content": "q"}])
    async with (
        serve(server={"heartbeat_seconds": 0.1}) as (url, http),
        http.post(f"{url}{path}", data=json.dumps(body)) as response,
    ):
        text = await response.text()
    assert text.count(": keep-alive\n\n") >= 2
