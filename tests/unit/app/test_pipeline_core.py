"""The pipeline's own rules with scripted models (no HTTP): retries, timeouts, memory, purity of the core."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from gorkheavy.backends.memory import ProcessStore
from gorkheavy.config import build
from gorkheavy.core.pipeline import Pipeline
from gorkheavy.core.roster import KeepAlive, ModelSpec
from gorkheavy.core.types import (
    AllExpertsFailedError,
    CallOptions,
    ChatMessage,
    ErrorCause,
    Exchange,
    ModelCallError,
    ModelReply,
    VerdictSource,
)


class Scripted:
    """A ModelCaller whose models answer from a script: text ("raw:..." verbatim), an exception, a delay."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[str] = []

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        keep_alive: KeepAlive,
        fmt: dict[str, Any] | None = None,
        call: CallOptions | None = None,
    ) -> ModelReply:
        self.calls.append(spec.name)
        steps = self.script.get(spec.name, ["ok"])
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if isinstance(step, float):
            await asyncio.sleep(step)
            step = "late"
        if isinstance(step, Exception):
            raise step
        if step.startswith("raw:"):
            return ModelReply(step.removeprefix("raw:"))
        if fmt is not None and step == "ok":
            return ModelReply('{"best": "A", "reason": "first"}')
        return ModelReply(f"{spec.name}: {step}")


def settings(**extra: Any) -> Any:
    data = {
        "retries": 2,
        "retry_backoff": 0.001,
        "models": [
            {"name": "p", "model": "p:1", "role": "promptimizer"},
            {"name": "e1", "model": "e:1", "role": "expert", "optimized_query": True},
            {"name": "e2", "model": "e:2", "role": "expert"},
            {"name": "j", "model": "j:1", "role": "judge"},
        ],
        **extra,
    }
    return build(data).pipeline


def refused() -> ModelCallError:
    return ModelCallError(ErrorCause.CONNECTION, "refused")


async def test_connection_errors_are_retried_up_to_the_limit() -> None:
    caller = Scripted({"e2": [refused(), refused(), "ok"]})
    result = await Pipeline(settings(), caller, ProcessStore()).run("s", "q")
    assert caller.calls.count("e2") == 3
    assert next(c for c in result.candidates if c.name == "e2").ok


async def test_retries_stop_at_the_limit_and_other_errors_are_not_retried() -> None:
    caller = Scripted({"e2": [refused()], "e1": [ModelCallError(ErrorCause.HTTP_STATUS, "HTTP 500")]})
    with pytest.raises(AllExpertsFailedError):
        await Pipeline(settings(), caller, ProcessStore()).run("s", "q")
    assert caller.calls.count("e2") == 3  # 1 + 2 retries
    assert caller.calls.count("e1") == 1


async def test_a_stage_timeout_covers_its_retries() -> None:
    caller = Scripted({"e2": [5.0]})
    pipeline = Pipeline(settings(timeouts={"expert": 0.05}), caller, ProcessStore())
    result = await pipeline.run("s", "q")
    e2 = next(c for c in result.candidates if c.name == "e2")
    assert e2.cause is ErrorCause.TIMEOUT
    assert result.verdict_source is VerdictSource.SINGLE


async def test_empty_answers_do_not_count_and_thinking_is_stripped() -> None:
    caller = Scripted({"e1": ["raw:<think>hmm</think>"], "e2": ["raw:<think>x</think>\nreal answer"]})
    result = await Pipeline(settings(), caller, ProcessStore()).run("s", "q")
    e1 = next(c for c in result.candidates if c.name == "e1")
    assert e1.cause is ErrorCause.EMPTY
    assert result.answer == "real answer"
    assert result.verdict_source is VerdictSource.SINGLE


async def test_memory_is_written_only_on_success_and_bounded() -> None:
    store = ProcessStore()
    pipeline = Pipeline(settings(memory={"store": "none", "turns": 2}), Scripted({}), store)
    for i in range(4):
        await pipeline.run("s", f"q{i}")
    assert [e.user for e in await store.recent("s", 10)] == ["q2", "q3"]
    failing = Pipeline(
        settings(memory={"store": "none", "turns": 2}),
        Scripted({"e1": [refused()], "e2": [refused()]}),
        store,
    )
    with pytest.raises(AllExpertsFailedError):
        await failing.run("s", "q4")
    assert [e.user for e in await store.recent("s", 10)] == ["q2", "q3"]


async def test_without_memory_turns_nothing_is_sent_or_kept() -> None:
    store = ProcessStore()
    pipeline = Pipeline(settings(memory={"store": "none", "turns": 0}), Scripted({}), store)
    await pipeline.run("s", "q")
    assert await store.recent("s", 10) == []


def test_the_core_imports_neither_aiohttp_nor_a_database() -> None:
    code = (
        "import sys, gorkheavy.core.pipeline, gorkheavy.core.judge, gorkheavy.core.prompts;"
        "bad = {'aiohttp', 'aiosqlite', 'asyncpg', 'sqlite3'} & set(sys.modules);"
        "sys.exit(f'core imported {sorted(bad)}' if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


async def test_an_unexpected_exception_drops_only_that_model() -> None:
    caller = Scripted({"p": [RuntimeError("boom")], "e2": [KeyError("odd")]})
    result = await Pipeline(settings(), caller, ProcessStore()).run("s", "q")
    e1, e2 = result.candidates
    assert e1.ok
    assert e1.query == "raw"
    assert "boom" in result.promptimizer_error
    assert not e2.ok
    assert "KeyError" in e2.error
    assert result.verdict_source is VerdictSource.SINGLE


@pytest.mark.parametrize("strategy", ["select", "synthesize"])
async def test_an_unexpected_exception_in_the_judge_gives_the_fallback(strategy: str) -> None:
    extra = {
        "strategy": strategy,
        "models": [
            {"name": "e1", "model": "e:1", "role": "expert"},
            {"name": "e2", "model": "e:2", "role": "expert"},
            {"name": "j", "model": "j:1", "role": "judge"},
        ],
    }
    caller = Scripted({"j": [RuntimeError("judge broke")]})
    result = await Pipeline(build(extra).pipeline, caller, ProcessStore()).run("s", "q")
    assert result.verdict_source is VerdictSource.FALLBACK
    assert "judge broke" in result.judge_error


async def test_the_answer_is_remembered_even_when_the_caller_leaves_during_the_write() -> None:
    writing = asyncio.Event()

    class SlowStore(ProcessStore):
        async def append(self, session: str, exchange: Exchange, keep: int) -> None:
            writing.set()
            await asyncio.sleep(0.2)
            await super().append(session, exchange, keep)

    store = SlowStore()
    task = asyncio.create_task(Pipeline(settings(), Scripted({}), store).run("s", "q"))
    await writing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.3)
    assert [e.user for e in await store.recent("s", 10)] == ["q"]
