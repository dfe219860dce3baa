"""The validated shape of the ensemble as the pipeline needs it (config.py builds it from YAML)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gorkheavy.core.redact import redact
from gorkheavy.core.types import Strategy

# What Ollama accepts as keep_alive: seconds as a number (negative: for ever) or a Go duration string
KeepAlive = str | int | float


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model of the roster: who it is, where it is served and how to call it."""

    name: str
    model: str
    base_url: str
    optimized_query: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    think: bool | None = None

    @property
    def where(self) -> str:
        """``base_url`` as messages show it: without a password."""
        return redact(self.base_url)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.model} at {self.where})"


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds each stage may take (a stage's retries included)."""

    promptimizer: float = 60.0
    expert: float = 180.0
    judge: float = 120.0
    connect: float = 5.0


@dataclass(frozen=True, slots=True)
class ReplyLimit:
    """The size cap of one stage's replies: tokens (sent as ``options.num_predict``) and UTF-8 bytes."""

    tokens: int
    bytes: int


@dataclass(frozen=True, slots=True)
class ReplyLimits:
    """Per stage; the defaults fit the design's small models (1B-class, a few thousand tokens of context)."""

    promptimizer: ReplyLimit = ReplyLimit(tokens=256, bytes=4096)
    expert: ReplyLimit = ReplyLimit(tokens=1024, bytes=16384)
    judge: ReplyLimit = ReplyLimit(tokens=1024, bytes=16384)


@dataclass(frozen=True, slots=True)
class Roster:
    promptimizer: ModelSpec | None
    experts: tuple[ModelSpec, ...]
    judge: ModelSpec

    def all_models(self) -> tuple[ModelSpec, ...]:
        models = (self.promptimizer,) if self.promptimizer else ()
        return (*models, *self.experts, self.judge)


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    roster: Roster
    strategy: Strategy = Strategy.SELECT
    memory_turns: int = 5
    timeouts: Timeouts = field(default_factory=Timeouts)
    retries: int = 2
    retry_backoff: float = 0.2
    keep_alive: KeepAlive = "30m"
    judge_votes: int = 1
    limits: ReplyLimits = field(default_factory=ReplyLimits)
    cache_ttl: float = 600.0  # seconds an answer stays in the answer cache (when the pipeline has one)
