"""Model names as Ollama parses them, and what each stand-in model does (``ModelBehavior``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, NamedTuple, get_args

__all__ = [
    "DEFAULT_ERROR",
    "Failure",
    "ModelBehavior",
    "ModelName",
    "Reply",
]

Failure = Literal[
    "none", "http_500", "hang", "mid_stream_error", "disconnect", "malformed", "stall", "endless"
]
FAILURES: Final[tuple[str, ...]] = get_args(Failure)

#: A reply: fixed text, or a function of the parsed request body (the JSON object the client sent).
Reply = str | Callable[[dict[str, Any]], str]
ToolCalls = Sequence[Mapping[str, Any]] | Callable[[dict[str, Any]], Sequence[Mapping[str, Any]] | None]

#: The message errors.mdx shows for an error while the model runs.
DEFAULT_ERROR: Final = "an error was encountered while running the model"

DEFAULT_HOST: Final = "registry.ollama.ai"
DEFAULT_NAMESPACE: Final = "library"
DEFAULT_TAG: Final = "latest"


@dataclass
class ModelBehavior:
    """What one model answers, how fast, and how it fails. Mutable: change fields while the server runs.

    reply: fixed text or ``f(request_body) -> str``; ``None`` derives a deterministic answer from the
        request (naming the model, so ensemble members are told apart), or, when the request has ``format``,
        JSON (``{"model": ..., "answer": ...}`` for ``"json"``, an instance of the schema otherwise). A given
        reply is sent as it is, also with ``format``: a test that sets one decides what the model "says".
    thinking: thinking text (or function) for ``think``; setting it gives the model the ``thinking``
        capability, and, as in Ollama, a thinking model thinks unless the request says ``"think": false``.
    tool_calls: tool calls (``[{"function": {"name": ..., "arguments": {...}}}]``) or ``f(request_body)``,
        sent in the chat reply when the request has ``tools``.
    latency: seconds from the request to the first token (``prompt_eval_duration``). ``load_latency`` is
        added once when the model is not loaded (``load_duration``, as in ``/api/ps``).
    chunk_delay: seconds between streamed chunks; ``chunks``: how many pieces the content is cut into
        (``None``: one per word, as tokens come).
    parallel: how many requests the model answers at once (``OLLAMA_NUM_PARALLEL``; Ollama's default is 1);
        the others wait their turn (only ``total_duration`` shows the wait), and past the stand-in's
        ``max_queue`` waiting requests the answer is 503 "server busy". ``None``: no limit.
    failure: ``none``; ``http_500`` (status ``error_status``, ``{"error": error_message}`` after
        ``latency``); ``hang`` (never answers); ``mid_stream_error`` (``failure_after_chunks`` chunks, then an
        NDJSON error line); ``disconnect`` (closes the connection after those chunks); ``malformed`` (a line
        that is not JSON after those chunks); ``stall`` (those chunks, then nothing, never finishing);
        ``endless`` (a runaway backend: the answer's chunks over and over, as fast as the client reads
        them, never the final chunk; ``num_predict`` and ``stop`` do not end it; streamed also when the
        request says ``"stream": false``).
        ``failure_count``: fail only the next N inference requests, then behave (``None``: all of them).
    capabilities: as ``/api/show`` reports them; ``None`` means ``completion`` and ``tools`` (+ ``thinking``).
    """

    reply: Reply | None = None
    thinking: Reply | None = None
    tool_calls: ToolCalls | None = None
    latency: float = 0.0
    chunk_delay: float = 0.0
    chunks: int | None = None
    load_latency: float = 0.0
    parallel: int | None = None
    failure: Failure = "none"
    failure_after_chunks: int = 2
    failure_count: int | None = None
    error_message: str = DEFAULT_ERROR
    error_status: int = 500
    capabilities: tuple[str, ...] | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization_level: str = "Q4_K_M"
    size: int | None = None
    context_length: int = 4096
    embedding_length: int = 384
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.failure not in FAILURES:
            raise ValueError(f"failure must be one of {', '.join(FAILURES)}, not {self.failure!r}")

    def effective_capabilities(self) -> tuple[str, ...]:
        if self.capabilities is not None:
            return tuple(self.capabilities)
        caps = ("completion", "tools")
        return (*caps, "thinking") if self.thinking is not None else caps

    def take_failure(self) -> Failure:
        """The failure mode for the request starting now (counting down ``failure_count``)."""
        if self.failure == "none":
            return "none"
        if self.failure_count is None:
            return self.failure
        if self.failure_count <= 0:
            return "none"
        self.failure_count -= 1
        return self.failure


_VALID_FIRST = re.compile(r"[A-Za-z0-9_]")


def _valid_part(kind: str, s: str) -> bool:
    """``isValidPart`` of types/model/name.go."""
    limit = 350 if kind == "host" else 80
    if not 1 <= len(s) <= limit:
        return False
    if not _VALID_FIRST.fullmatch(s[0]) or not s.isascii():
        return False
    for ch in s[1:]:
        if ch in "_-":
            continue
        if ch == ".":
            if kind == "namespace":
                return False
            continue
        if ch == ":":
            if kind != "host":
                return False
            continue
        if not (ch.isalnum() or ch == "_"):
            return False
    return True


class ModelName(NamedTuple):
    """A model name split as ``model.ParseName`` does, with Ollama's defaults filled in."""

    host: str
    namespace: str
    model: str
    tag: str

    @classmethod
    def parse(cls, raw: str) -> ModelName:
        s = raw
        tag = ""
        if s.rfind(":") > s.rfind("/"):
            s, tag = s.rsplit(":", 1)
            tag = tag or "!MISSING!"
        host = namespace = ""
        if "/" in s:
            s, model = s.rsplit("/", 1)
            model = model or "!MISSING!"
            if "/" in s:
                s, namespace = s.rsplit("/", 1)
                namespace = namespace or "!MISSING!"
                host = s.split("://", 1)[-1] or "!MISSING!"
            else:
                namespace = s or "!MISSING!"
        else:
            model = s
        return cls(host or DEFAULT_HOST, namespace or DEFAULT_NAMESPACE, model, tag or DEFAULT_TAG)

    def is_valid(self) -> bool:
        return (
            _valid_part("host", self.host)
            and _valid_part("namespace", self.namespace)
            and _valid_part("model", self.model)
            and _valid_part("tag", self.tag)
        )

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Ollama finds models case-insensitively."""
        return (self.host.lower(), self.namespace.lower(), self.model.lower(), self.tag.lower())

    def display_shortest(self) -> str:
        if self.host.lower() != DEFAULT_HOST:
            return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"
        if self.namespace.lower() != DEFAULT_NAMESPACE:
            return f"{self.namespace}/{self.model}:{self.tag}"
        return f"{self.model}:{self.tag}"

    def full(self) -> str:
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"


_SIZE_TAG = re.compile(r"(?:^|[-_])(\d+(?:\.\d+)?)([bm])(?:$|[-_])", re.IGNORECASE)
_FAMILY = re.compile(r"^([a-z]+[0-9]*)", re.IGNORECASE)


def guess_parameter_size(name: ModelName) -> str:
    match = _SIZE_TAG.search(name.tag) or _SIZE_TAG.search(name.model)
    if match:
        return f"{match.group(1)}{match.group(2).upper()}"
    return "7.2B"


def guess_family(name: ModelName) -> str:
    match = _FAMILY.match(name.model)
    if not match:
        return "llama"
    family = match.group(1).lower()
    return next((known for known in ("llama", "granite") if family.startswith(known)), family)


def parameter_count(size: str) -> int:
    number = float(size[:-1])
    return int(number * (1_000_000 if size[-1].upper() == "M" else 1_000_000_000))


def digest_for(name: str) -> str:
    return hashlib.sha256(f"ollama-standin:{name}".encode()).hexdigest()
