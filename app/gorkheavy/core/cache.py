"""The answer cache of the design document's "future enhancements": the final answer, reused by key.

The key is a SHA-256 of everything that decides the answer: the normalized question (Unicode NFKC, case
folded, whitespace collapsed), the memory window that reached the models and the judge, the roster (every
model's name, tag, server, options and query kind; the judge's votes), the strategy, and what the caller
asked of the models (instructions, sampling options). Two sessions share an entry only when all of that is
equal, so an answer never crosses sessions whose context differs. Only decided answers are stored (not the
deterministic fallback of a failed judge).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from gorkheavy.core.roster import PipelineSettings
from gorkheavy.core.types import Exchange, RequestOptions, Strategy

KEY_PREFIX = "gorkheavy:answer:v1:"

_SPACE = re.compile(r"\s+")


class AnswerCache(Protocol):
    """Where answers are kept: ``get`` gives what ``put`` stored under ``key`` until ``ttl`` seconds pass.

    Both may raise: the pipeline treats a failing cache as a miss, never as a failed request.
    """

    async def get(self, key: str) -> Mapping[str, Any] | None: ...

    async def put(self, key: str, value: Mapping[str, Any], ttl: float) -> None: ...


def normalize(question: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", question)).strip().casefold()


def answer_key(
    settings: PipelineSettings,
    question: str,
    window: Sequence[Exchange],
    strategy: Strategy,
    ask: RequestOptions,
) -> str:
    roster = settings.roster
    models = [
        [spec.name, spec.model, spec.base_url, spec.optimized_query, dict(spec.options), spec.think]
        for spec in roster.all_models()
    ]
    material = {
        "question": normalize(question),
        "window": [[e.user, e.answer] for e in window],
        "roster": models,
        "judge_votes": settings.judge_votes,
        "strategy": strategy.value,
        "instructions": ask.instructions,
        "options": dict(ask.options),
    }
    raw = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return KEY_PREFIX + hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()
