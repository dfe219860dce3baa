"""The aiohttp application that answers as an Ollama server does (see the package docstring for the API)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final, NoReturn

from aiohttp import web

from ._golang import (
    MAX_DURATION,
    GoDecodeError,
    check_fields,
    decode_json,
    go_json,
    go_quote,
    json_kind,
    parse_duration,
    rfc3339nano,
)
from ._models import (
    Failure,
    ModelBehavior,
    ModelName,
    digest_for,
    guess_family,
    guess_parameter_size,
    parameter_count,
)
from ._schema import instance_for_schema

__all__ = ["OllamaStandin", "RecordedRequest"]

DEFAULT_VERSION: Final = "0.33.0"
DEFAULT_KEEP_ALIVE_NS: Final = 5 * 60 * 1_000_000_000
PULL_NOT_FOUND: Final = "pull model manifest: file does not exist"
MAX_QUEUE_ERROR: Final = "server busy, please try again.  maximum pending requests exceeded"  # sched.go

JSON_TYPE: Final = "application/json; charset=utf-8"
NDJSON_TYPE: Final = "application/x-ndjson"

_FOREVER: Final = MAX_DURATION
_log = logging.getLogger(__name__)
# aiohttp 3.9 added typed application keys; Debian 12's python3-aiohttp (3.8), which the lab's nodes run the
# stand-in on as the ollama image's CLI, takes a plain string key
_CLOSING: Final[Any] = web.AppKey("closing", asyncio.Event) if hasattr(web, "AppKey") else "closing"


@dataclass
class RecordedRequest:
    """One request the stand-in received. Times are ``time.monotonic()`` seconds."""

    method: str
    path: str
    body: Any
    model: str | None
    start: float
    end: float | None = None
    first_chunk: float | None = None
    status: int | None = None
    outcome: str = "pending"  # ok | error | failure:<mode> | cancelled
    raw: bytes = b""

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


class _Refusal(Exception):
    """An answer other than success: status and ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Model:
    name: str  # as registered ("gemma3:1b", "gemma3" -> shown as "gemma3:latest")
    parsed: ModelName
    behavior: ModelBehavior
    modified_ns: int
    slots: tuple[int, asyncio.Semaphore] | None = None  # (parallel, its semaphore)


# Go struct fields (json tag -> Go type) of the requests, from api/types.go.
_DURATION = "*api.Duration"
_THINK = "*api.ThinkValue"
_RAW = "json.RawMessage"
CHAT_FIELDS: Final = {
    "model": "string",
    "messages": "[]api.Message",
    "stream": "bool",
    "format": _RAW,
    "keep_alive": _DURATION,
    "tools": "api.Tools",
    "options": "map[string]interface {}",
    "think": _THINK,
    "truncate": "bool",
    "shift": "bool",
    "_debug_render_only": "bool",
    "logprobs": "bool",
    "top_logprobs": "int",
}
GENERATE_FIELDS: Final = {
    "model": "string",
    "prompt": "string",
    "suffix": "string",
    "system": "string",
    "template": "string",
    "context": "[]int",
    "stream": "bool",
    "raw": "bool",
    "format": _RAW,
    "keep_alive": _DURATION,
    "images": "[]api.ImageData",
    "options": "map[string]interface {}",
    "think": _THINK,
    "truncate": "bool",
    "shift": "bool",
    "_debug_render_only": "bool",
    "logprobs": "bool",
    "top_logprobs": "int",
}
EMBED_FIELDS: Final = {
    "model": "string",
    "input": "interface {}",
    "keep_alive": _DURATION,
    "truncate": "bool",
    "dimensions": "int",
    "options": "map[string]interface {}",
}
EMBEDDINGS_FIELDS: Final = {
    "model": "string",
    "prompt": "string",
    "keep_alive": _DURATION,
    "options": "map[string]interface {}",
}
PULL_FIELDS: Final = {
    "model": "string",
    "insecure": "bool",
    "username": "string",
    "password": "string",
    "stream": "bool",
    "name": "string",
}
DELETE_FIELDS: Final = {"model": "string", "name": "string"}
SHOW_FIELDS: Final = {
    "model": "string",
    "system": "string",
    "template": "string",
    "verbose": "bool",
    "options": "map[string]interface {}",
    "name": "string",
}

# api.Options / api.Runner fields by kind, for Options.FromMap.
_INT_OPTIONS: Final = frozenset(
    {
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "num_thread",
        "draft_num_predict",
        "main_gpu",
    }
)
_FLOAT_OPTIONS: Final = frozenset(
    {"top_p", "min_p", "typical_p", "temperature", "repeat_penalty", "presence_penalty", "frequency_penalty"}
)
_BOOL_OPTIONS: Final = frozenset({"use_mmap"})
_THINK_LEVELS: Final = ("high", "medium", "low", "max")
_WORDS: Final = re.compile(r"\S+\s*|\s+")


def _keep_alive(value: Any) -> int:
    """api.Duration.UnmarshalJSON: nanoseconds (``_FOREVER`` for negative values)."""
    if isinstance(value, bool):
        raise GoDecodeError("Unsupported type: 'bool'")
    if isinstance(value, int | float):
        return _FOREVER if value < 0 else int(value * 1_000_000_000)
    if isinstance(value, str):
        try:
            ns = parse_duration(value)
        except ValueError as exc:
            raise GoDecodeError(str(exc)) from None
        return _FOREVER if ns < 0 else ns
    go_type = "map[string]interface {}" if isinstance(value, dict) else "[]interface {}"
    raise GoDecodeError(f"Unsupported type: '{go_type}'")


