"""Value types shared by the pipeline, its edges and the tests.

Everything here is immutable and free of I/O so results can be compared, serialised and logged safely.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of an Ollama chat request."""

    role: Role
    content: str

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True, slots=True)
class Exchange:
    """One question and the answer the ensemble gave to it (a unit of conversation memory)."""

    user: str
    answer: str
    winner: str = ""


class ErrorCause(enum.StrEnum):
    """Why a model call failed; used in results, logs and the errors-by-cause metric."""

    TIMEOUT = "timeout"
    CONNECTION = "connection"
    HTTP_STATUS = "http_status"
    MODEL_NOT_FOUND = "model_not_found"
    STREAM_ERROR = "stream_error"
    MALFORMED = "malformed"
    EMPTY = "empty"
    TOO_LONG = "too_long"  # the reply hit its stage's size cap: cut there and kept, flagged


class ModelCallError(Exception):
    """A model call that did not produce a usable reply.

    ``message`` is written for an operator: it names the backend and model and, where there is one, the fix.
    """

    def __init__(self, cause: ErrorCause, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class CallOptions:
    """What one model call asks for beside its messages.

    ``options``: Ollama model options for this call (over the roster entry's own); ``max_bytes``: the
    reply's text is cut at this many UTF-8 bytes and the call ends there (0: no cap); ``on_text``: called
    with each piece of the reply's text as it arrives.
    """

    options: Mapping[str, Any] = field(default_factory=dict)
    max_bytes: int = 0
    on_text: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class RequestOptions:
    """What a caller asks of one ensemble request beside the question (the OpenAI endpoint's parameters).

    ``instructions``: the caller's system/developer text, given to every expert and to the judge as
    context; ``options``: Ollama options for every expert call and the judge's synthesis (``num_predict``
    from ``max_tokens``, ``stop``, ``temperature``, ``top_p``, ``seed``); ``on_token``: called with each
    piece of the judge's synthesis as it is written (strategy synthesize).
    """

    instructions: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    on_token: Callable[[str], None] | None = None


@dataclass(frozen=True, slots=True)
class ModelReply:
    """The text a model produced and what the server said about producing it."""

    text: str
    done_reason: str = ""
    eval_count: int = 0
    total_duration_ns: int = 0
    prompt_eval_count: int = 0
    truncated: bool = False  # cut at a size cap (bytes here, tokens by the server: done_reason "length")


@dataclass(frozen=True, slots=True)
class Candidate:
    """What one expert contributed to a request (an answer or the reason it has none)."""

    name: str
    model: str
    query: Literal["optimized", "raw"]
    text: str = ""
    seconds: float = 0.0
    error: str = ""
    cause: ErrorCause | None = None

    @property
    def ok(self) -> bool:
        """Usable by the judge: an answer, possibly cut at the size cap (cause too_long)."""
        return self.cause in (None, ErrorCause.TOO_LONG) and bool(self.text.strip())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "query": self.query,
            "text": self.text,
            "seconds": round(self.seconds, 6),
            "error": self.error or None,
            "cause": self.cause.value if self.cause else None,
        }


class Strategy(enum.StrEnum):
    """How the judge turns candidates into the answer."""

    SELECT = "select"
    SYNTHESIZE = "synthesize"


class VerdictSource(enum.StrEnum):
    """Where the final choice came from, in order of preference."""

    STRUCTURED = "structured"  # the judge's JSON matched the schema
    PARSED = "parsed"  # the tolerant parser found the choice in free text
    FALLBACK = "fallback"  # the documented deterministic rule chose
    SINGLE = "single"  # only one candidate survived, no judge call needed
    SYNTHESIZED = "synthesized"  # the judge wrote the answer (strategy synthesize)


@dataclass(frozen=True, slots=True)
class EnsembleResult:
    """The outcome of one request through the pipeline."""

    session: str
    question: str
    answer: str
    winner: str
    strategy: Strategy
    verdict_source: VerdictSource
    candidates: tuple[Candidate, ...]
    timings: Mapping[str, float]
    optimized_query: str | None  # None when the promptimizer was skipped (no expert takes its rewrite)
    promptimizer_error: str = ""
    judge_error: str = ""
    judge_reason: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    memory_error: str = ""  # the answer could not be stored in the session's memory (it is still the answer)
    usage: Mapping[str, int] = field(default_factory=dict)  # prompt_tokens, completion_tokens of all calls
    cache: Literal["", "hit", "miss"] = ""  # what the answer cache said ("": no cache)

    @property
    def cached(self) -> bool:
        """The answer came from the answer cache: no model was called."""
        return self.cache == "hit"

    @property
    def fallback(self) -> bool:
        """True when the judge's choice could not be used and the deterministic rule decided."""
        return self.verdict_source is VerdictSource.FALLBACK

    def as_dict(self) -> dict[str, Any]:
        return {
            "session": self.session,
            "question": self.question,
            "answer": self.answer,
            "winner": self.winner,
            "strategy": self.strategy.value,
            "verdict_source": self.verdict_source.value,
            "fallback": self.fallback,
            "judge_error": self.judge_error or None,
            "judge_reason": self.judge_reason or None,
            "optimized_query": self.optimized_query,
            "promptimizer_error": self.promptimizer_error or None,
            "labels": dict(self.labels),
            "memory_error": self.memory_error or None,
            "usage": dict(self.usage),
            "cached": self.cached,
            "candidates": [c.as_dict() for c in self.candidates],
            "timings": {k: round(v, 6) for k, v in self.timings.items()},
        }


class AllExpertsFailedError(Exception):
    """No expert produced a usable answer; carries each expert's reason for the user."""

    def __init__(self, candidates: tuple[Candidate, ...]) -> None:
        self.candidates = candidates
        reasons = "; ".join(f"{c.name}: {c.error or 'empty answer'}" for c in candidates)
        super().__init__(f"no expert produced an answer ({reasons})")


class StageStatus(enum.StrEnum):
    START = "start"
    OK = "ok"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class StageEvent:
    """Progress of one request: a stage (or one model within it) started, finished or failed."""

    stage: Literal["promptimizer", "expert", "judge", "memory"]
    name: str
    status: StageStatus
    seconds: float = 0.0
    cause: ErrorCause | None = None
    detail: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "name": self.name,
            "status": self.status.value,
            "seconds": round(self.seconds, 6),
            "cause": self.cause.value if self.cause else None,
            "detail": self.detail or None,
        }
