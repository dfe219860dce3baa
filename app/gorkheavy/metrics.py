"""Prometheus metrics of one server instance, on a registry of its own (never the global default)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, Histogram, generate_latest

from gorkheavy.core.types import EnsembleResult, StageEvent, StageStatus

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.stage_seconds = Histogram(
            "gorkheavy_stage_duration_seconds",
            "Wall time of each pipeline stage (experts: until the last expert finished).",
            ["stage"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "gorkheavy_model_duration_seconds",
            "Time of each model call, by roster name and outcome.",
            ["name", "stage", "outcome"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.model_errors = Counter(
            "gorkheavy_model_errors_total", "Failed model calls by cause.", ["name", "cause"], registry=r
        )
        self.requests = Counter(
            "gorkheavy_requests_total",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "code"],
            registry=r,
        )
        self.in_flight = Gauge(
            "gorkheavy_requests_in_flight", "Ensemble requests being answered.", registry=r
        )
        self.waiting = Gauge(
            "gorkheavy_requests_waiting", "Ensemble requests waiting for a slot.", registry=r
        )
        self.rejected = Counter(
            "gorkheavy_requests_rejected_total",
            "Requests refused with 503 because the wait queue was full.",
            registry=r,
        )
        self.failures = Counter(
            "gorkheavy_ensemble_failures_total",
            "Requests that ended without an answer.",
            registry=r,
        )
        self.memory_errors = Counter(
            "gorkheavy_memory_errors_total",
            "Answers returned although the memory store could not keep them (flagged memory_error).",
            registry=r,
        )
        self.cache = Counter(
            "gorkheavy_answer_cache_total",
            "Answer cache look-ups by result (hit: answered without calling any model).",
            ["result"],
            registry=r,
        )
        self.backend_connections = Counter(
            "gorkheavy_backend_connections_opened_total",
            "New connections to model servers (a call that finds an idle one in the pool opens none).",
            registry=r,
        )
        self.winners = Counter(
            "gorkheavy_winner_total", "Which expert's answer was chosen.", ["name"], registry=r
        )
        self.verdicts = Counter(
            "gorkheavy_verdicts_total",
            "How the answer was decided (structured, parsed, fallback, single, synthesized).",
            ["source"],
            registry=r,
        )
        # the interpreter's garbage collections by generation (python_gc_collections_total and the objects
        # they found), as prometheus_client's default registry shows them
        GCCollector(registry=r)

    def on_event(self, event: StageEvent) -> None:
        if event.status is StageStatus.OK:
            self.model_seconds.labels(event.name, event.stage, "ok").observe(event.seconds)
            if event.cause is not None:  # answered, but flagged (a reply cut at its size cap)
                self.model_errors.labels(event.name, event.cause.value).inc()
        elif event.status is StageStatus.ERROR:
            self.model_seconds.labels(event.name, event.stage, "error").observe(event.seconds)
            self.model_errors.labels(event.name, event.cause.value if event.cause else "unknown").inc()

    def on_connection(self) -> None:
        self.backend_connections.inc()

    def on_result(self, result: EnsembleResult) -> None:
        if result.cache:
            self.cache.labels(result.cache).inc()
        if result.memory_error:
            self.memory_errors.inc()
        if result.cached:  # no stage ran and no verdict was given this time
            return
        for stage in ("promptimizer", "experts", "judge", "total"):
            if stage in result.timings:
                self.stage_seconds.labels(stage).observe(result.timings[stage])
        self.winners.labels(result.winner).inc()
        self.verdicts.labels(result.verdict_source.value).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
