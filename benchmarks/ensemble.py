"""Benchmarks of the gorkheavy orchestrator against the Ollama stand-in, on loopback. Prints figures.

    python benchmarks/ensemble.py                       # everything (a few minutes on 2 cores)
    python benchmarks/ensemble.py --only load --sessions 500,2000 --repeat 3

Each part starts the stand-in as its own process (``python -m gorkheavy_lab.ollama``) with fixed
per-model latencies, and ``gorkheavy serve`` as another process, then drives it over HTTP:

overhead  orchestrator overhead: median end-to-end time of sequential /v1/chat requests minus the model
          critical path (max(promptimizer + qwen-small, qwen, llama) + judge), both as configured and as
          measured per call by the orchestrator itself. Target: <= 5 ms.
critical  the critical path of this pipeline against the design document's sequencing (every expert after
          the promptimizer), for latencies where the raw-query experts are the slow ones.
load      1, 50, 500 and 2,000 concurrent sessions against one server process (each asks 4 questions in
          turn; round 1 meets a server with no open connections): errors, p50/p99 against the critical
          path, peak resident memory of the server. Targets (TARGETS below, checked and printed with
          the load average of the machine at the time): at 500 sessions p99 / critical path <= 1.25 for
          the cold round and <= 1.1 for the warm rounds, 0 errors, RSS <= 200 MB; at 2,000 sessions 0
          errors and RSS <= 300 MB. ``--repeat N`` runs the part N times (the targets hold on every run
          or they are missed). Each level also prints where the slowest 1 % of requests spent their
          time (see ``breakdown``), the CPU time per request of the server, of the stand-ins and of this
          load client (independent of what else runs on the machine, unlike the latencies), and how late
          this load client's own event loop woke up. By default the server runs alone on the first CPU and
          the stand-ins and the load client on the others (``--no-pin`` shares every CPU), and the
          stand-ins and the load client run on uvloop (``--loop asyncio`` for asyncio's own loop): in the
          cluster the model servers are other nodes, while here five Python stand-ins and the load client
          take more CPU per request than the server itself, and unpinned they took it from the server's
          CPU at every stage boundary of a burst. Their own queueing still counts in every figure.
client    this app's aiohttp client against the official ``ollama`` client (httpx): time per call and
          memory for 500 concurrent streams, each measured in a fresh process.

Nothing here leaves 127.0.0.1; every loop is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import yaml

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
ROSTER = [
    ("promptimizer", "granite4:350m", "promptimizer"),
    ("qwen-small", "qwen3:0.6b", "expert"),
    ("qwen", "qwen2.5-coder:1.5b", "expert"),
    ("llama", "llama3.2:1b", "expert"),
    ("judge", "gemma3:1b", "judge"),
]
CHUNKS = 8  # NDJSON chunks per model reply

# sessions -> what the load part must show at that level (p99 over the critical path; errors; peak RSS)
TARGETS: dict[int, dict[str, float]] = {
    500: {"cold_p99_ratio": 1.25, "warm_p99_ratio": 1.1, "errors": 0, "rss_mb": 200},
    2000: {"errors": 0, "rss_mb": 300},
}


def critical_path(lat: dict[str, float]) -> float:
    return max(lat["promptimizer"] + lat["qwen-small"], lat["qwen"], lat["llama"]) + lat["judge"]


def design_path(lat: dict[str, float]) -> float:
    return lat["promptimizer"] + max(lat["qwen-small"], lat["qwen"], lat["llama"]) + lat["judge"]


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def wait_for_line(path: Path, pattern: str, process: subprocess.Popen[bytes], limit: float = 30) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited early: {path.read_text()[-2000:]}")
        match = re.search(pattern, path.read_text())
        if match:
            return match.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {pattern!r} in {path}")


# the stand-in's own main, run on uvloop's event loop (the stand-in itself is not changed)
_ON_UVLOOP = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from gorkheavy_lab.ollama.__main__ import main; sys.exit(main(sys.argv[1:]))"
)


@contextlib.contextmanager
def standin(
    models: dict[str, dict[str, Any]],
    workdir: Path,
    pids: list[int] | None = None,
    loop: str = "asyncio",
) -> Iterator[str]:
    """The Ollama stand-in as its own process (on uvloop's event loop with ``loop="uvloop"``)."""
    args = [PYTHON, "-m", "gorkheavy_lab.ollama"] if loop == "asyncio" else [PYTHON, "-c", _ON_UVLOOP]
    args += ["--host", "127.0.0.1", "--port", "0"]
    args += ["--no-record", "--max-queue", "100000"]
    for model, settings in models.items():
        args += ["--model", ",".join([model, *(f"{k}={v}" for k, v in settings.items())])]
    log = workdir / f"standin-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=ROOT / "app", stdout=out, stderr=subprocess.STDOUT)
    if pids is not None:
        pids.append(process.pid)
    try:
        yield wait_for_line(log, r"listening on (http://\S+)", process)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def standins(
    lat: dict[str, float], workdir: Path, pids: list[int] | None = None, loop: str = "asyncio"
) -> Iterator[dict[str, str]]:
    """One stand-in process per model, as the cluster runs one Ollama server per model; name -> URL."""
    with contextlib.ExitStack() as stack:
        urls = {}
        for name, model, _ in ROSTER:
            urls[name] = stack.enter_context(
                standin({model: {"latency": lat[name], "chunks": CHUNKS}}, workdir, pids, loop)
            )
        yield urls


def write_config(
    workdir: Path,
    url: str | dict[str, str],
    *,
    all_optimized: bool = False,
    http: dict[str, Any] | None = None,
    **server: Any,
) -> Path:
    models = []
    for name, model, role in ROSTER:
        base = url if isinstance(url, str) else url[name]
        entry: dict[str, Any] = {"name": name, "model": model, "role": role, "base_url": base}
        if role == "expert":
            entry["optimized_query"] = all_optimized or name == "qwen-small"
        models.append(entry)
    data = {
        "models": models,
        "memory": {"store": "sqlite", "path": str(workdir / f"memory-{time.monotonic_ns()}.db")},
        "server": {"host": "127.0.0.1", "port": 0, "shutdown_timeout": 5, **server},
        "http": http or {},
    }
    path = workdir / f"config-{time.monotonic_ns()}.yml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.contextmanager
def gorkheavy_serve(
    config: Path, workdir: Path, cpus: frozenset[int] | None = None
) -> Iterator[tuple[str, int]]:
    """``gorkheavy serve`` as its own process (only on ``cpus`` when given)."""
    log = workdir / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PYTHON, "-m", "gorkheavy", "serve", "--config", str(config)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "XDG_STATE_HOME": str(workdir)},
        )
    if cpus:
        os.sched_setaffinity(process.pid, cpus)
    try:
        yield wait_for_line(log, r"serving on (http://\S+)", process), process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def one_chat(
    http: aiohttp.ClientSession, url: str, session: str, message: str
) -> tuple[int, float, Any]:
    start = time.perf_counter()
    async with http.post(f"{url}/v1/chat", json={"session": session, "message": message}) as response:
        body = await response.json(content_type=None)
        status = response.status
    return status, time.perf_counter() - start, body


