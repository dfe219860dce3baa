"""The ensemble pipeline: promptimizer, experts, judge, memory.

Scheduling (the critical path is ``max(promptimizer + optimized experts, raw experts) + judge``):

* the promptimizer and every expert that takes the raw query start at the same moment;
* an expert that takes the optimized query starts when the promptimizer returns, or with the raw query when
  the promptimizer fails or times out;
* the judge starts when every expert has answered, failed or timed out.

Every model call has its stage's timeout (retries included); only connection errors are retried. An expert
that fails is dropped and reported in the result; the request fails only when no expert produced an answer.

The pipeline talks to models and memory through the two protocols below, so it has no HTTP or database code.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

from gorkheavy.core import judge as judging
from gorkheavy.core import prompts
from gorkheavy.core.cache import AnswerCache, answer_key
from gorkheavy.core.roster import KeepAlive, ModelSpec, PipelineSettings, ReplyLimit
from gorkheavy.core.types import (
    AllExpertsFailedError,
    CallOptions,
    Candidate,
    ChatMessage,
    EnsembleResult,
    ErrorCause,
    Exchange,
    ModelCallError,
    ModelReply,
    RequestOptions,
    StageEvent,
    StageStatus,
    Strategy,
    VerdictSource,
)

EventSink = Callable[[StageEvent], None]

log = logging.getLogger(__name__)


def _as_call_error(spec: ModelSpec, exc: Exception) -> ModelCallError:
    """A model call's failure as a ModelCallError; anything else is a bug or an unforeseen reply, logged."""
    if isinstance(exc, ModelCallError):
        return exc
    log.error("%s: unexpected %s", spec.label, type(exc).__name__, exc_info=exc)
    text = str(exc) or "no message"
    return ModelCallError(
        ErrorCause.MALFORMED, f"{spec.label}: unexpected error ({type(exc).__name__}: {text[:160]})"
    )


class ModelCaller(Protocol):
    """Sends one chat request to one model and returns its whole reply (raises ModelCallError)."""

    async def chat(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        *,
        keep_alive: KeepAlive,
        fmt: dict[str, Any] | None = None,
        call: CallOptions = ...,
    ) -> ModelReply: ...


def _positive_int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def call_options(
    spec: ModelSpec,
    limit: ReplyLimit,
    asked: Mapping[str, Any] | None = None,
    on_text: Callable[[str], None] | None = None,
) -> CallOptions:
    """One model call's options: what the caller ``asked`` for (over the entry's own), and the stage's size
    cap: ``num_predict`` is the smallest of the cap, the entry's own and the caller's; the byte cap."""
    options: dict[str, Any] = dict(asked or {})
    wanted = [
        n
        for n in (_positive_int(spec.options.get("num_predict")), _positive_int(options.get("num_predict")))
        if n
    ]
    if limit.tokens > 0:
        wanted.append(limit.tokens)
    if wanted:
        options["num_predict"] = min(wanted)
    return CallOptions(options=options, max_bytes=limit.bytes, on_text=on_text)


