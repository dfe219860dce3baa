"""What a process needs to answer: one HTTP session, the Ollama client, the memory store, the pipeline.

``open_runtime`` is the single place these are created and closed, used by the CLI and the server alike.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from gorkheavy.backends.cache import CacheError, ProcessCache, RedisCache, open_cache
from gorkheavy.backends.memory import Store, open_store
from gorkheavy.backends.ollama import (
    ConnectionListener,
    OllamaClient,
    make_session,
    model_present,
    pull_hint,
)
from gorkheavy.config import AppConfig
from gorkheavy.core.pipeline import EventSink, Pipeline
from gorkheavy.core.redact import redact
from gorkheavy.core.roster import ModelSpec
from gorkheavy.core.types import ErrorCause, ModelCallError


class EventLoopUnavailable(Exception):
    """The configured event loop cannot be had; the message says what to do."""


LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def event_loop_factory(choice: str) -> LoopFactory | None:
    """How ``serve`` makes its event loop (``server.event_loop``): uvloop's for ``uvloop``, and for ``auto``
    when uvloop is installed; asyncio's own (None) otherwise. uvloop runs the same code with less CPU per
    request, which is what a burst of requests on one thread is bounded by."""
    if choice == "asyncio":
        return None
    try:
        import uvloop  # noqa: PLC0415 - optional: not on every platform
    except ImportError:
        if choice == "uvloop":
            raise EventLoopUnavailable(
                "server.event_loop is uvloop but uvloop is not installed; "
                "install it (pip install uvloop) or set server.event_loop: auto"
            ) from None
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory


@dataclass(frozen=True, slots=True)
class Runtime:
    config: AppConfig
    client: OllamaClient
    store: Store
    pipeline: Pipeline
    cache: ProcessCache | RedisCache | None = None


@asynccontextmanager
async def open_client(
    config: AppConfig, *, on_connection: ConnectionListener | None = None
) -> AsyncIterator[OllamaClient]:
    """The process's Ollama client on one pooled HTTP session, closed on exit."""
    session = make_session(
        connect_timeout=config.pipeline.timeouts.connect,
        max_connections=config.http.max_connections,
        keepalive_s=config.http.keepalive_seconds,
        on_connection=on_connection,
    )
    try:
        yield OllamaClient(session, max_line_bytes=config.http.max_line_bytes)
    finally:
        await session.close()


@asynccontextmanager
async def open_runtime(
    config: AppConfig,
    environ: Mapping[str, str],
    *,
    listeners: Sequence[EventSink] = (),
    on_connection: ConnectionListener | None = None,
) -> AsyncIterator[Runtime]:
    async with open_client(config, on_connection=on_connection) as client:
        store = await open_store(config, environ)
        try:
            cache = await open_cache(config)
        except CacheError:
            await store.close()
            raise
        try:
            pipeline = Pipeline(config.pipeline, client, store, listeners=listeners, cache=cache)
            yield Runtime(config, client, store, pipeline, cache)
        finally:
            if cache is not None:
                await cache.close()
            await store.close()


@dataclass(frozen=True, slots=True)
class BackendCheck:
    """Whether one model of the roster can be used, and if not, what to do about it."""

    role: Literal["promptimizer", "expert", "judge"]
    spec: ModelSpec
    ok: bool
    problem: str = ""
    fix: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.spec.name,
            "role": self.role,
            "model": self.spec.model,
            "base_url": self.spec.where,
            "ok": self.ok,
            "problem": self.problem or None,
            "fix": self.fix or None,
            "seconds": round(self.seconds, 6),
        }


def _fix_for(spec: ModelSpec, error: ModelCallError) -> str:
    host = spec.base_url.split("://", 1)[-1].split(":", 1)[0].split("/", 1)[0]
    if error.cause in (ErrorCause.CONNECTION, ErrorCause.TIMEOUT):
        return (
            f"check that {spec.where} is served: the Service '{host}' exists and its pod is ready "
            f"(kubectl get pods -l app={host}), or correct base_url for '{spec.name}' in the config"
        )
    return f"{spec.where} does not behave like an Ollama server; check base_url for '{spec.name}'"


async def check_backends(
    client: OllamaClient, config: AppConfig, *, limit_s: float = 5.0
) -> list[BackendCheck]:
    """Ask each distinct server for its models (GET /api/tags) and check every roster entry against them."""
    roster = config.pipeline.roster
    entries: list[tuple[Literal["promptimizer", "expert", "judge"], ModelSpec]] = []
    if roster.promptimizer:
        entries.append(("promptimizer", roster.promptimizer))
    entries += [("expert", spec) for spec in roster.experts]
    entries.append(("judge", roster.judge))

    urls = sorted({spec.base_url for _, spec in entries})

    async def probe(url: str) -> tuple[float, tuple[str, ...] | ModelCallError]:
        start = time.perf_counter()
        try:
            result = await client.tags(url, limit_s)
        except ModelCallError as exc:
            return time.perf_counter() - start, exc
        return time.perf_counter() - start, result.models

    answers = dict(zip(urls, await asyncio.gather(*(probe(url) for url in urls)), strict=True))
    checks = []
    for role, spec in entries:
        seconds, answer = answers[spec.base_url]
        if isinstance(answer, ModelCallError):
            checks.append(BackendCheck(role, spec, False, answer.message, _fix_for(spec, answer), seconds))
        elif not model_present(spec.model, answer):
            listed = ", ".join(answer) or "no models"
            checks.append(
                BackendCheck(
                    role,
                    spec,
                    False,
                    f"model '{spec.model}' is not on {spec.where} (it has {listed})",
                    f"pull it with: {pull_hint(spec)}",
                    seconds,
                )
            )
        else:
            checks.append(BackendCheck(role, spec, True, seconds=seconds))
    return checks


async def check_store(store: Store) -> dict[str, Any]:
    """Whether the memory store works: ``{"ok", "detail"}``, the failure's text redacted."""
    try:
        return {"ok": True, "detail": await store.check()}
    except Exception as exc:  # any store failure is reported, never raised
        return {"ok": False, "detail": redact(f"memory store failed: {exc}")}