def measured_critical(timings: dict[str, float], prefix: str = "expert:") -> float:
    """The model critical path of one request from its timings.

    ``expert:``-style keys are the call durations the orchestrator measured (transport and the stand-in's
    own work included); ``model:`` keys are what each model server reported (``total_duration``).
    """
    first = "promptimizer" if prefix == "expert:" else "model:promptimizer"
    judge = "judge" if prefix == "expert:" else "model:judge"
    return (
        max(
            timings[first] + timings[f"{prefix}qwen-small"],
            timings[f"{prefix}qwen"],
            timings[f"{prefix}llama"],
        )
        + timings[judge]
    )


# -- (a) overhead ------------------------------------------------------------------------------------------


async def drive_sequential(url: str, count: int) -> tuple[list[float], list[float], list[float]]:
    e2e: list[float] = []
    calls: list[float] = []
    reported: list[float] = []
    async with aiohttp.ClientSession() as http:
        for i in range(5):  # warm up connections and the memory store
            await one_chat(http, url, "warm", f"warm-up {i}")
        for i in range(count):
            status, seconds, body = await one_chat(http, url, "bench", f"question number {i} about K3s")
            if status != 200:
                raise RuntimeError(f"request failed: {status} {body}")
            e2e.append(seconds)
            calls.append(measured_critical(body["timings"]))
            reported.append(measured_critical(body["timings"], "model:"))
    return e2e, calls, reported


