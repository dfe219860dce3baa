"""Recent figures from the server's own Prometheus metrics, for the page's Models and Performance views.

Prometheus would answer ``histogram_quantile(0.99, rate(gorkheavy_stage_duration_seconds_bucket[5m]))``. The
page has no Prometheus, so the server snapshots its registry every ``step`` seconds and answers with the
difference between now and the snapshot of ``seconds`` ago, read with the same bucket interpolation. The
figures are thus exactly what ``/metrics`` exposes, over a recent window instead of since the start.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

Labels = tuple[tuple[str, str], ...]
Key = tuple[str, Labels]  # metric family name, labels without "le"
Buckets = tuple[tuple[float, float], ...]  # cumulative (upper bound, count), ascending bounds

STAGES = "gorkheavy_stage_duration_seconds"
MODELS = "gorkheavy_model_duration_seconds"
ERRORS = "gorkheavy_model_errors"
WINNERS = "gorkheavy_winner"
VERDICTS = "gorkheavy_verdicts"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The cumulative histogram buckets and counter values of a registry at one moment."""

    at: float
    histograms: Mapping[Key, Buckets]
    counters: Mapping[Key, float]

    def minus(self, earlier: Snapshot) -> Snapshot:
        """What was observed between ``earlier`` and this snapshot."""
        histograms = {}
        for key, buckets in self.histograms.items():
            before = dict(earlier.histograms.get(key, ()))
            histograms[key] = tuple((bound, count - before.get(bound, 0.0)) for bound, count in buckets)
        counters = {key: value - earlier.counters.get(key, 0.0) for key, value in self.counters.items()}
        return Snapshot(self.at, histograms, counters)


def take(registry: CollectorRegistry, at: float) -> Snapshot:
    histograms: dict[Key, list[tuple[float, float]]] = {}
    counters: dict[Key, float] = {}
    for family in registry.collect():
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
            if family.type == "histogram" and sample.name.endswith("_bucket"):
                bound = float(sample.labels["le"])
                histograms.setdefault((family.name, labels), []).append((bound, sample.value))
            elif family.type == "counter" and sample.name.endswith("_total"):
                counters[(family.name, labels)] = sample.value
    return Snapshot(at, {k: tuple(sorted(v)) for k, v in histograms.items()}, counters)


def quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket that holds rank ``q``.

    None when nothing was observed; the largest finite bound when the rank falls in the ``+Inf`` bucket.
    """
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _merge(parts: list[Buckets]) -> Buckets:
    totals: dict[float, float] = {}
    for buckets in parts:
        for bound, count in buckets:
            totals[bound] = totals.get(bound, 0.0) + count
    return tuple(sorted(totals.items()))


def _latency(buckets: Buckets) -> dict[str, Any]:
    count = buckets[-1][1] if buckets else 0.0
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    return {
        "count": int(count),
        "p50": None if p50 is None else round(p50, 6),
        "p99": None if p99 is None else round(p99, 6),
    }


def stage_figures(delta: Snapshot) -> dict[str, dict[str, Any]]:
    """Per pipeline stage (promptimizer, experts, judge, total): calls, p50 and p99 seconds."""
    out = {}
    for (name, labels), buckets in sorted(delta.histograms.items()):
        if name == STAGES:
            out[dict(labels)["stage"]] = _latency(buckets)
    return out


def model_figures(delta: Snapshot) -> dict[str, dict[str, Any]]:
    """Per roster name: calls, failures, error rate, p50/p99 of the successful calls, failures by cause."""
    ok: dict[str, list[Buckets]] = {}
    failed: dict[str, float] = {}
    for (name, labels), buckets in delta.histograms.items():
        if name != MODELS:
            continue
        fields = dict(labels)
        model = fields["name"]
        if fields["outcome"] == "ok":
            ok.setdefault(model, []).append(buckets)
        else:
            failed[model] = failed.get(model, 0.0) + (buckets[-1][1] if buckets else 0.0)
    causes: dict[str, dict[str, int]] = {}
    for (name, labels), value in delta.counters.items():
        if name == ERRORS and value > 0:
            fields = dict(labels)
            causes.setdefault(fields["name"], {})[fields["cause"]] = int(value)
    out = {}
    for model in sorted(set(ok) | set(failed)):
        latency = _latency(_merge(ok.get(model, [])))
        errors = int(failed.get(model, 0.0))
        calls = latency["count"] + errors
        out[model] = {
            "calls": calls,
            "errors": errors,
            "error_rate": round(errors / calls, 4) if calls else None,
            "p50": latency["p50"],
            "p99": latency["p99"],
            "causes": causes.get(model, {}),
        }
    return out


def counts(delta: Snapshot, family: str, label: str) -> dict[str, int]:
    """A counter's increase per value of ``label`` (e.g. winners per model), zero values left out."""
    out: dict[str, int] = {}
    for (name, labels), value in sorted(delta.counters.items()):
        if name == family and value > 0:
            key = dict(labels)[label]
            out[key] = out.get(key, 0) + int(value)
    return out


class Window:
    """Snapshots of one registry, enough to answer for the last ``seconds`` (to within ``step``)."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        seconds: float = 300.0,
        step: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        self.seconds = seconds
        self.step = step
        self._clock = clock
        # the registry counts nothing before the app exists: an empty snapshot is its true start
        self._snapshots: deque[Snapshot] = deque([Snapshot(clock(), {}, {})])

    def sample(self) -> None:
        """Record a snapshot; drop those no longer needed as the start of the window."""
        now = self._clock()
        self._snapshots.append(take(self.registry, now))
        cutoff = now - self.seconds
        while len(self._snapshots) > 1 and self._snapshots[1].at <= cutoff:
            self._snapshots.popleft()

    def recent(self) -> tuple[float, Snapshot]:
        """(seconds covered, what was observed in them): from the newest snapshot at least ``seconds`` old
        (or the start, when the server is younger) up to now."""
        now = self._clock()
        cutoff = now - self.seconds
        start = self._snapshots[0]
        for snap in self._snapshots:
            if snap.at <= cutoff:
                start = snap
        return now - start.at, take(self.registry, now).minus(start)
