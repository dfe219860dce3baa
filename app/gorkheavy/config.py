"""The configuration file: roster, pipeline settings, memory store and server limits, validated.

Found at ``--config PATH``, else ``$GORKHEAVY_CONFIG``, else the built-in defaults (the design document's
roster and in-cluster service names). Every validation error names the field and what to write instead.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gorkheavy.core.redact import redact
from gorkheavy.core.roster import (
    ModelSpec,
    PipelineSettings,
    ReplyLimit,
    ReplyLimits,
    Roster,
    Timeouts,
)
from gorkheavy.core.types import Strategy

CONFIG_ENV = "GORKHEAVY_CONFIG"
MEMORY_DSN_ENV = "GORKHEAVY_MEMORY_DSN"
OLLAMA_PORT = 11434

_NAME = re.compile(r"^[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?$")
_URL = re.compile(r"^https?://[^\s/?#]+(/[^\s?#]*)?$")
# Go's time.ParseDuration, which Ollama applies to a keep_alive string: a sign, then number+unit pairs
_GO_DURATION = re.compile(r"[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+")
_SECONDS = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


class ConfigError(Exception):
    """The configuration cannot be used; the message lists every problem and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelEntry(BaseModel):
    """One model of the roster, in the shape of the inventory's ``gorkheavy_models`` list."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(description="service name, also the default host of base_url")
    model: str = Field(min_length=1, description="Ollama model tag, e.g. qwen3:0.6b")
    role: Literal["promptimizer", "expert", "judge"]
    optimized_query: bool = False
    base_url: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    think: bool | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(
                "use lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
            )
        return value

    @field_validator("model")
    @classmethod
    def _model(cls, value: str) -> str:
        if value != value.strip() or any(ch.isspace() for ch in value):
            raise ValueError("an Ollama model tag has no spaces, e.g. 'llama3.2:1b'")
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        hint = "write an http(s) URL such as 'http://qwen:11434'"
        if not _URL.match(value):
            raise ValueError(hint)
        try:
            parts = urlsplit(value)
            host = parts.hostname
        except ValueError:
            raise ValueError(hint) from None
        if not host:
            raise ValueError(hint)
        port = parts.netloc.rpartition("]")[2].rpartition("@")[2].partition(":")
        if port[1]:
            digits = port[2]
            if not (digits.isascii() and digits.isdigit() and 1 <= int(digits) <= 65535):
                raise ValueError(f"the port must be a number from 1 to 65535 ({hint})")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _optimized_only_for_experts(self) -> ModelEntry:
        if self.optimized_query and self.role != "expert":
            raise ValueError(f"optimized_query applies to experts only; remove it from this {self.role}")
        return self

    def spec(self) -> ModelSpec:
        return ModelSpec(
            name=self.name,
            model=self.model,
            base_url=self.base_url or f"http://{self.name}:{OLLAMA_PORT}",
            optimized_query=self.optimized_query,
            options=dict(self.options),
            think=self.think,
        )


class TimeoutsConfig(_Strict):
    promptimizer: Annotated[float, Field(gt=0, le=3600)] = 60.0
    expert: Annotated[float, Field(gt=0, le=3600)] = 180.0
    judge: Annotated[float, Field(gt=0, le=3600)] = 120.0
    connect: Annotated[float, Field(gt=0, le=600)] = 5.0


class ReplyLimitConfig(_Strict):
    """The size cap of one stage's replies; a reply that reaches it is cut there and flagged too_long."""

    tokens: Annotated[int, Field(ge=0, le=1_000_000, description="options.num_predict; 0: none")]
    bytes: Annotated[int, Field(ge=256, le=64 * 1024 * 1024, description="UTF-8 bytes of text kept")]

    def limit(self) -> ReplyLimit:
        return ReplyLimit(tokens=self.tokens, bytes=self.bytes)


def _limit(default: ReplyLimit) -> Any:
    return Field(default_factory=lambda: ReplyLimitConfig(tokens=default.tokens, bytes=default.bytes))


