"""The page's recent-window figures: Prometheus' quantile rule and the window over registry snapshots."""

from __future__ import annotations

import math

import pytest
from gorkheavy.core.types import Candidate, EnsembleResult, ErrorCause, StageEvent, StageStatus, Strategy
from gorkheavy.core.types import VerdictSource as Source
from gorkheavy.metrics import Metrics
from gorkheavy.web import stats

INF = math.inf


@pytest.mark.parametrize(
    ("q", "buckets", "expected"),
    [
        (0.5, ((0.1, 0.0), (0.5, 10.0), (1.0, 10.0), (INF, 10.0)), 0.3),  # inside (0.1, 0.5]
        (0.5, ((0.1, 4.0), (0.5, 6.0), (INF, 6.0)), 0.075),  # rank 3 of 6 falls in the first bucket
        (0.25, ((1.0, 4.0), (INF, 4.0)), 0.25),  # first bucket: interpolated from 0
        (0.99, ((1.0, 1.0), (2.0, 1.0), (INF, 5.0)), 2.0),  # in +Inf: the largest finite bound
        (0.5, ((1.0, 0.0), (INF, 0.0)), None),  # nothing observed
        (0.5, (), None),
    ],
)
def test_quantile_follows_histogram_quantile(
    q: float, buckets: stats.Buckets, expected: float | None
) -> None:
    got = stats.quantile(q, buckets)
    assert got == pytest.approx(expected) if expected is not None else got is None


def _result(winner: str, total: float) -> EnsembleResult:
    return EnsembleResult(
        session="s",
        question="q",
        answer="a",
        winner=winner,
        strategy=Strategy.SELECT,
        verdict_source=Source.STRUCTURED,
        candidates=(Candidate(winner, "m", "raw", "a", 0.1),),
        timings={"experts": total / 2, "judge": 0.02, "total": total},
        optimized_query=None,
    )


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_window_counts_only_what_happened_in_the_last_seconds() -> None:
    metrics = Metrics()
    clock = Clock()
    window = stats.Window(metrics.registry, seconds=60, step=10, clock=clock)
    for _ in range(4):  # old traffic: slow answers won by llama
        metrics.on_result(_result("llama", 30.0))
    for t in range(1, 8):  # the sampler runs every 10 s
        clock.now = 1000.0 + 10 * t
        window.sample()
    covered, delta = window.recent()  # 70 s after the start: the window starts at the 10 s snapshot
    assert covered == pytest.approx(60.0)
    assert stats.stage_figures(delta)["total"]["count"] == 0
    assert stats.counts(delta, stats.WINNERS, "name") == {}

    for _ in range(3):
        metrics.on_result(_result("qwen", 0.3))
    covered, delta = window.recent()
    total = stats.stage_figures(delta)["total"]
    assert total["count"] == 3
    assert 0.25 < total["p50"] <= 0.5  # the (0.25, 0.5] bucket, not the old 30 s answers
    assert stats.counts(delta, stats.WINNERS, "name") == {"qwen": 3}
    assert stats.counts(delta, stats.VERDICTS, "source") == {"structured": 3}


def test_a_young_server_counts_everything_since_it_started() -> None:
    metrics = Metrics()
    clock = Clock()
    window = stats.Window(metrics.registry, seconds=300, step=10, clock=clock)
    metrics.on_result(_result("qwen", 1.5))
    clock.now += 42
    covered, delta = window.recent()
    assert covered == pytest.approx(42)
    assert stats.stage_figures(delta)["total"] == {"count": 1, "p50": 1.75, "p99": 2.485}  # in (1, 2.5]


def test_model_figures_give_error_rate_causes_and_latency_of_successful_calls() -> None:
    metrics = Metrics()
    window = stats.Window(metrics.registry, clock=Clock())
    for seconds in (0.2, 0.3, 0.4):
        metrics.on_event(StageEvent("expert", "qwen", StageStatus.OK, seconds))
    metrics.on_event(StageEvent("expert", "qwen", StageStatus.ERROR, 5.0, ErrorCause.TIMEOUT, "slow"))
    metrics.on_event(StageEvent("expert", "llama", StageStatus.ERROR, 0.01, ErrorCause.HTTP_STATUS, "500"))
    metrics.on_event(StageEvent("expert", "llama", StageStatus.START))
    _, delta = window.recent()
    figures = stats.model_figures(delta)
    assert figures["qwen"]["calls"] == 4
    assert figures["qwen"]["errors"] == 1
    assert figures["qwen"]["error_rate"] == 0.25
    assert figures["qwen"]["causes"] == {"timeout": 1}
    assert 0.25 < figures["qwen"]["p50"] <= 0.5  # the 5 s timeout is not a latency
    assert figures["llama"] == {
        "calls": 1,
        "errors": 1,
        "error_rate": 1.0,
        "p50": None,
        "p99": None,
        "causes": {"http_status": 1},
    }
