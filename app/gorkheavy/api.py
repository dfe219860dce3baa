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
    stream: bool | None = None  # null: false


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
    model_config = ConfigDict(extra="allow")  # other OpenAI parameters (user, logprobs ...) are ignored
    model: str = Field(min_length=1)
    messages: list[_OpenAIMessage] = Field(min_length=1)
    stream: bool | None = None  # null: false
    user: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    n: int | None = Field(default=None, ge=1)
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    response_format: dict[str, Any] | None = None


def _refuse_unsupported(body: _OpenAIBody) -> None:
    """What the ensemble cannot honour is refused by name, not silently ignored."""
    if body.n is not None and body.n > 1:
        raise ApiError(
            400, "n: the ensemble gives one answer per request; send n: 1 or leave it out", param="n"
        )
    for name in ("tools", "functions"):
        if getattr(body, name):
            raise ApiError(
                400,
                f"{name}: the ensemble answers with text only and cannot call tools; remove {name}",
                param=name,
            )
    kind = (body.response_format or {}).get("type", "text")
    if kind != "text":
        raise ApiError(
            400,
            f"response_format: type {kind!r} is not supported (the judge picks or writes free text); "
            "leave it out or use type 'text'",
            param="response_format",
        )


def _model_options(body: _OpenAIBody) -> dict[str, Any]:
    """The OpenAI sampling parameters as Ollama options for the experts and the judge's synthesis."""
    options: dict[str, Any] = {}
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None:
        options["num_predict"] = limit
    if body.stop:
        stops = [body.stop] if isinstance(body.stop, str) else body.stop
        if len(stops) > 4 or not all(stops):
            raise ApiError(400, "stop: up to 4 non-empty strings", param="stop")
        options["stop"] = stops
    for name in ("temperature", "top_p", "seed"):
        if (value := getattr(body, name)) is not None:
            options[name] = value
    return options


class CompletionRequest(BaseModel):
    """A validated ``POST /v1/chat/completions``: the question, its history, the strategy, and what the
    caller asks of the models (system/developer instructions, sampling options)."""

    model: str
    question: str
    history: list[Exchange]
    strategy: Strategy | None
    stream: bool
    include_usage: bool
    instructions: str = ""
    options: dict[str, Any] = Field(default_factory=dict)


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
        raise model_not_found(body.model, base_model)
    _refuse_unsupported(body)
    if len(body.messages) > max_messages:
        raise ApiError(
            400, f"messages: {len(body.messages)} messages, the limit is {max_messages}", param="messages"
        )
    chat: list[ChatMessage] = []
    instructions: list[str] = []
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
        elif message.role in ("system", "developer") and text.strip():
            instructions.append(text)
    if body.messages[-1].role != "user" or not chat or not chat[-1].content.strip():
        raise ApiError(400, "messages: the last message must be a non-empty user message", param="messages")
    options = data.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    return CompletionRequest(
        model=body.model,
        question=chat[-1].content,
        history=exchanges_from_chat(chat[:-1], turns),
        strategy=ids[body.model],
        stream=bool(body.stream),
        include_usage=include_usage,
        instructions="\n\n".join(instructions),
        options=_model_options(body),
    )


def model_not_found(model: str, base_model: str) -> ApiError:
    return ApiError(
        404,
        f"model '{model}' does not exist; use one of: {', '.join(model_ids(base_model))}",
        param="model",
        code="model_not_found",
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
    """The tokens the models reported (``prompt_eval_count``, ``eval_count``), summed over every call."""
    prompt = result.usage.get("prompt_tokens", 0)
    completion = result.usage.get("completion_tokens", 0)
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


def model_body(ident: str, created: int) -> dict[str, Any]:
    return {"id": ident, "object": "model", "created": created, "owned_by": "gorkheavy"}


def models_body(base: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_body(ident, created) for ident in model_ids(base)]}