def _think(value: Any) -> None:
    """api.ThinkValue.UnmarshalJSON."""
    if isinstance(value, bool):
        return
    if isinstance(value, str):
        if value not in _THINK_LEVELS:
            raise GoDecodeError(
                f"invalid think value: {go_quote(value)} "
                '(must be "high", "medium", "low", "max", true, or false)'
            )
        return
    raise GoDecodeError('think must be a boolean or string ("high", "medium", "low", "max", true, or false)')


_DIRECT: Final[Mapping[str, Callable[[Any], object]]] = {"keep_alive": _keep_alive, "think": _think}


def _requested_keep_alive(body: Mapping[str, Any]) -> int | None:
    """The request's keep_alive in nanoseconds (already validated by binding), None when not given."""
    value = body.get("keep_alive")
    return None if value is None else _keep_alive(value)


def _check_options(options: Mapping[str, Any] | None) -> None:
    """api.Options.FromMap's refusals (the server answers them with 500)."""
    for key, val in (options or {}).items():
        if val is None:
            continue
        if key in _INT_OPTIONS and (isinstance(val, bool) or not isinstance(val, int | float)):
            raise _Refusal(500, f"option {go_quote(key)} must be of type integer")
        if key in _FLOAT_OPTIONS and (isinstance(val, bool) or not isinstance(val, int | float)):
            raise _Refusal(500, f"option {go_quote(key)} must be of type float32")
        if key in _BOOL_OPTIONS and not isinstance(val, bool):
            raise _Refusal(500, f"option {go_quote(key)} must be of type boolean")
        if key == "stop":
            if not isinstance(val, list):
                raise _Refusal(500, f"option {go_quote(key)} must be of type array")
            if not all(isinstance(item, str) for item in val):
                raise _Refusal(500, f"option {go_quote(key)} must be of an array of strings")


def _tokens(text: str) -> int:
    return max(1, len(text.split()) * 4 // 3) if text else 0


def _short_hash(*parts: str) -> str:
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=4).hexdigest()