class _Turn:
    """What one request asked for, and what its model calls reported (durations, token counts)."""

    def __init__(self, ask: RequestOptions) -> None:
        self.ask = ask
        self.durations: dict[str, float] = {}  # what each model server says it spent (total_duration)
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def note(self, spec: ModelSpec, reply: ModelReply) -> None:
        self.durations[spec.name] = reply.total_duration_ns / 1e9
        self.prompt_tokens += reply.prompt_eval_count
        self.completion_tokens += reply.eval_count

    def usage(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def too_long(spec: ModelSpec, stage: str, limit: ReplyLimit) -> ModelCallError:
    return ModelCallError(
        ErrorCause.TOO_LONG,
        f"{spec.label}: reply cut at the {stage} size limit ({limit.tokens} tokens, {limit.bytes} bytes)",
    )


class MemoryStore(Protocol):
    """Conversation memory per session, bounded to the last ``keep`` exchanges."""

    async def recent(self, session: str, limit: int) -> list[Exchange]: ...

    async def append(self, session: str, exchange: Exchange, keep: int) -> None: ...


class Pipeline:
    """One ensemble request at a time per call of :meth:`run`; safe to share between concurrent requests."""

    def __init__(
        self,
        settings: PipelineSettings,
        caller: ModelCaller,
        memory: MemoryStore,
        *,
        listeners: Sequence[EventSink] = (),
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.perf_counter,
        cache: AnswerCache | None = None,
    ) -> None:
        self.settings = settings
        self._caller = caller
        self._memory = memory
        self._cache = cache
        self._listeners = tuple(listeners)
        self._rng = rng or random.Random()
        self._clock = clock

    # -- model calls -----------------------------------------------------------------------------------------

    async def _call(
        self,
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        limit_s: float,
        fmt: dict[str, Any] | None = None,
        call: CallOptions | None = None,
    ) -> ModelReply:
        retries = self.settings.retries
        call = call or CallOptions()
        try:
            async with asyncio.timeout(limit_s):
                attempt = 0
                while True:
                    try:
                        return await self._caller.chat(
                            spec, messages, keep_alive=self.settings.keep_alive, fmt=fmt, call=call
                        )
                    except ModelCallError as exc:
                        if exc.cause is not ErrorCause.CONNECTION or attempt >= retries:
                            raise
                    await asyncio.sleep(self.settings.retry_backoff * (2**attempt))
                    attempt += 1
        except TimeoutError:
            raise ModelCallError(
                ErrorCause.TIMEOUT, f"{spec.label} did not answer within {limit_s:g} s"
            ) from None

    def _emit(self, sink: EventSink | None, event: StageEvent) -> None:
        for listener in self._listeners:
            listener(event)
        if sink is not None:
            sink(event)

    async def _stage_call(
        self,
        stage: Literal["promptimizer", "expert"],
        spec: ModelSpec,
        messages: Sequence[ChatMessage],
        limit_s: float,
        clean: Callable[[str], str],
        *,
        empty: str,
        sink: EventSink | None,
        turn: _Turn,
    ) -> tuple[str, float, ModelCallError | None]:
        """Call one model for a stage, reporting start and outcome: (cleaned text, seconds, failure or None).

        Never raises for the model's failure: one model failing must not end the request. A reply cut at
        the stage's size cap comes back with its text and a ``too_long`` failure (the caller decides
        whether a cut text is usable).
        """
        self._emit(sink, StageEvent(stage, spec.name, StageStatus.START))
        start = self._clock()
        limit = getattr(self.settings.limits, stage)
        asked = turn.ask.options if stage == "expert" else None
        cut: ModelCallError | None = None
        try:
            reply = await self._call(spec, messages, limit_s, call=call_options(spec, limit, asked))
            turn.note(spec, reply)
            text = clean(reply.text)
            if reply.truncated:
                cut = too_long(spec, stage, limit)
            if not text:
                raise cut or ModelCallError(ErrorCause.EMPTY, f"{spec.label} returned an empty {empty}")
        except Exception as raised:  # one model's failure must not end the request
            exc = _as_call_error(spec, raised)
            seconds = self._clock() - start
            self._emit(sink, StageEvent(stage, spec.name, StageStatus.ERROR, seconds, exc.cause, exc.message))
            return "", seconds, exc
        seconds = self._clock() - start
        if cut is not None:
            self._emit(sink, StageEvent(stage, spec.name, StageStatus.OK, seconds, cut.cause, cut.message))
        else:
            self._emit(sink, StageEvent(stage, spec.name, StageStatus.OK, seconds))
        return text, seconds, cut

    async def _promptimize(
        self, question: str, history: Sequence[Exchange], sink: EventSink | None, turn: _Turn
    ) -> tuple[str, str, float]:
        """(query to use, error or '', seconds); never raises a ModelCallError."""
        spec = self.settings.roster.promptimizer
        if spec is None:
            return question, "", 0.0
        rewritten, seconds, failure = await self._stage_call(
            "promptimizer",
            spec,
            prompts.promptimizer_messages(question, history),
            self.settings.timeouts.promptimizer,
            prompts.clean_rewrite,
            empty="rewrite",
            sink=sink,
            turn=turn,
        )
        if failure is not None:  # a cut rewrite is no rewrite: the experts get the question as asked
            return question, failure.message, seconds
        return rewritten, "", seconds

    async def _expert(
        self,
        spec: ModelSpec,
        query: str,
        kind: Literal["optimized", "raw"],
        *,
        history: Sequence[Exchange],
        sink: EventSink | None,
        turn: _Turn,
    ) -> Candidate:
        text, seconds, failure = await self._stage_call(
            "expert",
            spec,
            prompts.expert_messages(query, history, turn.ask.instructions),
            self.settings.timeouts.expert,
            prompts.strip_thinking,
            empty="answer",
            sink=sink,
            turn=turn,
        )
        if failure is not None:  # failed (no text) or cut at the size cap (the text up to the cap)
            return Candidate(spec.name, spec.model, kind, text, seconds, failure.message, failure.cause)
        return Candidate(spec.name, spec.model, kind, text, seconds)

    async def _optimized_expert(
        self,
        spec: ModelSpec,
        rewrite: asyncio.Task[tuple[str, str, float]],
        history: Sequence[Exchange],
        sink: EventSink | None,
        turn: _Turn,
    ) -> Candidate:
        query, error, _ = await rewrite
        kind: Literal["optimized", "raw"] = "raw" if error else "optimized"
        return await self._expert(spec, query, kind, history=history, sink=sink, turn=turn)

    # -- the request -----------------------------------------------------------------------------------------

    async def run(
        self,
        session: str,
        question: str,
        *,
        history: Sequence[Exchange] | None = None,
        strategy: Strategy | None = None,
        remember: bool = True,
        on_event: EventSink | None = None,
        ask: RequestOptions | None = None,
    ) -> EnsembleResult:
        """Answer ``question`` in ``session``.

        ``history`` overrides the stored memory (stateless callers send their own); ``remember`` stores
        the exchange afterwards. Raises AllExpertsFailedError when no expert produced an answer; the
        session's memory is then left unchanged.
        """
        settings = self.settings
        roster = settings.roster
        strategy = strategy or settings.strategy
        timings: dict[str, float] = {}
        started = self._clock()

        if history is None:
            mark = self._clock()
            past = await self._memory.recent(session, settings.memory_turns)
            timings["memory_read"] = self._clock() - mark
        else:
            past = list(history)
        past = past[-settings.memory_turns :] if settings.memory_turns > 0 else []

        turn = _Turn(ask or RequestOptions())
        key = ""
        if self._cache is not None:
            key = answer_key(settings, question, past, strategy, turn.ask)
            hit = await self._cache_get(key)
            if hit is not None:
                return await self._from_cache(
                    session=session,
                    question=question,
                    strategy=strategy,
                    hit=hit,
                    remember=remember,
                    timings=timings,
                    started=started,
                )
        experts_started = self._clock()
        # the promptimizer runs only when an expert takes its rewrite; nobody would wait for it otherwise
        wanted = any(spec.optimized_query for spec in roster.experts)
        if roster.promptimizer is not None and not wanted:
            self._emit(
                on_event,
                StageEvent(
                    "promptimizer",
                    roster.promptimizer.name,
                    StageStatus.SKIPPED,
                    detail="no expert takes the optimized query",
                ),
            )
        rewrite: asyncio.Task[tuple[str, str, float]] | None = None
        async with asyncio.TaskGroup() as group:
            if wanted or roster.promptimizer is None:
                rewrite = group.create_task(self._promptimize(question, past, on_event, turn))
            tasks = [
                group.create_task(self._optimized_expert(spec, rewrite, past, on_event, turn))
                if spec.optimized_query and roster.promptimizer is not None and rewrite is not None
                else group.create_task(
                    self._expert(spec, question, "raw", history=past, sink=on_event, turn=turn)
                )
                for spec in roster.experts
            ]
        optimized: str | None = None
        promptimizer_error = ""
        if rewrite is not None:
            optimized, promptimizer_error, promptimizer_seconds = rewrite.result()
            if roster.promptimizer is not None:
                timings["promptimizer"] = promptimizer_seconds
        candidates = tuple(task.result() for task in tasks)
        timings["experts"] = self._clock() - experts_started
        for candidate in candidates:
            timings[f"expert:{candidate.name}"] = candidate.seconds

        usable = [c for c in candidates if c.ok]
        if not usable:
            raise AllExpertsFailedError(candidates)

        answer, winner, source, judge_error, reason, labels = await self._decide(
            strategy=strategy,
            question=question,
            past=past,
            usable=usable,
            timings=timings,
            sink=on_event,
            turn=turn,
        )
        for name, seconds in turn.durations.items():
            timings[f"model:{name}"] = seconds

        if key and source is not VerdictSource.FALLBACK:
            await self._cache_put(
                key,
                {
                    "answer": answer,
                    "winner": winner,
                    "verdict_source": source.value,
                    "judge_reason": reason,
                    "labels": dict(labels),
                },
            )
        memory_error = await self._remember(session, Exchange(question, answer, winner), remember, timings)
        timings["total"] = self._clock() - started
        return EnsembleResult(
            session=session,
            question=question,
            answer=answer,
            winner=winner,
            strategy=strategy,
            verdict_source=source,
            candidates=candidates,
            timings=timings,
            optimized_query=optimized,
            promptimizer_error=promptimizer_error,
            judge_error=judge_error,
            judge_reason=reason,
            labels=labels,
            memory_error=memory_error,
            usage=turn.usage(),
            cache="miss" if key else "",
        )

    async def _remember(
        self, session: str, exchange: Exchange, remember: bool, timings: dict[str, float]
    ) -> str:
        """Store the exchange in the session's memory; '' or why it could not be stored."""
        if not remember:
            return ""
        mark = self._clock()
        try:
            # the answer exists: store it even when the caller is cancelled meanwhile (a client left)
            await asyncio.shield(self._memory.append(session, exchange, self.settings.memory_turns))
        except Exception as exc:  # the answer is not lost for it: it is returned, flagged
            error = str(exc) or type(exc).__name__
            log.warning("session %s: the answer was not remembered: %s", session, error)
            return error
        finally:
            timings["memory_write"] = self._clock() - mark
        return ""

    # -- the answer cache ------------------------------------------------------------------------------------

    async def _cache_get(self, key: str) -> Mapping[str, Any] | None:
        assert self._cache is not None
        try:
            hit = await self._cache.get(key)
        except Exception as exc:  # a cache that fails is a miss, never a failed request
            log.warning("answer cache: cannot read (%s); answering without it", exc)
            return None
        valid = hit is not None and isinstance(hit.get("answer"), str) and isinstance(hit.get("winner"), str)
        return hit if valid else None

    async def _cache_put(self, key: str, value: Mapping[str, Any]) -> None:
        assert self._cache is not None
        try:
            await self._cache.put(key, value, self.settings.cache_ttl)
        except Exception as exc:
            log.warning("answer cache: cannot store (%s)", exc)

    async def _from_cache(
        self,
        *,
        session: str,
        question: str,
        strategy: Strategy,
        hit: Mapping[str, Any],
        remember: bool,
        timings: dict[str, float],
        started: float,
    ) -> EnsembleResult:
        """The answer the cache holds for this question in this context; no model is called."""
        answer, winner = str(hit["answer"]), str(hit["winner"])
        memory_error = await self._remember(session, Exchange(question, answer, winner), remember, timings)
        timings["total"] = self._clock() - started
        try:
            source = VerdictSource(str(hit.get("verdict_source")))
        except ValueError:
            source = VerdictSource.STRUCTURED
        labels = hit.get("labels")
        return EnsembleResult(
            session=session,
            question=question,
            answer=answer,
            winner=winner,
            strategy=strategy,
            verdict_source=source,
            candidates=(),
            timings=timings,
            optimized_query=None,
            judge_reason=str(hit.get("judge_reason") or ""),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {},
            memory_error=memory_error,
            usage={"prompt_tokens": 0, "completion_tokens": 0},
            cache="hit",
        )

    async def _vote(
        self,
        spec: ModelSpec,
        question: str,
        past: Sequence[Exchange],
        labelled: Sequence[tuple[str, Candidate]],
        turn: _Turn,
    ) -> tuple[judging.Verdict | None, Candidate | None, ModelCallError | None]:
        """One judge call on one shuffled order: (verdict, the candidate it names, or the error)."""
        labels = [label for label, _ in labelled]
        texts = [(label, candidate.text) for label, candidate in labelled]
        try:
            reply = await self._call(
                spec,
                prompts.judge_select_messages(question, past, texts, turn.ask.instructions),
                self.settings.timeouts.judge,
                fmt=prompts.verdict_schema(labels),
                call=call_options(spec, self.settings.limits.judge),
            )
            turn.note(spec, reply)
            verdict = judging.parse_verdict(reply.text, labels)
            if verdict is None:
                raise ModelCallError(
                    ErrorCause.MALFORMED, f"{spec.label} gave no usable verdict: {reply.text[:200]!r}"
                )
        except Exception as raised:  # one vote's failure must not end the request
            return None, None, _as_call_error(spec, raised)
        return verdict, next(c for label, c in labelled if label == verdict.label), None

    async def _decide(
        self,
        *,
        strategy: Strategy,
        question: str,
        past: Sequence[Exchange],
        usable: Sequence[Candidate],
        timings: dict[str, float],
        sink: EventSink | None,
        turn: _Turn,
    ) -> tuple[str, str, VerdictSource, str, str, dict[str, str]]:
        """(answer, winner, source, judge error, judge reason, label -> expert name of the first order).

        With ``judge_votes`` > 1 the judge is asked that many times at once, each time with its own
        shuffled order; an expert wins only with a strict majority of all votes, otherwise the
        deterministic fallback decides (a position-biased judge thus cannot carry the day).
        """
        spec = self.settings.roster.judge
        if len(usable) == 1:
            only = usable[0]
            self._emit(sink, StageEvent("judge", spec.name, StageStatus.SKIPPED, detail="one candidate left"))
            return only.text, only.name, VerdictSource.SINGLE, "", "", {}

        orders = [
            judging.assign_labels(usable, self._rng)
            for _ in range(1 if strategy is Strategy.SYNTHESIZE else self.settings.judge_votes)
        ]
        labels = {label: candidate.name for label, candidate in orders[0]}
        self._emit(sink, StageEvent("judge", spec.name, StageStatus.START))
        start = self._clock()
        failure: ModelCallError
        if strategy is Strategy.SYNTHESIZE:
            texts = [(label, candidate.text) for label, candidate in orders[0]]
            try:
                messages = prompts.judge_synthesize_messages(question, past, texts, turn.ask.instructions)
                limit = self.settings.limits.judge
                call = call_options(spec, limit, turn.ask.options, turn.ask.on_token)
                reply = await self._call(spec, messages, self.settings.timeouts.judge, call=call)
                turn.note(spec, reply)
                text = prompts.strip_thinking(reply.text)
                if not text:
                    raise ModelCallError(ErrorCause.EMPTY, f"{spec.label} returned an empty synthesis")
                if reply.truncated:  # the synthesis up to the cap is the answer, flagged
                    cut = too_long(spec, "judge", limit)
                    timings["judge"] = self._clock() - start
                    self._emit(
                        sink,
                        StageEvent(
                            "judge", spec.name, StageStatus.OK, timings["judge"], cut.cause, cut.message
                        ),
                    )
                    return text, spec.name, VerdictSource.SYNTHESIZED, cut.message, "", labels
            except Exception as raised:  # the fallback answers instead
                failure = _as_call_error(spec, raised)
            else:
                timings["judge"] = self._clock() - start
                self._emit(sink, StageEvent("judge", spec.name, StageStatus.OK, timings["judge"]))
                return text, spec.name, VerdictSource.SYNTHESIZED, "", "", labels
        else:
            votes = await asyncio.gather(*(self._vote(spec, question, past, order, turn) for order in orders))
            tally = Counter(chosen.name for _, chosen, _ in votes if chosen is not None)
            winner, count = tally.most_common(1)[0] if tally else ("", 0)
            if count * 2 > len(votes):
                timings["judge"] = self._clock() - start
                self._emit(sink, StageEvent("judge", spec.name, StageStatus.OK, timings["judge"]))
                backing = [
                    (v, c) for v, c, _ in votes if v is not None and c is not None and c.name == winner
                ]
                structured = all(v.source is VerdictSource.STRUCTURED for v, _ in backing)
                source = VerdictSource.STRUCTURED if structured else VerdictSource.PARSED
                return backing[0][1].text, winner, source, "", backing[0][0].reason, labels
            errors = [error for _, _, error in votes if error is not None]
            if tally:
                counted = ", ".join(f"{name}: {n}" for name, n in tally.most_common())
                failure = ModelCallError(
                    ErrorCause.MALFORMED,
                    f"{spec.label}: no majority in {len(votes)} verdicts ({counted}"
                    + (f"; {len(errors)} failed: {errors[0].message}" if errors else "")
                    + ")",
                )
            else:
                failure = errors[0]
        timings["judge"] = self._clock() - start
        self._emit(
            sink,
            StageEvent(
                "judge", spec.name, StageStatus.ERROR, timings["judge"], failure.cause, failure.message
            ),
        )
        fallback = judging.fallback_choice(usable)
        return fallback.text, fallback.name, VerdictSource.FALLBACK, failure.message, "", labels