class ReplyLimitsConfig(_Strict):
    promptimizer: ReplyLimitConfig = _limit(ReplyLimits().promptimizer)
    expert: ReplyLimitConfig = _limit(ReplyLimits().expert)
    judge: ReplyLimitConfig = _limit(ReplyLimits().judge)

    def limits(self) -> ReplyLimits:
        return ReplyLimits(self.promptimizer.limit(), self.expert.limit(), self.judge.limit())


class MemoryConfig(_Strict):
    turns: Annotated[int, Field(ge=0, le=100)] = 5
    store: Literal["sqlite", "postgresql", "none"] = "sqlite"
    path: str | None = Field(default=None, description="SQLite file; default under $XDG_STATE_HOME/gorkheavy")
    dsn: str | None = Field(default=None, description=f"PostgreSQL DSN; or set ${MEMORY_DSN_ENV}")
    max_sessions: Annotated[int, Field(ge=0, le=100_000_000)] = 10_000  # 0: no cap
    idle_expiry: Annotated[float, Field(ge=0)] = 30 * 24 * 3600.0  # seconds; 0: never
    prune_interval: Annotated[float, Field(ge=0, le=86_400)] = 60.0

    @model_validator(mode="after")
    def _store_settings(self) -> MemoryConfig:
        if self.store != "postgresql" and self.dsn:
            raise ValueError("dsn is only used with store: postgresql; set store: postgresql or remove dsn")
        if self.store != "sqlite" and self.path:
            raise ValueError("path is only used with store: sqlite; set store: sqlite or remove path")
        if self.dsn and not self.dsn.startswith(("postgresql://", "postgres://")):
            raise ValueError("dsn must start with postgresql:// (e.g. postgresql://user@db:5432/gorkheavy)")
        return self


class ServerConfig(_Strict):
    host: str = "0.0.0.0"  # the orchestrator serves its pod network
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    max_in_flight: Annotated[int, Field(ge=1, le=100_000)] = 512
    max_queue: Annotated[int, Field(ge=0, le=100_000)] = 64
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 256 * 1024
    max_message_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 16_000
    max_messages: Annotated[int, Field(ge=1, le=10_000)] = 200
    token_env: str = "GORKHEAVY_API_TOKEN"
    shutdown_timeout: Annotated[float, Field(ge=0, le=3600)] = 60.0
    # a client must send its request (headers and body) within this many seconds of connecting (or of
    # its previous request on the connection), else it is cut: 408 for a body, a closed connection for
    # headers
    read_timeout: Annotated[float, Field(gt=0, le=3600)] = 30.0
    # an event stream with nothing to say sends a comment this often (idle proxies cut silent streams)
    heartbeat_seconds: Annotated[float, Field(gt=0, le=3600)] = 15.0
    drain_seconds: Annotated[float, Field(ge=0, le=600)] = 0.0
    model_id: str = "gorkheavy"
    # the event loop of `serve`: uvloop's (auto: when installed, as it is with the package on Linux) or
    # asyncio's own
    event_loop: Literal["auto", "uvloop", "asyncio"] = "auto"


class CacheConfig(_Strict):
    """The answer cache: off by default; in this process, or in Redis when ``url`` is set."""

    enabled: bool = False
    ttl: Annotated[float, Field(gt=0, le=365 * 24 * 3600)] = 600.0
    url: str | None = Field(
        default=None, description="redis://, rediss:// or unix:// URL; none: this process"
    )
    max_entries: Annotated[int, Field(ge=1, le=10_000_000)] = 10_000

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use a Redis URL: redis://host:6379/0, rediss://... or unix:///path/redis.sock")
        return value


class HttpConfig(_Strict):
    max_connections: Annotated[int, Field(ge=0, le=100_000)] = 0
    # connections `serve` opens to each model server before it listens (0: none), kept idle in the pool
    warm_connections: Annotated[int, Field(ge=0, le=10_000)] = 0
    keepalive_seconds: Annotated[float, Field(gt=0, le=86_400)] = 15.0
    max_line_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024)] = 1024 * 1024


