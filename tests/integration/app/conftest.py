"""Fixtures for the orchestrator's integration tests: an Ollama stand-in and a pipeline wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from gorkheavy.backends.memory import ProcessStore
from gorkheavy.backends.ollama import OllamaClient, make_session
from gorkheavy.config import AppConfig, build
from gorkheavy.core.pipeline import Pipeline
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin

# roster name -> Ollama model, as in the design document
MODELS = {
    "promptimizer": "granite4:350m",
    "qwen-small": "qwen3:0.6b",
    "qwen": "qwen2.5-coder:1.5b",
    "llama": "llama3.2:1b",
    "judge": "gemma3:1b",
}


def roster(url: str, **settings: Any) -> dict[str, Any]:
    """A config mapping with the design document's roster, every model served by the stand-in at ``url``."""
    data: dict[str, Any] = {
        "retry_backoff": 0.01,
        "memory": {"store": "none"},
        "models": [
            {
                "name": "promptimizer",
                "model": MODELS["promptimizer"],
                "role": "promptimizer",
                "base_url": url,
            },
            {
                "name": "qwen-small",
                "model": MODELS["qwen-small"],
                "role": "expert",
                "optimized_query": True,
                "base_url": url,
            },
            {"name": "qwen", "model": MODELS["qwen"], "role": "expert", "base_url": url},
            {"name": "llama", "model": MODELS["llama"], "role": "expert", "base_url": url},
            {"name": "judge", "model": MODELS["judge"], "role": "judge", "base_url": url},
        ],
    }
    data.update(settings)
    return data


@dataclass
class Backend:
    standin: OllamaStandin
    url: str

    def behavior(self, name: str) -> ModelBehavior:
        """The live behaviour of the model behind roster name ``name``."""
        return self.standin.behavior(MODELS[name])

    def chats(self, name: str) -> list[Any]:
        return self.standin.requests_for(path="/api/chat", model=MODELS[name])


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    standin = OllamaStandin({model: ModelBehavior() for model in MODELS.values()})
    async with standin.serve("127.0.0.1", 0) as url:
        yield Backend(standin, url)


@dataclass
class Wired:
    config: AppConfig
    pipeline: Pipeline
    client: OllamaClient
    store: ProcessStore


@pytest.fixture
async def wired(backend: Backend) -> AsyncIterator[Wired]:
    """A pipeline on the stand-in with memory in the process; tune it with ``rewire``."""
    config = build(roster(backend.url, timeouts={"promptimizer": 2, "expert": 2, "judge": 2}))
    session = make_session(connect_timeout=2)
    store = ProcessStore()
    client = OllamaClient(session)
    try:
        yield Wired(config, Pipeline(config.pipeline, client, store), client, store)
    finally:
        await session.close()