def bench_overhead(workdir: Path, count: int) -> dict[str, Any]:
    lat = {"promptimizer": 0.05, "qwen-small": 0.05, "qwen": 0.08, "llama": 0.08, "judge": 0.03}
    with standins(lat, workdir) as url:
        config = write_config(workdir, url)
        with gorkheavy_serve(config, workdir) as (api, _):
            e2e, calls, reported = asyncio.run(drive_sequential(api, count))
    configured = critical_path(lat)

    def spread(values: list[float]) -> dict[str, float]:
        return {"median": statistics.median(values) * 1000, "p90": pct(values, 90) * 1000}

    return {
        "requests": count,
        "configured_critical_path_ms": configured * 1000,
        "median_e2e_ms": statistics.median(e2e) * 1000,
        "overhead_vs_configured_latencies_ms": spread([t - configured for t in e2e]),
        "overhead_vs_model_reported_durations_ms": spread(
            [t - r for t, r in zip(e2e, reported, strict=True)]
        ),
        "overhead_vs_measured_call_durations_ms": spread([t - c for t, c in zip(e2e, calls, strict=True)]),
    }


# -- (b) critical path against the design's sequencing ---------------------------------------------------


def bench_critical(workdir: Path, count: int) -> dict[str, Any]:
    lat = {"promptimizer": 0.2, "qwen-small": 0.1, "qwen": 0.4, "llama": 0.4, "judge": 0.1}
    out: dict[str, Any] = {"latencies_s": lat}
    with standins(lat, workdir) as url:
        for label, all_optimized in (("this_pipeline", False), ("design_sequencing", True)):
            config = write_config(workdir, url, all_optimized=all_optimized)
            with gorkheavy_serve(config, workdir) as (api, _):
                e2e, _, _ = asyncio.run(drive_sequential(api, count))
            out[label] = {"median_e2e_ms": statistics.median(e2e) * 1000}
    out["this_pipeline"]["model_critical_path_ms"] = critical_path(lat) * 1000
    out["design_sequencing"]["model_critical_path_ms"] = design_path(lat) * 1000
    saved = out["design_sequencing"]["median_e2e_ms"] - out["this_pipeline"]["median_e2e_ms"]
    out["saved_ms"] = saved
    return out


# -- (c) concurrent sessions --------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def breakdown(e2e: float, timings: dict[str, float]) -> dict[str, float]:
    """Where one request's time went, from the client's clock and the timings the server returned.

    model      the critical path of what the model servers reported (``total_duration``): the configured
               latencies, once a stand-in's handler runs
    calls      the calls as the orchestrator timed them minus that: loopback HTTP, the stand-ins' own
               queueing, and the server reading a reply late when its loop is busy
    pipeline   the pipeline's run minus its model calls: memory read and write, scheduling between stages
    outside    the client's time minus the pipeline's run: the server parsing the request and encoding the
               answer, admission, and the load client's own connecting and event-loop lag
    """
    reported = measured_critical(timings, "model:")
    called = measured_critical(timings)
    total = timings["total"]
    return {
        "model": reported,
        "calls": called - reported,
        "pipeline": total - called,
        "outside": e2e - total,
    }


