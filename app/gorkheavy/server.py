"""The HTTP API (``gorkheavy serve``), on aiohttp.

Endpoints::

    POST /v1/chat               {"session", "message", "strategy"?, "stream"?}
                                -> answer, winner, candidates, per-stage timings (JSON), or
                                Server-Sent Events with "stream": true or Accept: text/event-stream
    POST /v1/chat/completions   OpenAI-compatible, streaming and not
    GET  /v1/models             OpenAI-compatible model list (and /v1/models/{id})
    GET  /healthz               liveness: the process answers
    GET  /readyz                readiness: every backend reachable with its model present, memory usable
    GET  /metrics               Prometheus text format
    GET  /                      the web page (gorkheavy.web), with its read-only JSON under /v1/ui/

Ensemble requests take a slot (``server.max_in_flight``); when all are busy up to ``server.max_queue`` wait,
and beyond that the answer is 503 with ``Retry-After``. On SIGTERM the server stops reporting ready, waits
``server.drain_seconds``, stops accepting, and lets in-flight requests finish for up to
``server.shutdown_timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import json
import logging
import math
import re
import signal
import statistics
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from gorkheavy import api
from gorkheavy import web as webui
from gorkheavy.backends.memory import MemoryStoreError
from gorkheavy.config import AppConfig
from gorkheavy.core.redact import for_clients, redact
from gorkheavy.core.text import repair
from gorkheavy.core.types import (
    AllExpertsFailedError,
    EnsembleResult,
    RequestOptions,
    StageEvent,
    StageStatus,
)
from gorkheavy.metrics import Metrics
from gorkheavy.runtime import BackendCheck, Runtime, check_backends, check_store, open_runtime

log = logging.getLogger("gorkheavy.server")

# The garbage collector's thresholds while serving (allocations net of frees before the youngest generation
# is examined; collections of one generation before the next is). A request holds its objects for the
# seconds its model calls take, so under a burst the young generations fill with objects that are alive,
# and at the default (700, 10, 10) the collector examines them again and again: in a 500-session run of
# benchmarks/ensemble.py it took about a third of the server's CPU and found fewer than ten objects of
# garbage. The server's own objects form no reference cycles in normal operation (a failure's exception
# and traceback may), so the collector runs seldom here and finds the same garbage.
GC_THRESHOLDS = (50_000, 20, 10)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Overloaded(Exception):
    pass


class Admission:
    """At most ``limit`` requests run; at most ``queue`` more wait; the rest are refused at once."""

    def __init__(self, limit: int, queue: int, metrics: Metrics) -> None:
        self._slots = asyncio.Semaphore(limit)
        self._queue = queue
        self._waiting = 0
        self._metrics = metrics
        self.in_flight = 0
        self._running: dict[object, float] = {}  # start time of each running request, oldest first

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            if self._waiting >= self._queue:
                self._metrics.rejected.inc()
                raise Overloaded
            self._waiting += 1
            self._metrics.waiting.inc()
            try:
                await self._slots.acquire()
            finally:
                self._waiting -= 1
                self._metrics.waiting.dec()
        else:
            await self._slots.acquire()
        self.in_flight += 1
        self._metrics.in_flight.inc()
        token = object()
        self._running[token] = time.monotonic()
        try:
            yield
        finally:
            del self._running[token]
            self.in_flight -= 1
            self._metrics.in_flight.dec()
            self._slots.release()

    def oldest_age(self) -> float:
        """Seconds the longest-running request has been running (0 when none is)."""
        first = next(iter(self._running.values()), None)
        return 0.0 if first is None else time.monotonic() - first


@dataclass
class ServerState:
    config: AppConfig
    environ: Mapping[str, str]
    metrics: Metrics
    admission: Admission
    token: bytes | None
    runtime: Runtime | None = None
    draining: bool = False
    started: int = field(default_factory=lambda: int(time.time()))
    recent_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=128))
    _ready_at: float = 0.0
    _ready: tuple[bool, dict[str, Any]] | None = None
    _ready_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def pipeline_runtime(self) -> Runtime:
        if self.runtime is None:
            raise api.ApiError(503, "the server is starting", kind="server_error")
        return self.runtime

    def note_duration(self, seconds: float) -> None:
        self.recent_seconds.append(seconds)

    def retry_after(self) -> str:
        """Seconds until a slot is likely free: the median of the last answers' durations, or (before
        any answer) how long the oldest running request has been at it; at least 1."""
        if self.recent_seconds:
            estimate = statistics.median(self.recent_seconds)
        else:
            estimate = self.admission.oldest_age()
        return str(max(1, math.ceil(estimate)))


STATE = web.AppKey("gorkheavy_state", ServerState)
_STREAM_OUTCOME = web.RequestKey("gorkheavy_stream_outcome", int)  # the status an event stream ended with


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data, ensure_ascii=False).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def _error(exc: api.ApiError, headers: Mapping[str, str] | None = None) -> web.Response:
    return _json(exc.body(), exc.status, {**exc.headers, **(headers or {})})


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _check_content_type(request: web.Request) -> None:
    """A body the API can read as JSON: not a form upload, not in a charset other than UTF-8."""
    if request.content_type.startswith("multipart/"):
        raise api.ApiError(415, f"Content-Type {request.content_type} is not accepted; send application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8", "us-ascii", "ascii"):
        raise api.ApiError(415, f"charset {charset} is not accepted; send the body as UTF-8 JSON")


async def _read_json(request: web.Request) -> object:
    _check_content_type(request)
    limit_s = request.app[STATE].config.server.read_timeout
    try:
        async with asyncio.timeout(limit_s):
            raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[STATE].config.server.max_body_bytes
        raise api.ApiError(413, f"the body is larger than {limit} bytes; send a shorter message") from None
    except TimeoutError:
        raise api.ApiError(408, f"the body did not arrive within {limit_s:g} s") from None
    except (web_protocol.RequestPayloadError, HttpProcessingError) as exc:
        cause = exc.__cause__ or exc
        detail = getattr(cause, "message", "") or str(cause).splitlines()[0]
        raise api.ApiError(400, f"the body could not be read ({detail or 'bad encoding'})") from None
    if not raw.strip():
        raise api.ApiError(400, "the body is empty; send a JSON object")
    try:
        data = json.loads(raw)
    except UnicodeDecodeError:
        raise api.ApiError(400, "the body is not UTF-8 text") from None
    except RecursionError:
        raise api.ApiError(400, "the body is JSON nested too deeply; send a flat JSON object") from None
    except json.JSONDecodeError as exc:
        raise api.ApiError(
            400, f"the body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    except ValueError as exc:  # e.g. an integer past Python's int-string limit (4,300 digits)
        raise api.ApiError(400, f"the body is not usable JSON: {str(exc).split(';')[0]}") from None
    # a lone UTF-16 surrogate escape (\ud83d) is valid JSON but no text: repair it as U+FFFD
    return repair(data) if _SURROGATE_ESCAPE.search(raw) else data


def _endpoint(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    status = 500
    try:
        response = await handler(request)
        # an event stream is 200 from its first byte: what counts is how it ended
        status = request.get(_STREAM_OUTCOME, response.status)
        return response
    except api.ApiError as exc:
        status = exc.status
        return _error(exc)
    except Overloaded:
        status = 503
        return _error(
            api.ApiError(
                503, "the server is at capacity; retry later", kind="overloaded_error", code="overloaded"
            ),
            {"Retry-After": state.retry_after()},
        )
    except web.HTTPException as exc:
        status = exc.status
        if exc.status < 400:
            raise
        message = exc.reason if exc.status != 405 else f"{request.method} is not allowed on {request.path}"
        kept = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _error(api.ApiError(exc.status, message), kept)
    except asyncio.CancelledError:
        status = 499
        if request.transport is None or request.transport.is_closing():
            log.info("client went away during %s %s; its request was cancelled", request.method, request.path)
        raise
    except Exception:
        log.exception("unexpected error on %s %s", request.method, request.path)
        return _error(
            api.ApiError(500, "internal error; see the server log", kind="server_error", code="internal")
        )
    finally:
        state.metrics.requests.labels(_endpoint(request), str(status)).inc()


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[STATE].token
    if token is not None and request.path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        # header bytes that are not UTF-8 arrive as surrogate escapes: compare the bytes as sent
        sent = given.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent, token):
            raise api.ApiError(
                401,
                "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
                kind="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)


async def _run(
    state: ServerState, request_run: Callable[[Runtime], Awaitable[EnsembleResult]]
) -> EnsembleResult:
    runtime = state.pipeline_runtime()
    try:
        result = await request_run(runtime)
    except AllExpertsFailedError as exc:
        state.metrics.failures.inc()
        log.warning("request failed: %s", exc)
        raise
    except MemoryStoreError as exc:
        message = for_clients(f"conversation memory failed: {exc}")
        raise api.ApiError(503, message, kind="server_error") from None
    state.metrics.on_result(result)
    state.note_duration(result.timings.get("total", 0.0))
    return result


async def chat(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    body = api.parse_chat(await _read_json(request), max_chars=state.config.server.max_message_chars)
    wants_events = body.stream or "text/event-stream" in request.headers.get("Accept", "")
    async with state.admission.slot():
        if wants_events:
            return await _chat_events(request, state, body)
        try:
            result = await _run(
                state, lambda rt: rt.pipeline.run(body.session, body.message, strategy=body.strategy)
            )
        except AllExpertsFailedError as exc:
            return _json(api.failure_body(exc), 502)
        return _json(api.public_result(result))


class _EventStream:
    """Server-Sent Events over one response; a vanished client ends the request's work."""

    def __init__(self, request: web.Request) -> None:
        self._request = request
        self.response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )

    async def open(self) -> None:
        await self.response.prepare(self._request)

    async def send(self, data: str, event: str | None = None) -> None:
        head = f"event: {event}\n" if event else ""
        await self.response.write(f"{head}data: {data}\n\n".encode())

    async def comment(self, text: str) -> None:
        await self.response.write(f": {text}\n\n".encode())


