"""Request validation and response shapes of the HTTP API (no HTTP code here: server.py does the I/O).

Errors use one JSON shape on every endpoint, the OpenAI one, so OpenAI clients show them properly::

    {"error": {"message": "...", "type": "invalid_request_error",
               "param": "messages[1].content", "code": null}}
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gorkheavy.core.memory import exchanges_from_chat
from gorkheavy.core.redact import for_clients
from gorkheavy.core.types import (
    AllExpertsFailedError,
    Candidate,
    ChatMessage,
    EnsembleResult,
    Exchange,
    StageEvent,
    Strategy,
)

SESSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}")  # the whole id (fullmatch)


class ApiError(Exception):
    """A request the API refuses; ``status`` is the HTTP status, ``param`` the offending field."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        kind: str = "invalid_request_error",
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.kind = kind
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _from_validation(error: ValidationError) -> ApiError:
    problems = []
    for item in error.errors():
        where = _loc(tuple(item["loc"])) or "body"
        if item["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown field; remove it")
        elif item["type"] == "missing":
            problems.append(f"{where}: required field is missing")
        else:
            problems.append(f"{where}: {item['msg']}")
    first = _loc(tuple(error.errors()[0]["loc"]))
    return ApiError(400, "; ".join(problems), param=first or None)


class ChatBody(BaseModel):
    """``POST /v1/chat``."""

    model_config = ConfigDict(extra="forbid")

    session: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1)
    strategy: Strategy | None = None
    stream: bool = False


def parse_chat(data: object, *, max_chars: int) -> ChatBody:
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object with 'session' and 'message'")
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    if not SESSION_PATTERN.fullmatch(body.session):
        raise ApiError(
            400,
            "session: use 1 to 128 letters, digits or . _ : @ -, starting with a letter or digit",
            param="session",
        )
    if not body.message.strip():
        raise ApiError(400, "message: is blank; send the question text", param="message")
    if len(body.message) > max_chars:
        raise ApiError(
            400, f"message: {len(body.message)} characters, the limit is {max_chars}", param="message"
        )
    return body


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class _OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[_Part] | None = None


class _OpenAIBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p ... are accepted and ignored
    model: str = Field(min_length=1)
    messages: list[_OpenAIMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = None


class CompletionRequest(BaseModel):
    """A validated ``POST /v1/chat/completions``: the question, its history and the strategy."""

    model: str
    question: str
    history: list[Exchange]
    strategy: Strategy | None
    stream: bool
    include_usage: bool


def model_ids(base: str) -> dict[str, Strategy | None]:
    """The ids /v1/models lists: the ensemble with the configured strategy, and one per strategy."""
    return {base: None, **{f"{base}-{s.value}": s for s in Strategy}}


def parse_completion(
    data: object, *, base_model: str, max_chars: int, max_messages: int, turns: int
) -> CompletionRequest:
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object with 'model' and 'messages'")
    try:
        body = _OpenAIBody.model_validate(data)
    except ValidationError as exc:
        raise _from_validation(exc) from None
    ids = model_ids(base_model)
    if body.model not in ids:
        raise ApiError(
            404,
            f"model '{body.model}' does not exist; use one of: {', '.join(ids)}",
            param="model",
            code="model_not_found",
        )
    if len(body.messages) > max_messages:
        raise ApiError(
            400, f"messages: {len(body.messages)} messages, the limit is {max_messages}", param="messages"
        )
    chat: list[ChatMessage] = []
    for index, message in enumerate(body.messages):
        content = message.content
        if isinstance(content, list):
            texts = []
            for part_index, part in enumerate(content):
                if part.type != "text" or part.text is None:
                    raise ApiError(
                        400,
                        f"messages[{index}].content[{part_index}]: only text parts are supported "
                        f"(got type '{part.type}')",
                        param=f"messages[{index}].content",
                    )
                texts.append(part.text)
            content = "\n".join(texts)
        text = content or ""
        if len(text) > max_chars:
            raise ApiError(
                400,
                f"messages[{index}].content: {len(text)} characters, the limit is {max_chars}",
                param=f"messages[{index}].content",
            )
        if message.role in ("user", "assistant"):
            chat.append(ChatMessage(message.role, text))
    if body.messages[-1].role != "user" or not chat or not chat[-1].content.strip():
        raise ApiError(400, "messages: the last message must be a non-empty user message", param="messages")
    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return CompletionRequest(
        model=body.model,
        question=chat[-1].content,
        history=exchanges_from_chat(chat[:-1], turns),
        strategy=ids[body.model],
        stream=body.stream,
        include_usage=include_usage,
    )


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def public_candidates(candidates: Sequence[Candidate]) -> list[dict[str, Any]]:
    """Candidates as clients see them: errors without credentials, backend URLs or file paths."""
    out = []
    for candidate in candidates:
        data = candidate.as_dict()
        if data["error"]:
            data["error"] = for_clients(data["error"])
        out.append(data)
    return out


def public_result(result: EnsembleResult) -> dict[str, Any]:
    """The result of ``/v1/chat`` with its error texts as clients may see them."""
    data = result.as_dict()
    for key in ("judge_error", "promptimizer_error", "memory_error"):
        if data[key]:
            data[key] = for_clients(data[key])
    data["candidates"] = public_candidates(result.candidates)
    return data


def public_event(event: StageEvent) -> dict[str, Any]:
    data = event.as_dict()
    if data["detail"]:
        data["detail"] = for_clients(data["detail"])
    return data


def failure_error(exc: AllExpertsFailedError) -> ApiError:
    """No expert answered: 502, each expert's reason as clients may see it."""
    return ApiError(502, for_clients(str(exc)), kind="upstream_error", code="all_experts_failed")


def failure_body(exc: AllExpertsFailedError) -> dict[str, Any]:
    """The 502 body of ``/v1/chat``: the error and every candidate with its failure."""
    return {**failure_error(exc).body(), "candidates": public_candidates(exc.candidates)}


def _usage(result: EnsembleResult) -> dict[str, int]:
    """Word counts as a rough stand-in for tokens (the ensemble has no single tokenizer)."""
    prompt = len(result.question.split())
    completion = len(result.answer.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _extra(result: EnsembleResult) -> dict[str, Any]:
    return {
        "winner": result.winner,
        "verdict_source": result.verdict_source.value,
        "fallback": result.fallback,
        "strategy": result.strategy.value,
        "candidates": public_candidates(result.candidates),
        "timings": {k: round(v, 6) for k, v in result.timings.items()},
    }


def completion_body(result: EnsembleResult, model: str, ident: str) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.answer},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": _usage(result),
        "gorkheavy": _extra(result),
    }


def chunk_body(
    ident: str,
    model: str,
    delta: dict[str, Any],
    finish: str | None = None,
    *,
    usage: dict[str, int] | None = None,
    empty_choices: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": None,
        "choices": []
        if empty_choices
        else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }
    if usage is not None:
        body["usage"] = usage
    return body


def usage_of(result: EnsembleResult) -> dict[str, int]:
    return _usage(result)


def models_body(base: str, created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": ident, "object": "model", "created": created, "owned_by": "gorkheavy"}
            for ident in model_ids(base)
        ],
    }