class FileConfig(_Strict):
    """The whole file. Give the roster either as ``models`` or as ``promptimizer``/``experts``/``judge``."""

    strategy: Strategy = Strategy.SELECT
    judge_votes: Annotated[int, Field(ge=1, le=9)] = 1
    retries: Annotated[int, Field(ge=0, le=10)] = 2
    retry_backoff: Annotated[float, Field(ge=0, le=60)] = 0.2
    keep_alive: str | int | float = "30m"
    models: list[ModelEntry] | None = None
    promptimizer: ModelEntry | None = None
    experts: list[ModelEntry] | None = None
    judge: ModelEntry | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    reply_limits: ReplyLimitsConfig = ReplyLimitsConfig()
    memory: MemoryConfig = MemoryConfig()
    server: ServerConfig = ServerConfig()
    http: HttpConfig = HttpConfig()
    cache: CacheConfig = CacheConfig()

    @field_validator("keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, value: Any) -> str | int | float:
        """A number of seconds (sent as a JSON number; negative: for ever) or a Go duration string."""
        hint = "use an Ollama duration such as '30m', '1h30m', '300s', or a number of seconds (-1: for ever)"
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise ValueError(hint)
        if isinstance(value, str):
            text = value.strip()
            if _SECONDS.fullmatch(text):
                number = float(text)
                return int(number) if number.is_integer() else number
            if not _GO_DURATION.fullmatch(text):
                raise ValueError(hint)
            return text
        if not math.isfinite(value):
            raise ValueError(hint)
        seconds: int | float = value
        return seconds

    @model_validator(mode="before")
    @classmethod
    def _roles_in_sections(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key, role in (("promptimizer", "promptimizer"), ("judge", "judge")):
            if isinstance(data.get(key), dict):
                data[key] = {"role": role, **data[key]}
        if isinstance(data.get("experts"), list):
            data["experts"] = [{"role": "expert", **e} if isinstance(e, dict) else e for e in data["experts"]]
        return data

    @model_validator(mode="after")
    def _one_roster(self) -> FileConfig:
        sections = self.promptimizer or self.experts or self.judge
        if self.models is not None and sections:
            raise ValueError(
                "give the roster once: either 'models' (a list with roles) "
                "or 'promptimizer'/'experts'/'judge'"
            )
        return self

    def entries(self) -> list[ModelEntry]:
        if self.models is not None:
            return list(self.models)
        if self.promptimizer or self.experts or self.judge:
            listed = [self.promptimizer] if self.promptimizer else []
            listed += self.experts or []
            listed += [self.judge] if self.judge else []
            return listed
        return default_entries()


def default_entries() -> list[ModelEntry]:
    """The design document's ensemble, served at its in-cluster service names."""
    return [
        ModelEntry(name="promptimizer", model="granite4:350m", role="promptimizer"),
        ModelEntry(name="qwen-small", model="qwen3:0.6b", role="expert", optimized_query=True, think=False),
        ModelEntry(name="qwen", model="qwen2.5-coder:1.5b", role="expert"),
        ModelEntry(name="llama", model="llama3.2:1b", role="expert"),
        ModelEntry(name="judge", model="gemma3:1b", role="judge"),
    ]


@dataclass(frozen=True, slots=True)
class AppConfig:
    """Everything the edges need, validated."""

    source: str
    pipeline: PipelineSettings
    memory: MemoryConfig
    server: ServerConfig
    http: HttpConfig
    warnings: tuple[str, ...]
    cache: CacheConfig

    def memory_dsn(self, environ: Mapping[str, str]) -> str | None:
        return environ.get(MEMORY_DSN_ENV) or self.memory.dsn

    def sqlite_path(self, environ: Mapping[str, str]) -> Path:
        if self.memory.path:
            return Path(self.memory.path).expanduser()
        return state_dir(environ) / "memory.db"


def state_dir(environ: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/gorkheavy, or ~/.local/state/gorkheavy."""
    base = environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gorkheavy"


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "literal[", "constrained-")):
            continue
        else:
            out += f".{part}" if out else part
    return out or "(top level)"


def _explain(error: ValidationError, data: Any) -> list[str]:
    lines = []
    for item in error.errors():
        where = _where(tuple(item["loc"]))
        kind = item["type"]
        if kind == "extra_forbidden":
            lines.append(f"{where}: unknown setting; remove it or check its spelling")
            continue
        if kind == "missing":
            lines.append(f"{where}: required; add it")
            continue
        message = item["msg"].removeprefix("Value error, ")
        got = item.get("input")
        shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
        lines.append(redact(f"{where}: {message}{shown}"))
    return lines


def _roster(entries: list[ModelEntry]) -> tuple[Roster, list[str]]:
    problems: list[str] = []
    warnings: list[str] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        if entry.name in seen:
            problems.append(f"models[{index}].name: '{entry.name}' is used twice; names must be unique")
        seen.add(entry.name)
        for extra in sorted(entry.model_extra or {}):
            warnings.append(f"models[{index}] ({entry.name}): ignoring unknown key '{extra}'")
    promptimizers = [e for e in entries if e.role == "promptimizer"]
    experts = [e for e in entries if e.role == "expert"]
    judges = [e for e in entries if e.role == "judge"]
    if len(promptimizers) > 1:
        names = ", ".join(e.name for e in promptimizers)
        problems.append(f"models: more than one promptimizer ({names}); keep one or none")
    if not experts:
        problems.append("models: no expert; add at least one entry with role: expert")
    if len(experts) > 26:
        problems.append(f"models: {len(experts)} experts; at most 26 can be judged")
    if len(judges) != 1:
        found = ", ".join(e.name for e in judges) or "none"
        problems.append(f"models: exactly one judge is needed (found {found}); set role: judge on one model")
    if problems:
        raise ConfigError("\n".join(problems))
    if not promptimizers and any(e.optimized_query for e in experts):
        warnings.append("no promptimizer in the roster: experts with optimized_query get the raw query")
    roster = Roster(
        promptimizer=promptimizers[0].spec() if promptimizers else None,
        experts=tuple(e.spec() for e in experts),
        judge=judges[0].spec(),
    )
    return roster, warnings


def build(data: Any, source: str = "<defaults>") -> AppConfig:
    """Validate parsed YAML (a mapping, or None for an empty file) into an AppConfig."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the file must hold a mapping of settings, not a {type(data).__name__}")
    try:
        parsed = FileConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}:\n  " + "\n  ".join(_explain(exc, data))) from None
    try:
        roster, warnings = _roster(parsed.entries())
    except ConfigError as exc:
        raise ConfigError(f"{source}:\n  " + str(exc).replace("\n", "\n  ")) from None
    if parsed.memory.store == "postgresql" and not parsed.memory.dsn and MEMORY_DSN_ENV not in os.environ:
        warnings.append(f"memory.store is postgresql but no memory.dsn; ${MEMORY_DSN_ENV} must be set")
    t = parsed.timeouts
    settings = PipelineSettings(
        roster=roster,
        strategy=parsed.strategy,
        memory_turns=parsed.memory.turns,
        timeouts=Timeouts(promptimizer=t.promptimizer, expert=t.expert, judge=t.judge, connect=t.connect),
        retries=parsed.retries,
        retry_backoff=parsed.retry_backoff,
        keep_alive=parsed.keep_alive,
        judge_votes=parsed.judge_votes,
        limits=parsed.reply_limits.limits(),
        cache_ttl=parsed.cache.ttl,
    )
    return AppConfig(
        source, settings, parsed.memory, parsed.server, parsed.http, tuple(warnings), parsed.cache
    )


def load(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> AppConfig:
    """Load ``path``, else ``$GORKHEAVY_CONFIG``, else the defaults."""
    chosen = os.fspath(path) if path is not None else environ.get(CONFIG_ENV)
    if not chosen:
        return build({})
    file = Path(chosen)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{chosen}: no such file; check --config or ${CONFIG_ENV}") from None
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{chosen}: not valid YAML{where}: {problem}") from None
    return build(data, chosen)