Run = Callable[[Runtime, Callable[[StageEvent], None], Callable[[str], None]], Awaitable[EnsembleResult]]


async def _pump(
    state: ServerState,
    run: Run,
    stream: _EventStream,
    on_stage: Callable[[StageEvent], Awaitable[None]],
    on_token: Callable[[str], Awaitable[None]],
) -> EnsembleResult:
    """Run the pipeline while forwarding its stage events and the judge's tokens; returns its result or
    raises its error. While nothing happens a comment goes out every ``server.heartbeat_seconds``, so an
    idle-timeout proxy does not cut the stream."""
    queue: asyncio.Queue[StageEvent | str | None] = asyncio.Queue()
    every = state.config.server.heartbeat_seconds

    async def produce() -> EnsembleResult:
        try:
            return await _run(state, lambda rt: run(rt, queue.put_nowait, queue.put_nowait))
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(produce())
    try:
        while True:
            try:
                async with asyncio.timeout(every):
                    item = await queue.get()
            except TimeoutError:
                await stream.comment("keep-alive")
                continue
            if item is None:
                break
            if isinstance(item, str):
                await on_token(item)
            else:
                await on_stage(item)
        return await task
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _stream_error(request: web.Request, exc: Exception) -> api.ApiError:
    """The error an event stream ends with (recorded as the request's outcome for the metrics)."""
    if isinstance(exc, AllExpertsFailedError):
        error = api.failure_error(exc)
    elif isinstance(exc, api.ApiError):
        error = exc
    else:
        log.error("unexpected error in the event stream of %s", request.path, exc_info=exc)
        error = api.ApiError(500, "internal error; see the server log", kind="server_error", code="internal")
    request[_STREAM_OUTCOME] = error.status
    return error


