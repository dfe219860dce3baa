"""``python -m gorkheavy_lab.ollama``: run the Ollama stand-in as its own process (see the package docs)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Sequence
from typing import Any

from ._models import FAILURES, ModelBehavior
from ._server import DEFAULT_VERSION, OllamaStandin

_FIELDS = {f.name: f for f in dataclasses.fields(ModelBehavior)}
_NUMBERS = {"latency", "chunk_delay", "load_latency"}
_INTEGERS = {"chunks", "failure_after_chunks", "failure_count", "error_status", "size", "context_length"}
_INTEGERS |= {"embedding_length", "parallel"}
_STRINGS = {"reply", "thinking", "failure", "error_message", "family", "parameter_size", "quantization_level"}


def _value(key: str, text: str) -> Any:
    if key in _NUMBERS:
        return float(text)
    if key in _INTEGERS:
        return None if text.lower() == "none" else int(text)
    if key == "capabilities":
        return tuple(c for c in text.split("+") if c)
    if key in _STRINGS:
        return text
    raise argparse.ArgumentTypeError(f"unknown or unsupported model setting {key!r}")


def _model_spec(spec: str, defaults: ModelBehavior) -> tuple[str, ModelBehavior]:
    """``NAME[,key=value...]`` -> (name, behaviour based on the command-line defaults)."""
    name, *settings = spec.split(",")
    changes: dict[str, Any] = {}
    for setting in settings:
        key, sep, text = setting.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in _FIELDS:
            raise argparse.ArgumentTypeError(f"bad model setting {setting!r} in {spec!r}")
        changes[key] = _value(key, text)
    return name.strip(), dataclasses.replace(defaults, **changes)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gorkheavy_lab.ollama", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=11434, help="0 picks a free port (printed on start)")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME[,key=value...]",
        help="a model to serve (repeat); settings override the defaults below, e.g. gemma3:1b,latency=0.2",
    )
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--load-latency", type=float, default=0.0, help="extra seconds when not loaded")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between chunks")
    parser.add_argument("--chunks", type=int, default=None, help="pieces per answer (default: one per word)")
    parser.add_argument("--reply", default=None, help="fixed answer text (default: derived from the request)")
    parser.add_argument("--parallel", type=int, default=None, help="requests a model answers at once")
    parser.add_argument("--max-queue", type=int, default=512, help="waiting requests before 503 (busy)")
    parser.add_argument("--failure", choices=FAILURES, default="none")
    parser.add_argument("--version", default=DEFAULT_VERSION, help="what /api/version reports")
    parser.add_argument("--no-pull", action="store_true", help="refuse to pull models that are not served")
    parser.add_argument("--no-record", action="store_true", help="do not keep the requests (long runs)")
    return parser


async def _run(standin: OllamaStandin, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with standin.serve(host, port) as url:
        print(f"listening on {url}", flush=True)
        print(f"models: {', '.join(standin.model_names) or '(none)'}", flush=True)
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    defaults = ModelBehavior(
        reply=args.reply,
        latency=args.latency,
        load_latency=args.load_latency,
        chunk_delay=args.chunk_delay,
        chunks=args.chunks,
        parallel=args.parallel,
        failure=args.failure,
    )
    try:
        models = dict(_model_spec(spec, defaults) for spec in args.model)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    standin = OllamaStandin(
        models,
        version=args.version,
        default_behavior=defaults,
        allow_pull=not args.no_pull,
        record=not args.no_record,
        max_queue=args.max_queue,
    )
    asyncio.run(_run(standin, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
