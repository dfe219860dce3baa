"""Routes of the web page: the static page and its read-only JSON endpoints.

    GET /                               the page (index.html)
    GET /ui/...                         its scripts, styles and vendored libraries
    GET /v1/ui/overview                 strategies, memory window, roster (also tells the page a token works)
    GET /v1/ui/sessions/{session}/memory  the exchanges of a session the next request will see
    GET /v1/ui/models                   per backend: health (as ``gorkheavy doctor``), loaded, recent latency
    GET /v1/ui/performance              per stage p50/p99 and winners over the recent window

Everything here reads; nothing changes state. The answers come from the pipeline's memory store, the same
backend checks as ``/readyz`` and ``doctor``, Ollama's ``/api/ps``, and the server's Prometheus registry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gorkheavy import api
from gorkheavy.backends.ollama import model_present
from gorkheavy.config import AppConfig
from gorkheavy.core.types import ModelCallError, Strategy
from gorkheavy.metrics import Metrics
from gorkheavy.runtime import Runtime, check_backends, check_store
from gorkheavy.web import stats

STATIC = Path(__file__).parent / "static"
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)


@dataclass(frozen=True, slots=True)
class Sources:
    """What the page's endpoints read: the config, the metrics and the running pipeline."""

    config: AppConfig
    metrics: Metrics
    runtime: Callable[[], Runtime]  # raises api.ApiError (503) while the server is starting


class _Cached:
    """One value recomputed at most every ``ttl`` seconds, however many pages poll it."""

    def __init__(self, ttl: float, compute: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self._ttl = ttl
        self._compute = compute
        self._lock = asyncio.Lock()
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._value is None or time.monotonic() - self._at > self._ttl:
                self._value = await self._compute()
                self._at = time.monotonic()
            return self._value


@dataclass
class _Page:
    sources: Sources
    window: stats.Window
    html: bytes
    csp: str
    models_cache: _Cached | None = field(default=None)


PAGE = web.AppKey("gorkheavy_page", _Page)


def _csp(html: str) -> str:
    """Only the server's own assets, plus the page's inline import map by its hash."""
    found = _IMPORT_MAP.search(html)
    hashes = ""
    if found:
        digest = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
        hashes = f" 'sha256-{digest}'"
    return (
        f"default-src 'none'; script-src 'self'{hashes}; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _json(data: Any) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


async def index(request: web.Request) -> web.StreamResponse:
    page = request.app[PAGE]
    return web.Response(
        body=page.html,
        content_type="text/html",
        charset="utf-8",
        headers={
            "Content-Security-Policy": page.csp,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


async def favicon(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


async def overview(request: web.Request) -> web.StreamResponse:
    page = request.app[PAGE]
    config = page.sources.config
    roster = config.pipeline.roster
    entries = ([("promptimizer", roster.promptimizer)] if roster.promptimizer else []) + [
        ("expert", spec) for spec in roster.experts
    ]
    entries.append(("judge", roster.judge))
    return _json(
        {
            "strategy": config.pipeline.strategy.value,
            "strategies": [s.value for s in Strategy],
            "memory_turns": config.pipeline.memory_turns,
            "max_message_chars": config.server.max_message_chars,
            "window_seconds": page.window.seconds,
            "roster": [
                {
                    "name": spec.name,
                    "role": role,
                    "model": spec.model,
                    "optimized_query": spec.optimized_query,
                }
                for role, spec in entries
            ],
        }
    )


async def memory(request: web.Request) -> web.StreamResponse:
    page = request.app[PAGE]
    session = request.match_info["session"]
    if not api.SESSION_PATTERN.match(session):
        raise api.ApiError(
            400,
            "session: use 1 to 128 letters, digits or . _ : @ -, starting with a letter or digit",
            param="session",
        )
    turns = page.sources.config.pipeline.memory_turns
    exchanges = await page.sources.runtime().store.recent(session, turns) if turns > 0 else []
    return _json(
        {
            "session": session,
            "turns": turns,
            "exchanges": [{"user": e.user, "answer": e.answer, "winner": e.winner} for e in exchanges],
        }
    )


async def _backends(page: _Page) -> dict[str, Any]:
    runtime = page.sources.runtime()
    checks = await check_backends(runtime.client, page.sources.config, limit_s=2.0)
    urls = sorted({check.spec.base_url for check in checks})

    async def loaded(url: str) -> tuple[str, ...] | str:
        try:
            return (await runtime.client.running(url, 2.0)).models
        except ModelCallError as exc:
            return exc.message

    running = dict(zip(urls, await asyncio.gather(*(loaded(url) for url in urls)), strict=True))
    store = await check_store(runtime.store)
    covered, delta = page.window.recent()
    figures = stats.model_figures(delta)
    backends = []
    for check in checks:
        listing = running[check.spec.base_url]
        entry = check.as_dict()
        entry["loaded"] = None if isinstance(listing, str) else model_present(check.spec.model, listing)
        entry["loaded_error"] = listing if isinstance(listing, str) else None
        entry["recent"] = figures.get(check.spec.name)
        backends.append(entry)
    return {
        "window_seconds": round(covered, 1),
        "backends": backends,
        "memory": store,
        "checked_at": time.time(),
    }


async def models(request: web.Request) -> web.StreamResponse:
    page = request.app[PAGE]
    if page.models_cache is None:
        page.models_cache = _Cached(2.0, lambda: _backends(page))
    return _json(await page.models_cache.get())


async def performance(request: web.Request) -> web.StreamResponse:
    page = request.app[PAGE]
    covered, delta = page.window.recent()
    return _json(
        {
            "window_seconds": round(covered, 1),
            "stages": stats.stage_figures(delta),
            "winners": stats.counts(delta, stats.WINNERS, "name"),
            "verdicts": stats.counts(delta, stats.VERDICTS, "source"),
        }
    )


def install(app: web.Application, sources: Sources) -> None:
    """Add the page and its endpoints to the server's application."""
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    window = stats.Window(sources.metrics.registry)
    app[PAGE] = _Page(sources, window, html.encode(), _csp(html))

    async def sampler(app: web.Application) -> AsyncIterator[None]:
        async def loop() -> None:
            while True:
                await asyncio.sleep(window.step)
                window.sample()

        task = asyncio.create_task(loop(), name="gorkheavy-ui-window")
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(sampler)
    app.router.add_get("/", index)
    app.router.add_get("/favicon.ico", favicon)  # what browsers ask for before reading the page's link
    app.router.add_static("/ui/", STATIC, append_version=False)
    app.router.add_get("/v1/ui/overview", overview)
    app.router.add_get("/v1/ui/sessions/{session}/memory", memory)
    app.router.add_get("/v1/ui/models", models)
    app.router.add_get("/v1/ui/performance", performance)