def _split(text: str, chunks: int | None) -> list[str]:
    if not text:
        return []
    if chunks is None:
        return _WORDS.findall(text)
    chunks = max(1, min(chunks, len(text)))
    bounds = [len(text) * i // chunks for i in range(chunks + 1)]
    return [text[bounds[i] : bounds[i + 1]] for i in range(chunks)]


def _conversation(kind: str, body: Mapping[str, Any]) -> tuple[str, str]:
    """(last user text, whole prompt) of a chat or generate request."""
    if kind == "generate":
        prompt = str(body.get("prompt") or "")
        return prompt, f"{body.get('system') or ''}\n{prompt}"
    last = ""
    parts = []
    for message in body.get("messages") or []:
        if not isinstance(message, Mapping):
            continue
        content = str(message.get("content") or "")
        parts.append(f"{message.get('role')}: {content}")
        if str(message.get("role", "")).lower() == "user":
            last = content
    return last, "\n".join(parts)


def _empty_answer(chat: bool, model: str, *, role: str = "assistant") -> dict[str, Any]:
    """The leading fields of a ChatResponse or GenerateResponse that says nothing."""
    if chat:
        return {"model": model, "created_at": rfc3339nano(), "message": {"role": role, "content": ""}}
    return {"model": model, "created_at": rfc3339nano(), "response": ""}


def _error_body(message: str) -> bytes:
    return go_json({"error": message})


class OllamaStandin:
    """An HTTP server speaking Ollama's native API; see the package docstring."""

    def __init__(
        self,
        models: Mapping[str, ModelBehavior | None] | Iterable[str] | None = None,
        *,
        version: str = DEFAULT_VERSION,
        default_behavior: ModelBehavior | None = None,
        allow_pull: bool = True,
        pull_errors: Mapping[str, str] | None = None,
        pull_delay: float = 0.0,
        record: bool = True,
        max_queue: int = 512,
    ) -> None:
        self.version = version
        self.default_behavior = default_behavior or ModelBehavior()
        self.allow_pull = allow_pull
        self.pull_errors: dict[str, str] = dict(pull_errors or {})
        self.pull_delay = pull_delay
        self.record = record
        self.max_queue = max_queue
        self.waiting = 0  # requests waiting for a slot of a model with ``parallel`` set
        self.requests: list[RecordedRequest] = []
        self.in_flight = 0
        self.peak_in_flight = 0
        self._models: dict[tuple[str, str, str, str], _Model] = {}
        self._loaded: dict[tuple[str, str, str, str], int] = {}  # key -> expires_at (time.time_ns)
        self._loading: dict[tuple[str, str, str, str], asyncio.Future[None]] = {}
        self._lock = threading.Lock()
        if isinstance(models, Mapping):
            for name, behavior in models.items():
                self.add_model(name, behavior)
        elif models is not None:
            for name in models:
                self.add_model(name)

    # -- models ------------------------------------------------------------------------------------

    def add_model(self, name: str, behavior: ModelBehavior | None = None) -> ModelBehavior:
        """Install ``name`` (shown by ``/api/tags``); without a behaviour it copies ``default_behavior``."""
        parsed = ModelName.parse(name)
        if not parsed.is_valid():
            raise ValueError(f"invalid model name: {name!r}")
        behavior = behavior if behavior is not None else dataclasses.replace(self.default_behavior)
        self._models[parsed.key] = _Model(name, parsed, behavior, time.time_ns())
        return behavior

    def remove_model(self, name: str) -> None:
        """Uninstall ``name`` (as ``DELETE /api/delete`` does); absent names are ignored."""
        self._forget(ModelName.parse(name).key)

    def _forget(self, key: tuple[str, str, str, str]) -> None:
        self._models.pop(key, None)
        self._loaded.pop(key, None)

    def behavior(self, name: str) -> ModelBehavior:
        """The live behaviour of ``name`` (KeyError when absent); change its fields to change the model."""
        entry = self._models.get(ModelName.parse(name).key)
        if entry is None:
            raise KeyError(name)
        return entry.behavior

    def configure(self, name: str, **changes: Any) -> ModelBehavior:
        """Set fields of ``name``'s behaviour, e.g. ``configure("gemma3:1b", failure="hang")``."""
        behavior = self.behavior(name)
        for key, value in changes.items():
            if not hasattr(behavior, key):
                raise AttributeError(f"ModelBehavior has no field {key!r}")
            setattr(behavior, key, value)
        behavior.__post_init__()
        return behavior

    @property
    def model_names(self) -> list[str]:
        return [m.parsed.display_shortest() for m in self._models.values()]

    def loaded_models(self) -> list[str]:
        now = time.time_ns()
        return [self._models[k].parsed.display_shortest() for k, exp in self._loaded.items() if exp > now]

    # -- recorded requests -------------------------------------------------------------------------

    def requests_for(self, path: str | None = None, model: str | None = None) -> list[RecordedRequest]:
        return [
            r
            for r in list(self.requests)
            if (path is None or r.path == path) and (model is None or r.model == model)
        ]

    def clear_requests(self) -> None:
        self.requests.clear()
        self.peak_in_flight = self.in_flight

    # -- serving -----------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app[_CLOSING] = asyncio.Event()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    @contextlib.asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on ``host:port`` (0: any free port) for the duration of the block; yields the base URL."""
        app = self.make_app()
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, backlog=2048)
            await site.start()
            bound = runner.addresses[0]
            url_host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
            yield f"http://{url_host}:{bound[1]}"
        finally:
            app[_CLOSING].set()
            await runner.cleanup()

    @contextlib.contextmanager
    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """Serve from a background thread with its own event loop (for synchronous code); yields the URL."""
        ready = threading.Event()
        box: dict[str, Any] = {}
        loop = asyncio.new_event_loop()

        async def main() -> None:
            stop = asyncio.Event()
            box["stop"] = stop
            try:
                async with self.serve(host, port) as url:
                    box["url"] = url
                    ready.set()
                    await stop.wait()
            except BaseException as exc:
                box["error"] = exc
                ready.set()
                raise

        def run() -> None:
            asyncio.set_event_loop(loop)
            with contextlib.suppress(BaseException):
                loop.run_until_complete(main())
            loop.close()

        thread = threading.Thread(target=run, name="ollama-standin", daemon=True)
        thread.start()
        if not ready.wait(30):
            raise RuntimeError("the Ollama stand-in did not start within 30 s")
        if "error" in box:
            raise box["error"]
        try:
            yield box["url"]
        finally:
            loop.call_soon_threadsafe(box["stop"].set)
            thread.join(30)

    # -- dispatch ----------------------------------------------------------------------------------

    _ROUTES: Final[Mapping[str, Mapping[str, str]]] = {
        "/": {"GET": "_root", "HEAD": "_root"},
        "/api/version": {"GET": "_version", "HEAD": "_version"},
        "/api/tags": {"GET": "_tags", "HEAD": "_tags"},
        "/api/ps": {"GET": "_ps"},
        "/api/show": {"POST": "_show"},
        "/api/chat": {"POST": "_chat"},
        "/api/generate": {"POST": "_generate"},
        "/api/embed": {"POST": "_embed"},
        "/api/embeddings": {"POST": "_embeddings"},
        "/api/pull": {"POST": "_pull"},
        "/api/delete": {"DELETE": "_delete"},
    }

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        start = time.monotonic()
        raw = await request.read() if request.body_exists else b""
        body: Any = None
        if raw:
            with contextlib.suppress(GoDecodeError):
                body = decode_json(raw)
        model = body.get("model") if isinstance(body, dict) and isinstance(body.get("model"), str) else None
        rec = RecordedRequest(request.method, request.path, body, model, start, raw=raw)
        if self.record:
            self.requests.append(rec)
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response = await self._route(request, rec)
        except _Refusal as refusal:
            if rec.outcome == "pending":
                rec.outcome = "error"
            response = self._json({"error": refusal.message}, refusal.status)
        except asyncio.CancelledError:
            if rec.outcome == "pending":
                rec.outcome = "cancelled"
            raise
        except ConnectionResetError:  # the client left mid-stream: Ollama stops generating, says nothing
            if rec.outcome == "pending":
                rec.outcome = "cancelled"
            raise asyncio.CancelledError from None
        except Exception as exc:  # a bug of the stand-in: say so the way Ollama reports internal errors
            _log.exception("Ollama stand-in failed on %s %s", request.method, rec.path)
            rec.outcome = "error"
            response = self._json({"error": f"ollama stand-in: {exc!r}"}, 500)
        finally:
            rec.end = time.monotonic()
            with self._lock:
                self.in_flight -= 1
        rec.status = response.status
        if rec.outcome == "pending":
            rec.outcome = "ok"
        return response

    async def _route(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        """gin's router: the handler, or 404 / 405 in plain text, or a redirect for a trailing slash."""
        methods = self._ROUTES.get(rec.path)
        if methods is None:
            if rec.path.endswith("/") and rec.path[:-1] in self._ROUTES:  # RedirectTrailingSlash
                status = 301 if request.method == "GET" else 307
                return web.Response(status=status, headers={"Location": rec.path[:-1]})
            return web.Response(status=404, text="404 page not found", content_type="text/plain")
        name = methods.get(request.method)
        if name is None:
            return web.Response(status=405, text="405 method not allowed", content_type="text/plain")
        handler: Callable[[web.Request, RecordedRequest], Awaitable[web.StreamResponse]] = getattr(self, name)
        return await handler(request, rec)

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _json(value: Any, status: int = 200) -> web.Response:
        response = web.Response(status=status, body=go_json(value))
        response.headers["Content-Type"] = JSON_TYPE
        return response

    @staticmethod
    def _bind(rec: RecordedRequest, struct: str, fields: Mapping[str, str]) -> dict[str, Any]:
        """gin's ShouldBindJSON into the Go struct: 400 with Go's message when it fails."""
        value = rec.body  # decoded once on arrival; None when absent, unreadable or null
        if value is None:
            try:
                value = decode_json(rec.raw)
            except GoDecodeError as exc:
                raise _Refusal(400, "missing request body" if exc.eof else exc.message) from None
        if value is None:
            return {}
        if not isinstance(value, dict):
            kind = json_kind(value)
            raise _Refusal(400, f"json: cannot unmarshal {kind} into Go value of type api.{struct}")
        try:
            return check_fields(struct, fields, value, _DIRECT)
        except GoDecodeError as exc:
            raise _Refusal(400, exc.message) from None

    def _lookup(self, name: ModelName) -> _Model | None:
        return self._models.get(name.key)

    @staticmethod
    def _model_ref(raw: str, *, missing: tuple[int, str]) -> ModelName:
        """parseAndValidateModelRef: ``missing`` is the endpoint's answer to an empty name."""
        stripped = raw.strip()
        if not stripped:
            raise _Refusal(*missing)
        name = ModelName.parse(stripped)
        if not name.is_valid():
            raise _Refusal(400, "invalid model name")
        return name

    async def _load(self, request: web.Request, entry: _Model, keep_alive: int | None) -> None:
        """Schedule the runner: wait ``load_latency`` when the model is not loaded, then extend its expiry."""
        key = entry.parsed.key
        now = time.time_ns()
        if self._loaded.get(key, 0) <= now and entry.behavior.load_latency > 0:
            pending = self._loading.get(key)
            if pending is None:
                pending = asyncio.get_running_loop().create_future()
                self._loading[key] = pending
                try:
                    await asyncio.sleep(entry.behavior.load_latency)
                finally:
                    self._loading.pop(key, None)
                    if not pending.done():
                        pending.set_result(None)
            else:
                await asyncio.shield(pending)
        duration = DEFAULT_KEEP_ALIVE_NS if keep_alive is None else keep_alive
        if duration == 0:
            self._loaded.pop(key, None)
        else:
            self._loaded[key] = time.time_ns() + min(duration, 292 * 365 * 86400 * 1_000_000_000)

    @classmethod
    async def _hang(cls, request: web.Request) -> NoReturn:
        """Never answer; when the server shuts down, drop the connection (as a killed server would)."""
        await request.app[_CLOSING].wait()
        cls._drop(request)
        raise asyncio.CancelledError

    @staticmethod
    def _drop(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()

    # -- simple endpoints --------------------------------------------------------------------------

    async def _root(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return web.Response(text="Ollama is running", content_type="text/plain", charset="utf-8")

    async def _version(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return self._json({"version": self.version})

    def _details(self, entry: _Model) -> dict[str, Any]:
        b = entry.behavior
        family = b.family or guess_family(entry.parsed)
        return {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": b.parameter_size or guess_parameter_size(entry.parsed),
            "quantization_level": b.quantization_level,
        }

    def _size(self, entry: _Model) -> int:
        b = entry.behavior
        if b.size is not None:
            return b.size
        params = parameter_count(b.parameter_size or guess_parameter_size(entry.parsed))
        return int(params * 0.6) + 25_000_000  # about Q4_K_M weights plus the rest of the GGUF

    async def _tags(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        models = []
        for entry in sorted(self._models.values(), key=lambda m: -m.modified_ns):
            display = entry.parsed.display_shortest()
            details = self._details(entry)
            details["context_length"] = entry.behavior.context_length
            models.append(
                {
                    "name": display,
                    "model": display,
                    "modified_at": rfc3339nano(entry.modified_ns),
                    "size": self._size(entry),
                    "digest": digest_for(display),
                    "details": details,
                    "capabilities": list(entry.behavior.effective_capabilities()),
                }
            )
        return self._json({"models": models})

    async def _ps(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        now = time.time_ns()
        running = []
        for key, expires in sorted(self._loaded.items(), key=lambda kv: -kv[1]):
            entry = self._models.get(key)
            if entry is None or expires <= now:
                continue
            display = entry.parsed.display_shortest()
            size = self._size(entry)
            running.append(
                {
                    "name": display,
                    "model": display,
                    "size": size,
                    "digest": digest_for(display),
                    "details": self._details(entry),
                    "expires_at": rfc3339nano(expires),
                    "size_vram": size,
                    "context_length": entry.behavior.context_length,
                }
            )
        return self._json({"models": running})

    async def _show(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = self._bind(rec, "ShowRequest", SHOW_FIELDS)
        raw_name = body.get("model") or body.get("name") or ""
        name = self._model_ref(raw_name, missing=(400, "model is required"))
        entry = self._lookup(name)
        if entry is None:
            raise _Refusal(404, f"model '{name.display_shortest()}' not found")
        b = entry.behavior
        display = entry.parsed.display_shortest()
        details = self._details(entry)
        family = details["family"]
        params = parameter_count(details["parameter_size"])
        template = "{{ if .System }}{{ .System }}\n{{ end }}{{ .Prompt }}"
        modelfile = (
            '# Modelfile generated by "ollama show"\n'
            "# To build a new Modelfile based on this, replace FROM with:\n"
            f"# FROM {display}\n\n"
            f"FROM /root/.ollama/models/blobs/sha256-{digest_for(display)}\n"
            f'TEMPLATE """{template}"""\n'
            f"PARAMETER num_ctx {b.context_length}\n"
        )
        show: dict[str, Any] = {
            "modelfile": modelfile,
            "parameters": f"{'num_ctx':<30} {b.context_length}",
            "template": template,
        }
        if body.get("system"):
            show["system"] = body["system"]
        show["details"] = details
        show["model_info"] = {
            "general.architecture": family,
            "general.file_type": 15,
            "general.parameter_count": params,
            "general.quantization_version": 2,
            f"{family}.context_length": b.context_length,
            f"{family}.embedding_length": b.embedding_length,
            "tokenizer.ggml.model": "gpt2",
        }
        show["capabilities"] = list(b.effective_capabilities())
        show["modified_at"] = rfc3339nano(entry.modified_ns)
        return self._json(show)

    async def _delete(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = self._bind(rec, "DeleteRequest", DELETE_FIELDS)
        raw_name = body.get("model") or body.get("name") or ""
        if not raw_name.strip():
            raise _Refusal(400, "model is required")
        name = ModelName.parse(raw_name.strip())
        if not name.is_valid():
            raise _Refusal(400, f"name {go_quote(raw_name)} is invalid")
        if self._lookup(name) is None:
            raise _Refusal(404, f"model '{raw_name}' not found")
        self._forget(name.key)
        return web.Response(status=200)

    async def _pull(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = self._bind(rec, "PullRequest", PULL_FIELDS)
        raw_name = body.get("model") or body.get("name") or ""
        name = self._model_ref(raw_name, missing=(400, "invalid model name"))
        display = name.display_shortest()
        error = self.pull_errors.get(display) or self.pull_errors.get(raw_name)
        if error is None and not self.allow_pull and self._lookup(name) is None:
            error = PULL_NOT_FOUND
        digest = "sha256:" + digest_for(display)
        total = 1_000_000
        steps: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if error is None:
            layer = {"status": f"pulling {digest[7:19]}", "digest": digest, "total": total}
            steps += [
                layer,
                {**layer, "completed": total // 2},
                {**layer, "completed": total},
                {"status": "verifying sha256 digest"},
                {"status": "writing manifest"},
                {"status": "success"},
            ]
        stream = body.get("stream") is not False
        if not stream:
            if self.pull_delay:
                await asyncio.sleep(self.pull_delay * len(steps))
            if error is not None:
                raise _Refusal(500, error)
            self._install_pulled(raw_name.strip(), name)
            return self._json(steps[-1])
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = NDJSON_TYPE
        await response.prepare(request)
        for step in steps:
            if self.pull_delay:
                await asyncio.sleep(self.pull_delay)
            await response.write(go_json(step) + b"\n")
        if error is not None:
            rec.outcome = "error"
            await response.write(_error_body(error) + b"\n")
        else:
            self._install_pulled(raw_name.strip(), name)
        await response.write_eof()
        return response

    def _install_pulled(self, raw_name: str, name: ModelName) -> None:
        if self._lookup(name) is None:
            self.add_model(raw_name)
        else:
            self._models[name.key].modified_ns = time.time_ns()

    # -- embeddings --------------------------------------------------------------------------------

    @staticmethod
    def _vector(seed: str, dims: int) -> list[float]:
        raw = hashlib.shake_256(seed.encode()).digest(dims * 2)
        values = [int.from_bytes(raw[i : i + 2], "big") / 32767.5 - 1.0 for i in range(0, dims * 2, 2)]
        norm = math.sqrt(sum(v * v for v in values)) or 1.0
        return [float(f"{v / norm:.8g}") for v in values]

    async def _embedding_failure(self, request: web.Request, entry: _Model, rec: RecordedRequest) -> None:
        failure = entry.behavior.take_failure()
        if failure == "none":
            return
        rec.outcome = f"failure:{failure}"
        b = entry.behavior
        await asyncio.sleep(b.latency)
        if failure in ("hang", "stall", "endless"):
            await self._hang(request)
        if failure == "disconnect":
            self._drop(request)
            raise asyncio.CancelledError
        if failure == "malformed":
            raise _Malformed
        raise _Refusal(b.error_status, b.error_message)

    async def _embed(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        start = time.perf_counter_ns()
        body = self._bind(rec, "EmbedRequest", EMBED_FIELDS)
        raw_name = body.get("model") or ""
        name = self._model_ref(raw_name, missing=(404, f"model '{raw_name}' not found"))
        given = body.get("input")
        if isinstance(given, str):
            inputs = [given] if given else []
        elif isinstance(given, list):
            if not all(isinstance(item, str) for item in given):
                raise _Refusal(400, "invalid input type")
            inputs = list(given)
        elif given is None:
            inputs = []
        else:
            raise _Refusal(400, "invalid input type")
        entry = self._lookup(name)
        if entry is None:
            raise _Refusal(404, f"model '{raw_name}' not found")
        _check_options(body.get("options"))
        keep_alive = _requested_keep_alive(body)
        await self._load(request, entry, keep_alive)
        loaded = time.perf_counter_ns()
        if not inputs:
            return self._json({"model": raw_name, "embeddings": []})
        try:
            await self._embedding_failure(request, entry, rec)
        except _Malformed:
            return web.Response(status=200, body=b'{"model":"' + raw_name.encode() + b'","embeddings":[[0.1,')
        b = entry.behavior
        if b.latency:
            await asyncio.sleep(b.latency)
        dims = b.embedding_length
        wanted = body.get("dimensions") or 0
        display = entry.parsed.display_shortest()
        vectors = []
        for text in inputs:
            vector = self._vector(f"{display}\x00{text}", dims)
            if 0 < wanted < dims:
                cut = vector[:wanted]
                norm = math.sqrt(sum(v * v for v in cut)) or 1.0
                vector = [float(f"{v / norm:.8g}") for v in cut]
            vectors.append(vector)
        end = time.perf_counter_ns()
        return self._json(
            {
                "model": raw_name,
                "embeddings": vectors,
                "total_duration": max(1, end - start),
                "load_duration": max(1, loaded - start),
                "prompt_eval_count": sum(_tokens(t) for t in inputs),
            }
        )

    async def _embeddings(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        body = self._bind(rec, "EmbeddingRequest", EMBEDDINGS_FIELDS)
        raw_name = body.get("model") or ""
        name = self._model_ref(raw_name, missing=(400, "model is required"))
        entry = self._lookup(name)
        if entry is None:
            raise _Refusal(404, f"model {go_quote(raw_name)} not found, try pulling it first")
        _check_options(body.get("options"))
        keep_alive = _requested_keep_alive(body)
        await self._load(request, entry, keep_alive)
        prompt = body.get("prompt") or ""
        if not prompt:
            return self._json({"embedding": []})
        try:
            await self._embedding_failure(request, entry, rec)
        except _Malformed:
            return web.Response(status=200, body=b'{"embedding":[0.1,')
        if entry.behavior.latency:
            await asyncio.sleep(entry.behavior.latency)
        display = entry.parsed.display_shortest()
        vector = self._vector(f"{display}\x00{prompt}", entry.behavior.embedding_length)
        return self._json({"embedding": vector})

    # -- inference ---------------------------------------------------------------------------------

    async def _chat(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return await self._infer(request, rec, "chat")

    async def _generate(self, request: web.Request, rec: RecordedRequest) -> web.StreamResponse:
        return await self._infer(request, rec, "generate")

    async def _infer(self, request: web.Request, rec: RecordedRequest, kind: str) -> web.StreamResponse:
        start = time.perf_counter_ns()
        chat = kind == "chat"
        if chat:
            body = self._bind(rec, "ChatRequest", CHAT_FIELDS)
        else:
            body = self._bind(rec, "GenerateRequest", GENERATE_FIELDS)
        top_logprobs = body.get("top_logprobs") or 0
        if not 0 <= top_logprobs <= 20:
            raise _Refusal(400, "top_logprobs must be between 0 and 20")
        raw_name: str = body.get("model") or ""
        missing = (400, "model is required") if chat else (404, f"model '{raw_name}' not found")
        name = self._model_ref(raw_name, missing=missing)
        entry = self._lookup(name)
        if entry is None:
            raise _Refusal(404, f"model '{raw_name}' not found")
        b = entry.behavior
        keep_alive = _requested_keep_alive(body)
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        prompt = body.get("prompt") or ""
        empty = not messages if chat else not prompt

        def bare(reason: str) -> web.Response:
            return self._json({**_empty_answer(chat, raw_name), "done": True, "done_reason": reason})

        if empty and keep_alive == 0:
            self._loaded.pop(entry.parsed.key, None)
            return bare("unload")
        templated = body.get("template") or body.get("system") or body.get("context")
        if not chat and body.get("raw") and templated:
            raise _Refusal(400, "raw mode does not support template, system, or context")

        caps = b.effective_capabilities()
        think = body.get("think")
        if "thinking" in caps:
            if think is None:
                think = True
        elif think is not None and think is not False:
            raise _Refusal(400, f"{go_quote(raw_name)} does not support thinking")
        wanted = ["completion"]
        if chat and body.get("tools"):
            wanted.append("tools")
        if not chat and body.get("suffix"):
            wanted.append("insert")
        missing_caps = [c for c in wanted if c not in caps]
        if "completion" in missing_caps:
            raise _Refusal(400, f"{go_quote(raw_name)} does not support {'chat' if chat else 'generate'}")
        if missing_caps:
            raise _Refusal(400, f"{entry.parsed.full()} does not support {chr(10).join(missing_caps)}")
        options = body.get("options") or {}
        _check_options(options)

        await self._load(request, entry, keep_alive)
        loaded = time.perf_counter_ns()
        if empty:
            return bare("load")
        failure = b.take_failure()
        if failure != "none":
            rec.outcome = f"failure:{failure}"

        fmt = body.get("format")
        if fmt is not None and not isinstance(fmt, dict) and fmt not in ("", "json"):
            raise _Refusal(
                500,
                f"invalid format: {go_quote(go_json(fmt).decode())}; "
                'expected "json" or a valid JSON Schema object',
            )

        if body.get("_debug_render_only"):
            _, whole = _conversation(kind, body)
            debug = {"rendered_template": whole}
            return self._json({**_empty_answer(chat, raw_name, role=""), "done": False, "_debug_info": debug})

        # what the model says
        display = entry.parsed.display_shortest()
        last, whole = _conversation(kind, body)
        content = self._reply_text(b, display, body, last, whole)
        stops = [s for s in options.get("stop") or [] if s]
        cut_points = [content.find(s) for s in stops if s in content]
        if cut_points:
            content = content[: min(cut_points)]
        thinking_text = ""
        if "thinking" in caps and think is not False and b.thinking is not None:
            thinking_text = b.thinking(body) if callable(b.thinking) else b.thinking
        pieces: list[tuple[str, str]] = [("thinking", p) for p in _split(thinking_text, b.chunks)]
        pieces += [("content", p) for p in _split(content, b.chunks)]
        done_reason = "stop"
        num_predict = options.get("num_predict")
        if isinstance(num_predict, int | float) and num_predict > 0 and len(pieces) > int(num_predict):
            pieces = pieces[: int(num_predict)]
            done_reason = "length"
        tool_calls = self._tool_calls(b, body, display) if chat and body.get("tools") else []
        logprobs = bool(body.get("logprobs"))

        stream = body.get("stream") is not False
        prompt_tokens = _tokens(whole)
        ctx = _Generation(
            raw_name=raw_name,
            chat=chat,
            pieces=pieces,
            tool_calls=tool_calls,
            done_reason=done_reason,
            start=start,
            loaded=loaded,
            prompt_tokens=prompt_tokens,
            context=None if chat or body.get("raw") else prompt_tokens + len(pieces),
            logprobs=logprobs,
            top_logprobs=int(top_logprobs),
        )
        async with self._slot(entry):
            ctx.slotted = time.perf_counter_ns()
            if stream or failure == "endless":  # a runaway server streams whatever it was asked
                return await self._stream(request, rec, b, failure, ctx)
            return await self._whole(request, rec, b, failure, ctx)

    @contextlib.asynccontextmanager
    async def _slot(self, entry: _Model) -> AsyncIterator[None]:
        """One of the model's ``parallel`` slots (OLLAMA_NUM_PARALLEL); 503 past ``max_queue`` waiting."""
        parallel = entry.behavior.parallel
        if parallel is None:
            yield
            return
        if entry.slots is None or entry.slots[0] != parallel:
            entry.slots = (parallel, asyncio.Semaphore(max(1, parallel)))
        semaphore = entry.slots[1]
        if semaphore.locked():
            if self.waiting >= self.max_queue:
                raise _Refusal(503, MAX_QUEUE_ERROR)
            self.waiting += 1
            try:
                await semaphore.acquire()
            finally:
                self.waiting -= 1
        else:
            await semaphore.acquire()
        try:
            yield
        finally:
            semaphore.release()

    @staticmethod
    def _reply_text(b: ModelBehavior, display: str, body: dict[str, Any], last: str, whole: str) -> str:
        fmt = body.get("format")
        if b.reply is not None:
            return b.reply(body) if callable(b.reply) else b.reply
        words = last.split()
        snippet = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
        text = f"{display} answer {_short_hash(display, whole)}: {snippet or '(empty prompt)'}"
        if fmt == "json":
            return json.dumps({"model": display, "answer": text})
        if isinstance(fmt, dict):
            return json.dumps(instance_for_schema(fmt, f"{display}\x00{whole}"))
        return text

    @staticmethod
    def _tool_calls(b: ModelBehavior, body: dict[str, Any], display: str) -> list[dict[str, Any]]:
        calls = b.tool_calls(body) if callable(b.tool_calls) else b.tool_calls
        out = []
        for i, call in enumerate(calls or []):
            function = dict(call.get("function", call))
            out.append(
                {
                    "id": call.get("id") or "call_" + _short_hash(display, str(i), repr(function)),
                    "function": {
                        "index": function.get("index", i),
                        "name": function.get("name", ""),
                        "arguments": function.get("arguments", {}),
                    },
                }
            )
        return out

    async def _first_token(
        self, request: web.Request, rec: RecordedRequest, b: ModelBehavior, failure: Failure
    ) -> int:
        """Wait as the model does before its first token (or fail there); returns when it came."""
        if failure == "hang":
            await self._hang(request)
        if b.latency:
            await asyncio.sleep(b.latency)
        if failure == "http_500":
            raise _Refusal(b.error_status, b.error_message)
        rec.first_chunk = time.monotonic()
        return time.perf_counter_ns()

    async def _stream(
        self, request: web.Request, rec: RecordedRequest, b: ModelBehavior, failure: Failure, g: _Generation
    ) -> web.StreamResponse:
        first = await self._first_token(request, rec, b, failure)
        response = web.StreamResponse(status=200)
        response.headers["Content-Type"] = NDJSON_TYPE
        await response.prepare(request)
        limit = b.failure_after_chunks if failure != "none" else None
        chunks: list[Callable[[], bytes]] = [
            functools.partial(g.chunk, kind, text) for kind, text in g.pieces
        ]
        if g.tool_calls:
            chunks.append(g.tool_chunk)
        if failure == "endless":
            await self._endless(response, chunks or [functools.partial(g.chunk, "content", " ")], b)
        if limit is not None:
            chunks = chunks[:limit]
        if b.chunk_delay:  # each chunk made when it is sent, so created_at tells when
            for i, make in enumerate(chunks):
                if i:
                    await asyncio.sleep(b.chunk_delay)
                await response.write(make())
        elif chunks:
            await response.write(b"".join(make() for make in chunks))
        if failure == "mid_stream_error":
            await response.write(_error_body(b.error_message) + b"\n")
        elif failure == "malformed":
            await response.write(b'{"model":"' + g.raw_name.encode() + b'","created_at":,"done":fals\n')
        elif failure == "disconnect":
            self._drop(request)
            raise asyncio.CancelledError
        elif failure == "stall":
            await self._hang(request)
        else:
            if b.chunk_delay and chunks:
                await asyncio.sleep(b.chunk_delay)
            await response.write(g.final(first))
        await response.write_eof()
        return response

    async def _whole(
        self, request: web.Request, rec: RecordedRequest, b: ModelBehavior, failure: Failure, g: _Generation
    ) -> web.StreamResponse:
        first = await self._first_token(request, rec, b, failure)
        produced = len(g.pieces) + (1 if g.tool_calls else 0)
        if failure != "none":
            produced = min(produced, b.failure_after_chunks)
        if b.chunk_delay and produced:
            await asyncio.sleep(b.chunk_delay * produced)
        if failure == "mid_stream_error":
            raise _Refusal(500, b.error_message)
        if failure == "malformed":
            response = web.Response(status=200, body=b'{"model":"' + g.raw_name.encode() + b'","created_at":')
            response.headers["Content-Type"] = JSON_TYPE
            return response
        if failure == "disconnect":
            self._drop(request)
            raise asyncio.CancelledError
        if failure == "stall":
            await self._hang(request)
        return self._json(g.whole(first))

    @staticmethod
    async def _endless(
        response: web.StreamResponse, chunks: list[Callable[[], bytes]], b: ModelBehavior
    ) -> NoReturn:
        """Send ``chunks`` round and round for ever (each write waits until the client has read enough)."""
        while True:
            for make in chunks:
                await response.write(make())
                if b.chunk_delay:
                    await asyncio.sleep(b.chunk_delay)
            await asyncio.sleep(0)  # a fast client never makes the writes wait: let other requests run


class _Malformed(Exception):
    pass


@dataclass
class _Generation:
    """One model answer, turned into Ollama's chunks."""

    raw_name: str
    chat: bool
    pieces: list[tuple[str, str]]
    tool_calls: list[dict[str, Any]]
    done_reason: str
    start: int
    loaded: int
    prompt_tokens: int
    context: int | None
    logprobs: bool
    top_logprobs: int
    slotted: int = 0  # when a slot of the runner was free (after any wait in the queue)

    def _logprobs(self, text: str) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"token": text, "logprob": -0.25}
        if self.top_logprobs:
            entry["top_logprobs"] = [
                {"token": text if i == 0 else f"{text.strip()}#{i}", "logprob": -0.25 - i}
                for i in range(self.top_logprobs)
            ]
        return [entry]

    def chunk(self, kind: str, text: str) -> bytes:
        now = rfc3339nano()
        out: dict[str, Any]
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text if kind == "content" else ""}
            if kind == "thinking":
                message["thinking"] = text
            out = {"model": self.raw_name, "created_at": now, "message": message, "done": False}
        else:
            out = {"model": self.raw_name, "created_at": now, "response": text if kind == "content" else ""}
            if kind == "thinking":
                out["thinking"] = text
            out["done"] = False
        if self.logprobs:
            out["logprobs"] = self._logprobs(text)
        return go_json(out) + b"\n"

    def tool_chunk(self) -> bytes:
        message = {"role": "assistant", "content": "", "tool_calls": self.tool_calls}
        out = {"model": self.raw_name, "created_at": rfc3339nano(), "message": message, "done": False}
        return go_json(out) + b"\n"

    def _metrics(self, first: int) -> dict[str, Any]:
        end = time.perf_counter_ns()
        metrics: dict[str, Any] = {
            "total_duration": max(1, end - self.start),
            "load_duration": max(1, self.loaded - self.start),
            "prompt_eval_count": self.prompt_tokens,
            "prompt_eval_duration": max(1, first - (self.slotted or self.loaded)),
        }
        if self.pieces:
            metrics["eval_count"] = len(self.pieces)
        metrics["eval_duration"] = max(1, end - first)
        return metrics

    def _context(self) -> list[int]:
        return [(i * 7919 + 13) % 32000 for i in range(self.context or 0)]

    def final(self, first: int) -> bytes:
        return go_json(self._final(first, "", "", [], None)) + b"\n"

    def whole(self, first: int) -> dict[str, Any]:
        content = "".join(t for k, t in self.pieces if k == "content")
        thinking = "".join(t for k, t in self.pieces if k == "thinking")
        logprobs = [lp for _, t in self.pieces for lp in self._logprobs(t)] if self.logprobs else None
        return self._final(first, content, thinking, self.tool_calls, logprobs)

    def _final(
        self,
        first: int,
        content: str,
        thinking: str,
        tool_calls: list[dict[str, Any]],
        logprobs: list[dict[str, Any]] | None,
    ) -> dict[str, Any]:
        """The last chunk (or the whole answer), fields in the order of ChatResponse / GenerateResponse."""
        out: dict[str, Any] = {"model": self.raw_name, "created_at": rfc3339nano()}
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if thinking:
                message["thinking"] = thinking
            if tool_calls:
                message["tool_calls"] = tool_calls
            out.update(message=message, done=True, done_reason=self.done_reason)
            if logprobs:
                out["logprobs"] = logprobs
            out.update(self._metrics(first))
            return out
        out["response"] = content
        if thinking:
            out["thinking"] = thinking
        out.update(done=True, done_reason=self.done_reason)
        if self.context is not None:
            out["context"] = self._context()
        out.update(self._metrics(first))
        if logprobs:
            out["logprobs"] = logprobs
        return out