def tail_breakdown(samples: list[tuple[float, dict[str, float]]]) -> dict[str, float] | None:
    """The mean of :func:`breakdown` over the slowest 1 % of the requests (at least one)."""
    needed = {"total", "promptimizer", "judge"} | {
        f"{prefix}{name}" for prefix in ("expert:", "model:") for name in ("qwen-small", "qwen", "llama")
    }
    needed |= {"model:promptimizer", "model:judge"}
    # a request where a model failed has no such path (its timings lack that model)
    usable = [(e2e, t) for e2e, t in samples if needed <= t.keys()]
    if not usable:
        return None
    usable.sort(key=lambda item: item[0])
    tail = usable[-max(1, len(usable) // 100) :]
    parts = [breakdown(e2e, t) for e2e, t in tail]
    return {key: statistics.fmean(p[key] for p in parts) for key in parts[0]}


def gc_collections(scraped: str) -> dict[str, int]:
    """The interpreter's garbage collections so far by generation, from a /metrics scrape."""
    found = re.findall(r'^python_gc_collections_total\{generation="(\d)"\} (\S+)$', scraped, re.MULTILINE)
    return {generation: int(float(count)) for generation, count in found}


async def drive_sessions(
    url: str, pid: int, sessions: int, rounds: int, backends: Sequence[int] = ()
) -> dict[str, Any]:
    """Every session asks ``rounds`` questions in turn, all sessions at once; round 1 meets a cold server."""
    cold: list[tuple[float, dict[str, float]]] = []
    warm: list[tuple[float, dict[str, float]]] = []
    errors: dict[str, int] = {}
    peak = 0
    lag: list[float] = []  # how late the load client's own loop woke up, sampled every 10 ms
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        loop = asyncio.get_running_loop()
        while not done.is_set():
            peak = max(peak, rss_kib(pid))
            for _ in range(5):
                due = loop.time() + 0.01
                await asyncio.sleep(0.01)
                lag.append(loop.time() - due)

    async def session(http: aiohttp.ClientSession, n: int) -> None:
        for r in range(rounds):
            try:
                status, seconds, body = await one_chat(http, url, f"user-{n}", f"question {r} from user {n}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if status == 200:
                (cold if r == 0 else warm).append((seconds, body.get("timings", {})))
            else:
                errors[str(status)] = errors.get(str(status), 0) + 1

    async with aiohttp.ClientSession() as http, http.get(f"{url}/metrics") as response:
        collections_before = gc_collections(await response.text())
    baseline = rss_kib(pid)
    cpu_before = {"server": cpu_seconds(pid), "backends": sum(map(cpu_seconds, backends))}
    client_before = time.process_time()
    sampler = asyncio.create_task(sample())
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=120)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(session(http, n) for n in range(sessions)))
        wall = time.perf_counter() - started
        async with http.get(f"{url}/metrics") as response:
            scraped = await response.text()
    collections = gc_collections(scraped)
    opened = re.search(r"^gorkheavy_backend_connections_opened_total (\S+)$", scraped, re.MULTILINE)
    # what the server answered (499: the client gave up first, e.g. at this load client's 120 s timeout)
    answered = {
        code: int(float(count))
        for code, count in re.findall(
            r'^gorkheavy_requests_total\{code="(\d+)",endpoint="/v1/chat"\} (\S+)$', scraped, re.MULTILINE
        )
    }
    done.set()
    await sampler
    requests = len(cold) + len(warm)
    cpu = {
        "server": cpu_seconds(pid) - cpu_before["server"],
        "backends": sum(map(cpu_seconds, backends)) - cpu_before["backends"],
        "load_client": time.process_time() - client_before,
    }

    def summary(values: list[tuple[float, dict[str, float]]]) -> dict[str, Any] | None:
        if not values:
            return None
        seconds = [e2e for e2e, _ in values]
        return {
            "p50_s": statistics.median(seconds),
            "p99_s": pct(seconds, 99),
            "max_s": max(seconds),
            "slowest_1pct_breakdown_s": tail_breakdown(values),
        }

    return {
        "sessions": sessions,
        "requests": sessions * rounds,
        "errors": errors,
        "all": summary(cold + warm),
        "first_round_cold": summary(cold),
        "later_rounds_warm": summary(warm),
        "wall_s": wall,
        "cpu_ms_per_request": {k: v * 1000 / max(1, requests) for k, v in cpu.items()},
        # every request makes 5 model calls; all but these found an idle connection in the pool
        "backend_connections_opened": int(float(opened.group(1))) if opened else None,
        # the server's garbage collections during the level, by generation
        "server_gc_collections": {g: n - collections_before.get(g, 0) for g, n in collections.items()},
        "server_status_codes": answered,
        "load_client_loop_lag_ms": {"p99": pct(lag, 99) * 1000, "max": max(lag) * 1000} if lag else None,
        "rss_before_mb": baseline / 1024,
        "rss_peak_mb": max(peak, rss_kib(pid, "VmHWM")) / 1024,
        "samples": [
            {"round": "cold" if values is cold else "warm", "seconds": e2e, "timings": t}
            for values in (cold, warm)
            for e2e, t in values
        ],
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def one_line(level: dict[str, Any]) -> str:
    """A level's figures in one line: what goes into a table of runs."""

    def ratio(key: str) -> str:
        part = level[key]
        return f"{part['p99_over_critical_path']:.2f}" if part else "-"

    before, after = level["load_average_before_after"]
    return (
        f"{level['sessions']} sessions, {level['requests']} requests: "
        f"cold p99/critical {ratio('first_round_cold')}, warm {ratio('later_rounds_warm')}, "
        f"errors {sum(level['errors'].values())}, RSS peak {level['rss_peak_mb']:.0f} MB, "
        f"server CPU {level['cpu_ms_per_request']['server']:.2f} ms/request, "
        f"load average {before[0]:.1f} / {after[0]:.1f}"
    )


def check_targets(figures: dict[str, Any]) -> dict[str, Any]:
    """Each target of the level against what was measured: {name: {"target", "measured", "met"}}."""
    wanted = TARGETS.get(figures["sessions"], {})
    measured = {
        "cold_p99_ratio": (figures["first_round_cold"] or {}).get("p99_over_critical_path"),
        "warm_p99_ratio": (figures["later_rounds_warm"] or {}).get("p99_over_critical_path"),
        "errors": sum(figures["errors"].values()),
        "rss_mb": figures["rss_peak_mb"],
    }
    return {
        name: {
            "target": limit,
            "measured": measured[name],
            "met": measured[name] is not None and measured[name] <= limit,
        }
        for name, limit in wanted.items()
    }


@dataclasses.dataclass(frozen=True)
class LoadSetup:
    """How the load part places its processes.

    ``warm``: ``http.warm_connections`` of the server (0: the server's default). ``pin``: the server alone
    on the first CPU, the stand-ins and this load client on the others (as in the cluster, where the
    model servers run elsewhere; other programs on the machine still share every CPU). ``loop``: the
    event loop of the stand-ins and the load client (``uvloop`` makes the load generator cheaper; the
    server's own loop is its configuration's). ``samples``: a file that gets one JSON line per request.
    """

    warm: int | None = None
    pin: bool = True
    loop: str = "uvloop"
    samples: Path | None = None

    def cpus(self) -> tuple[frozenset[int] | None, frozenset[int] | None]:
        """(the server's CPUs, everything else's), or (None, None) when not pinned."""
        every = sorted(os.sched_getaffinity(0))
        if not self.pin or len(every) < 2:
            return None, None
        return frozenset(every[:1]), frozenset(every[1:])


def run_loop(main: Any, loop: str) -> Any:
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415 - only for --loop uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def bench_load(workdir: Path, levels: Sequence[int], rounds: int, setup: LoadSetup) -> dict[str, Any]:
    lat = {"promptimizer": 1.0, "qwen-small": 1.0, "qwen": 2.0, "llama": 2.0, "judge": 1.0}
    path = critical_path(lat)
    results = []
    backends: list[int] = []
    server_cpus, other_cpus = setup.cpus()
    mine = os.sched_getaffinity(0)
    if other_cpus:
        os.sched_setaffinity(0, other_cpus)  # this process and the stand-ins it starts
    try:
        with standins(lat, workdir, backends, setup.loop) as url:
            for sessions in levels:
                # every session is in flight at once: the server must admit them all (2,000 > the default)
                http = {} if setup.warm is None else {"warm_connections": setup.warm}
                config = write_config(workdir, url, http=http, max_in_flight=max(512, sessions), max_queue=64)
                with gorkheavy_serve(config, workdir, server_cpus) as (api, pid):
                    before = load_average()
                    figures = run_loop(drive_sessions(api, pid, sessions, rounds, backends), setup.loop)
                    figures["load_average_before_after"] = [before, load_average()]
                samples = figures.pop("samples")
                if setup.samples is not None:  # one JSON line per request: its time and its timings
                    with setup.samples.open("a", encoding="utf-8") as out:
                        out.writelines(json.dumps({"sessions": sessions, **x}) + "\n" for x in samples)
                for key in ("all", "first_round_cold", "later_rounds_warm"):
                    if figures[key]:
                        figures[key]["p99_over_critical_path"] = figures[key]["p99_s"] / path
                figures["targets"] = check_targets(figures)
                results.append(figures)
    finally:
        os.sched_setaffinity(0, mine)
    return {
        "latencies_s": lat,
        "critical_path_s": path,
        "rounds_per_session": rounds,
        "setup": {**dataclasses.asdict(setup), "samples": str(setup.samples) if setup.samples else None},
        "levels": results,
    }


# -- (d) aiohttp client against the official ollama client ---------------------------------------------------


async def client_worker(kind: str, url: str, mode: str, count: int) -> dict[str, Any]:
    """Runs in a fresh process: ``count`` sequential calls, or ``count`` concurrent streams."""
    from gorkheavy.backends.ollama import OllamaClient, make_session  # noqa: PLC0415
    from gorkheavy.core.roster import ModelSpec  # noqa: PLC0415
    from gorkheavy.core.types import ChatMessage  # noqa: PLC0415

    model = "fast:1b" if mode == "seq" else "slow:1b"
    messages = [ChatMessage("user", "Why is the sky blue? Answer in one sentence please.")]
    spec = ModelSpec("m", model, url)
    if kind == "aiohttp":
        session = make_session(connect_timeout=5)
        client = OllamaClient(session)

        async def call() -> str:
            return (await client.chat(spec, messages, keep_alive="5m")).text

        async def close() -> None:
            await session.close()
    else:
        import httpx  # noqa: PLC0415
        import ollama  # noqa: PLC0415

        extra: dict[str, Any] = {}
        if kind == "ollama-unbounded":
            extra["limits"] = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        official = ollama.AsyncClient(host=url, timeout=120, **extra)

        async def call() -> str:
            parts = []
            stream = await official.chat(
                model=model, messages=[m.as_dict() for m in messages], stream=True, keep_alive="5m"
            )
            async for part in stream:
                parts.append(part.message.content or "")
            return "".join(parts)

        async def close() -> None:
            await official._client.aclose()

    for _ in range(10):
        await call()
    before = rss_kib(os.getpid())
    started = time.perf_counter()
    if mode == "seq":
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            await call()
            times.append(time.perf_counter() - t0)
        result = {"median_call_ms": statistics.median(times) * 1000, "p90_call_ms": pct(times, 90) * 1000}
    else:
        await asyncio.gather(*(call() for _ in range(count)))
        result = {"wall_s": time.perf_counter() - started}
    result["rss_growth_mb"] = (rss_kib(os.getpid(), "VmHWM") - before) / 1024
    result["rss_peak_mb"] = rss_kib(os.getpid(), "VmHWM") / 1024
    await close()
    return result


def bench_client(workdir: Path) -> dict[str, Any]:
    models = {"fast:1b": {"latency": 0, "chunks": CHUNKS}, "slow:1b": {"latency": 1.0, "chunks": CHUNKS}}
    out: dict[str, Any] = {}
    with standin(models, workdir) as url:
        for kind in ("aiohttp", "ollama", "ollama-unbounded"):
            for mode, count in (("seq", 300), ("conc", 500)):
                done = subprocess.run(
                    [
                        PYTHON,
                        __file__,
                        "--client-worker",
                        kind,
                        "--url",
                        url,
                        "--mode",
                        mode,
                        "--count",
                        str(count),
                    ],
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=300,
                    check=True,
                )
                out.setdefault(kind, {})[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


# -- report ------------------------------------------------------------------------------------------------


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def show(title: str, data: Any) -> None:
    print(f"\n== {title}")
    print(json.dumps(rounded(data), indent=2))
    sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="overhead,critical,load,client", help="comma-separated parts")
    parser.add_argument("--sessions", default="1,50,500,2000", help="concurrency levels for the load part")
    parser.add_argument("--repeat", type=int, default=1, help="runs of the load part (targets: every run)")
    parser.add_argument(
        "--warm", type=int, default=None, help="http.warm_connections of the server (default: its own)"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="load part: the server alone on the first CPU, stand-ins and load client on the others "
        "(default; --no-pin shares every CPU)",
    )
    parser.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="event loop of the load part's stand-ins and load client (default uvloop)",
    )
    parser.add_argument("--samples", type=Path, help="load part: append every request's timings (JSON lines)")
    parser.add_argument("--rounds", type=int, default=4, help="requests per session in the load part")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests in the overhead part")
    parser.add_argument("--client-worker", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_worker:
        print(json.dumps(asyncio.run(client_worker(args.client_worker, args.url, args.mode, args.count))))
        return 0

    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"overhead", "critical", "load", "client"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {CHUNKS} NDJSON chunks per model reply, "
        f"load average {load_average()}"
    )
    with tempfile.TemporaryDirectory(prefix="gorkheavy-bench-") as tmp:
        workdir = Path(tmp)
        if "overhead" in parts:
            show("(a) orchestrator overhead, sequential /v1/chat", bench_overhead(workdir, args.requests))
        if "critical" in parts:
            show("(b) critical path vs the design document's sequencing", bench_critical(workdir, 30))
        if "load" in parts:
            levels = [int(x) for x in args.sessions.split(",") if x.strip()]
            missed = []
            lines = []
            for run in range(1, args.repeat + 1):
                figures = bench_load(
                    workdir, levels, args.rounds, LoadSetup(args.warm, args.pin, args.loop, args.samples)
                )
                show(f"(c) concurrent sessions against one server, run {run} of {args.repeat}", figures)
                for level in figures["levels"]:
                    lines.append(f"run {run}: {one_line(level)}")
                    missed += [
                        f"run {run}, {level['sessions']} sessions: {name} {t['measured']} > {t['target']}"
                        for name, t in level["targets"].items()
                        if not t["met"]
                    ]
            print("\n" + "\n".join(lines))
            print("\nload targets: " + ("all met" if not missed else "MISSED\n  " + "\n  ".join(missed)))
        if "client" in parts:
            show("(d) aiohttp client vs the official ollama client", bench_client(workdir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