async def _chat_events(request: web.Request, state: ServerState, body: api.ChatBody) -> web.StreamResponse:
    stream = _EventStream(request)
    await stream.open()

    async def stage(event: StageEvent) -> None:
        await stream.send(json.dumps(api.public_event(event)), "stage")

    async def token(text: str) -> None:
        await stream.send(json.dumps({"text": text}, ensure_ascii=False), "token")

    try:
        try:
            result = await _pump(
                state,
                lambda rt, sink, tokens: rt.pipeline.run(
                    body.session,
                    body.message,
                    strategy=body.strategy,
                    on_event=sink,
                    ask=RequestOptions(on_token=tokens),
                ),
                stream,
                stage,
                token,
            )
        except Exception as exc:  # the stream ends with an error event, never silently
            error = _stream_error(request, exc)
            payload = api.failure_body(exc) if isinstance(exc, AllExpertsFailedError) else error.body()
            await stream.send(json.dumps(payload), "error")
        else:
            await stream.send(json.dumps(api.public_result(result), ensure_ascii=False), "result")
        await stream.response.write_eof()
    except ConnectionResetError:
        log.info("client went away during an event stream; its request was cancelled")
    return stream.response


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    server = state.config.server
    parsed = api.parse_completion(
        await _read_json(request),
        base_model=server.model_id,
        max_chars=server.max_message_chars,
        max_messages=server.max_messages,
        turns=state.config.pipeline.memory_turns,
    )
    ident = api.completion_id()
    async with state.admission.slot():
        if parsed.stream:
            return await _completion_events(request, state, parsed, ident)
        ask = RequestOptions(instructions=parsed.instructions, options=parsed.options)
        try:
            result = await _run(
                state,
                lambda rt: rt.pipeline.run(
                    "openai",
                    parsed.question,
                    history=parsed.history,
                    strategy=parsed.strategy,
                    remember=False,
                    ask=ask,
                ),
            )
        except AllExpertsFailedError as exc:
            raise api.failure_error(exc) from None
        return _json(api.completion_body(result, parsed.model, ident))


async def _completion_events(
    request: web.Request, state: ServerState, parsed: api.CompletionRequest, ident: str
) -> web.StreamResponse:
    stream = _EventStream(request)
    await stream.open()
    await stream.send(json.dumps(api.chunk_body(ident, parsed.model, {"role": "assistant", "content": ""})))

    async def stage(event: StageEvent) -> None:
        await stream.comment(f"{event.stage} {event.name} {event.status.value}")

    sent: list[str] = []  # the judge's synthesis as streamed so far

    async def token(text: str) -> None:
        if not sent:
            text = text.lstrip()  # the answer is the synthesis stripped
        if text:
            sent.append(text)
            await stream.send(json.dumps(api.chunk_body(ident, parsed.model, {"content": text})))

    try:
        try:
            result = await _pump(
                state,
                lambda rt, sink, tokens: rt.pipeline.run(
                    "openai",
                    parsed.question,
                    history=parsed.history,
                    strategy=parsed.strategy,
                    remember=False,
                    on_event=sink,
                    ask=RequestOptions(
                        instructions=parsed.instructions, options=parsed.options, on_token=tokens
                    ),
                ),
                stream,
                stage,
                token,
            )
        except Exception as exc:  # the stream ends with an error, never silently
            await stream.send(json.dumps(_stream_error(request, exc).body()))
        else:
            rest = _unsent(result.answer, "".join(sent))
            if rest:
                await stream.send(json.dumps(api.chunk_body(ident, parsed.model, {"content": rest})))
            await stream.send(json.dumps(api.chunk_body(ident, parsed.model, {}, "stop")))
            if parsed.include_usage:
                usage = api.usage_of(result)
                await stream.send(
                    json.dumps(api.chunk_body(ident, parsed.model, {}, usage=usage, empty_choices=True))
                )
        await stream.send("[DONE]")
        await stream.response.write_eof()
    except ConnectionResetError:
        log.info("client went away during an event stream; its request was cancelled")
    return stream.response


def _unsent(answer: str, streamed: str) -> str:
    """What of ``answer`` the client has not seen after ``streamed`` tokens: the rest of it, or (when the
    answer is not the streamed synthesis, e.g. the fallback after the judge failed midway) all of it."""
    if answer.startswith(streamed):
        return answer[len(streamed) :]
    if streamed.rstrip() == answer:
        return ""
    return ("\n\n" if streamed else "") + answer


async def models(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return _json(api.models_body(state.config.server.model_id, state.started))


async def model(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    ident = request.match_info["model"]
    if ident not in api.model_ids(state.config.server.model_id):
        raise api.model_not_found(ident, state.config.server.model_id)
    return _json(api.model_body(ident, state.started))


async def healthz(request: web.Request) -> web.StreamResponse:
    return _json({"status": "ok"})


async def _readiness(state: ServerState) -> tuple[bool, dict[str, Any]]:
    runtime = state.pipeline_runtime()
    checks: list[BackendCheck] = await check_backends(runtime.client, state.config, limit_s=2.0)
    memory = await check_store(runtime.store)  # any store failure makes the pod unready
    ok = all(c.ok for c in checks) and bool(memory["ok"])
    return ok, {"ready": ok, "backends": [c.as_dict() for c in checks], "memory": memory}


async def readyz(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.draining:
        return _json({"ready": False, "reason": "draining: the server is shutting down"}, 503)
    async with state._ready_lock:
        now = time.monotonic()
        if state._ready is None or now - state._ready_at > 2.0:
            state._ready = await _readiness(state)
            state._ready_at = time.monotonic()
        ok, payload = state._ready
    return _json(payload, 200 if ok else 503)


async def metrics(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    return web.Response(body=state.metrics.render(), headers={"Content-Type": "text/plain; version=0.0.4"})


def _log_failure(event: StageEvent) -> None:
    """Failed model calls go to the log (kubectl logs), with the cause and what the backend said."""
    if event.status is StageStatus.ERROR:
        cause = event.cause.value if event.cause else "unknown"
        log.warning(
            "%s %s failed (%s) after %.2fs: %s", event.stage, event.name, cause, event.seconds, event.detail
        )
    elif event.cause is not None:
        log.warning("%s %s: %s (%s)", event.stage, event.name, event.detail, event.cause.value)


class RedactingFormatter(logging.Formatter):
    """Log lines (tracebacks included) without credentials."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def create_app(config: AppConfig, environ: Mapping[str, str]) -> web.Application:
    server = config.server
    app_metrics = Metrics()
    token = environ.get(server.token_env, "").strip()
    state = ServerState(
        config=config,
        environ=environ,
        metrics=app_metrics,
        admission=Admission(server.max_in_flight, server.max_queue, app_metrics),
        token=token.encode() if token else None,
    )
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[_errors, _auth])
    app[STATE] = state

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        listeners = [app_metrics.on_event, _log_failure]
        async with open_runtime(
            config, environ, listeners=listeners, on_connection=app_metrics.on_connection
        ) as runtime:
            if config.http.warm_connections:
                urls = sorted({spec.base_url for spec in config.pipeline.roster.all_models()})
                limit = config.pipeline.timeouts.connect
                opened = await runtime.client.warm(urls, config.http.warm_connections, limit)
                log.info("opened %d of %d warm connections", opened, len(urls) * config.http.warm_connections)
            state.runtime = runtime
            yield
            state.runtime = None

    app.cleanup_ctx.append(runtime_ctx)
    app.router.add_post("/v1/chat", chat)
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{model}", model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    webui.install(app, webui.Sources(config, app_metrics, state.pipeline_runtime))
    return app


class _JsonErrorsHandler(web_protocol.RequestHandler):
    """aiohttp's connection handler, answering requests it cannot parse in the API's JSON error shape."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # part of a response went out already: only closing is left
            raise ConnectionError("the response was partly sent; the connection is closed")
        if status >= 500:
            log.error("unexpected error handling a request from %s", request.remote, exc_info=exc)
            error = api.ApiError(status, "internal error; see the server log", kind="server_error")
        else:
            log.info("refused a malformed request from %s: %s", request.remote, exc)
            reason = str(getattr(exc, "message", "") or message or "").strip()
            first = reason.splitlines()[0].rstrip(":") if reason else "bad request"
            error = api.ApiError(status, f"the request is not valid HTTP: {first}")
        response = _error(error)
        response.force_close()
        return response


class _JsonErrorsServer(web.Server):
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorsHandler(self, loop=self._loop, **self._kwargs)


class _Runner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _JsonErrorsServer
        return server


def make_runner(app: web.Application) -> web.AppRunner:
    """The runner ``serve`` uses: a client that disconnects cancels its handler, which frees its slot;
    a connection that sends no complete request within ``server.read_timeout`` is closed (and the rest
    of a body refused with 408 is waited for no longer than that either)."""
    server = app[STATE].config.server
    return _Runner(
        app,
        handle_signals=False,
        shutdown_timeout=server.shutdown_timeout,
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=server.read_timeout,
        lingering_time=min(server.read_timeout, 10.0),
    )


async def serve(
    config: AppConfig,
    environ: Mapping[str, str],
    *,
    host: str | None = None,
    port: int | None = None,
) -> int:
    """Run until SIGTERM or SIGINT, then drain. Returns the process exit code."""
    setup_logging()
    server = config.server
    app = create_app(config, environ)
    runner = make_runner(app)
    await runner.setup()
    site = web.TCPSite(runner, host or server.host, server.port if port is None else port, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{host or server.host}:{server.port if port is None else port}"
        sys.stderr.write(f"Error: cannot listen on {where}: {exc.strerror}\n")
        return 1
    gc.freeze()  # objects from start-up are never garbage: keep them out of every collection
    thresholds = gc.get_threshold()
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        return await _serve_until_stopped(app, runner, site)
    finally:
        gc.set_threshold(*thresholds)


async def _serve_until_stopped(app: web.Application, runner: web.AppRunner, site: web.TCPSite) -> int:
    config = app[STATE].config
    server = config.server
    addresses = _addresses(site)
    loop = asyncio.get_running_loop()
    log.info(
        "gorkheavy serving on %s (config %s, event loop %s)",
        ", ".join(addresses),
        config.source,
        type(loop).__module__.split(".")[0],
    )
    if app[STATE].token is not None:
        log.info("a bearer token is required on /v1/*")
    sys.stderr.flush()

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    state = app[STATE]
    state.draining = True
    log.info(
        "stopping: not ready any more, %d request(s) in flight, draining for up to %gs",
        state.admission.in_flight,
        server.drain_seconds + server.shutdown_timeout,
    )
    if server.drain_seconds:
        await asyncio.sleep(server.drain_seconds)
    await runner.cleanup()
    log.info("stopped")
    return 0


def _addresses(site: web.TCPSite) -> list[str]:
    listener = site._server  # the listening asyncio.Server
    sockets = getattr(listener, "sockets", None) or []
    out = []
    for sock in sockets:
        name = sock.getsockname()
        out.append(f"http://{name[0]}:{name[1]}")
    return out
