"""The ``gorkheavy`` command: chat, ask, serve, doctor.

Exit codes: 0 success (also when a chat ends with exit/quit/EOF/Ctrl-C at the prompt; Ctrl-C during an
answer cancels that answer), 1 the ensemble or a backend failed,
2 the command line or the configuration is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import IO, Any

from gorkheavy import __version__
from gorkheavy.backends.cache import CacheError
from gorkheavy.backends.memory import MemoryStoreError, open_store
from gorkheavy.config import CONFIG_ENV, AppConfig, ConfigError, load, state_dir
from gorkheavy.core.text import printable
from gorkheavy.core.types import AllExpertsFailedError, EnsembleResult, StageEvent, StageStatus, Strategy
from gorkheavy.runtime import (
    EventLoopUnavailable,
    Runtime,
    check_backends,
    event_loop_factory,
    open_client,
    open_runtime,
)

EXIT_WORDS = frozenset({"exit", "quit", ":q", "/exit", "/quit"})
_SPINNER = "|/-\\"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help=f"YAML config file (default: ${CONFIG_ENV}, else the built-in in-cluster roster)",
    )
    parser = argparse.ArgumentParser(
        prog="gorkheavy",
        description="Ask an ensemble of Ollama models: a promptimizer, parallel experts and a judge.",
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"gorkheavy {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def strategy(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--strategy",
            choices=[s.value for s in Strategy],
            help="how the judge decides (default: the config's strategy)",
        )

    chat = sub.add_parser("chat", parents=[common], help="interactive session (YOU: / Reply:)")
    chat.add_argument("--session", default="default", help="conversation name for memory (default: default)")
    chat.add_argument("--show-candidates", action="store_true", help="print every expert's answer too")
    strategy(chat)

    ask = sub.add_parser("ask", parents=[common], help="answer one question and exit")
    ask.add_argument("question", help="the question (use '-' to read it from stdin)")
    ask.add_argument("--session", help="remember this exchange in a named conversation (default: none)")
    ask.add_argument("--json", action="store_true", help="print the whole result as JSON")
    ask.add_argument("--show-candidates", action="store_true", help="print every expert's answer too")
    strategy(ask)

    serve = sub.add_parser("serve", parents=[common], help="run the HTTP API")
    serve.add_argument("--host", help="address to listen on (default: server.host of the config)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port of the config)")

    doctor = sub.add_parser("doctor", parents=[common], help="check every backend of the roster")
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON")
    doctor.add_argument("--timeout", type=float, default=5.0, help="seconds per backend (default: 5)")
    return parser


class Progress:
    """A one-line indicator on a terminal's stderr while the models work (nothing when not a terminal)."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._enabled = stream.isatty()
        self._state: dict[str, str] = {}
        self._started = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def on_event(self, event: StageEvent) -> None:
        marks = {StageStatus.START: "...", StageStatus.OK: " ok", StageStatus.ERROR: " failed"}
        if event.status in marks:
            self._state[event.name] = marks[event.status]

    async def _render(self) -> None:
        frame = 0
        while True:
            parts = " ".join(f"{name}{mark}" for name, mark in self._state.items())
            line = f"{_SPINNER[frame % 4]} {time.monotonic() - self._started:5.1f}s {parts}"
            width = 200
            with contextlib.suppress(OSError):
                width = os.get_terminal_size(self._stream.fileno()).columns - 1
            self._stream.write("\r\x1b[2K" + line[:width])
            self._stream.flush()
            frame += 1
            await asyncio.sleep(0.1)

    async def __aenter__(self) -> Progress:
        self._started = time.monotonic()
        self._state.clear()
        if self._enabled:
            self._task = asyncio.create_task(self._render())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            self._stream.write("\r\x1b[2K")
            self._stream.flush()


def _as_is(text: str) -> str:
    return text


def _print_candidates(result: EnsembleResult, out: IO[str], shown: Callable[[str], str] = _as_is) -> None:
    """Every candidate under the answer; ``shown`` makes model text safe for a terminal."""
    out.write(f"  (winner: {result.winner}, decided by: {result.verdict_source.value})\n")
    for candidate in result.candidates:
        mark = "*" if candidate.name == result.winner else " "
        about = f"{candidate.model}, {candidate.query} query, {candidate.seconds:.2f}s"
        head = f"  {mark} {candidate.name} [{about}]"
        if candidate.ok:
            body = "\n".join("      " + line for line in shown(candidate.text).splitlines())
            out.write(f"{head}\n{body}\n")
        else:
            out.write(f"{head} failed: {shown(candidate.error)}\n")


def _failure(exc: AllExpertsFailedError) -> str:
    lines = ["Error: no expert produced an answer; the session is unchanged, try again."]
    lines += [f"  {c.name}: {c.error or 'empty answer'}" for c in exc.candidates]
    return "\n".join(lines)


def _history_file(environ: Mapping[str, str]) -> Path:
    return state_dir(environ) / "chat_history"


def _setup_readline(environ: Mapping[str, str]) -> Any:
    """Line editing and a persistent history (stdlib readline) when the terminal supports it."""
    try:
        import readline  # noqa: PLC0415 - optional at runtime (absent on some builds)
    except ImportError:
        return None
    path = _history_file(environ)
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.read_history_file(path)
    readline.set_history_length(1000)
    return readline


def _save_history(readline: Any, environ: Mapping[str, str]) -> None:
    if readline is None:
        return
    with contextlib.suppress(OSError):
        readline.write_history_file(_history_file(environ))


@contextlib.contextmanager
def _ctrl_c(interactive: bool) -> Iterator[None]:
    """Ctrl-C interrupts while a person chats at a terminal, even when the process was started with SIGINT
    ignored (from a shell's background job, or by a container runtime that passed that on). Python leaves an
    inherited ignored SIGINT ignored, and asyncio's runner then does not turn it into a cancellation."""
    if not interactive or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _chat(config: AppConfig, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    out, err = sys.stdout, sys.stderr
    strategy = Strategy(args.strategy) if args.strategy else None
    interactive = sys.stdin.isatty()
    readline = _setup_readline(environ) if interactive else None
    progress = Progress(err)
    with _ctrl_c(interactive), asyncio.Runner() as runner:
        stack = AsyncExitStack()
        try:
            runtime: Runtime = runner.run(
                stack.enter_async_context(open_runtime(config, environ, listeners=[progress.on_event]))
            )
        except (MemoryStoreError, CacheError) as exc:
            err.write(f"Error: {exc}\n")
            return 1
        try:
            err.write(f"gorkheavy chat, session '{args.session}'. Type exit or quit (or Ctrl-D) to leave.\n")
            while True:
                try:
                    line = input("YOU: ")
                except EOFError:
                    out.write("\n")
                    break
                question = line.strip()
                if not question:
                    continue
                if question.lower() in EXIT_WORDS:
                    break

                async def turn(question: str = question) -> EnsembleResult:
                    async with progress:
                        return await runtime.pipeline.run(args.session, question, strategy=strategy)

                try:
                    result = runner.run(turn())
                except KeyboardInterrupt:  # Ctrl-C cancels this answer; at the prompt it leaves
                    err.write("\n(cancelled)\n")
                    continue
                except AllExpertsFailedError as exc:
                    err.write(printable(_failure(exc)) + "\n")
                    continue
                except MemoryStoreError as exc:
                    err.write(f"Error: {exc}\n")
                    continue
                if result.memory_error:
                    err.write(f"warning: this exchange was not remembered: {result.memory_error}\n")
                out.write(f"Reply: {printable(result.answer)}\n")
                if args.show_candidates:
                    _print_candidates(result, out, printable)
                out.write("\n")
                out.flush()
        except KeyboardInterrupt:
            out.write("\n")
        finally:
            _save_history(readline, environ)
            with contextlib.suppress(KeyboardInterrupt):
                runner.run(stack.aclose())
    return 0


async def _ask(config: AppConfig, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    question = sys.stdin.read() if args.question == "-" else args.question
    question = question.strip()
    if not question:
        sys.stderr.write("Error: the question is empty; pass it as an argument or on stdin with '-'\n")
        return 2
    strategy = Strategy(args.strategy) if args.strategy else None
    progress = Progress(sys.stderr)
    if not args.session:  # nothing to remember: keep the store out of it
        stateless = config.memory.model_copy(update={"store": "none", "path": None, "dsn": None})
        config = dataclasses.replace(config, memory=stateless)
    async with open_runtime(config, environ, listeners=[progress.on_event]) as runtime:
        try:
            async with progress:
                result = await runtime.pipeline.run(
                    args.session or "ask",
                    question,
                    strategy=strategy,
                    history=None if args.session else [],
                    remember=bool(args.session),
                )
        except AllExpertsFailedError as exc:
            if args.json:
                payload = {"error": str(exc), "candidates": [c.as_dict() for c in exc.candidates]}
                sys.stdout.write(json.dumps(payload, indent=2) + "\n")
            sys.stderr.write(_failure(exc) + "\n")
            return 1
    if result.memory_error:
        sys.stderr.write(f"warning: this exchange was not remembered: {result.memory_error}\n")
    if args.json:
        sys.stdout.write(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")
    else:
        shown = printable if sys.stdout.isatty() else _as_is  # a pipe gets the text as the model wrote it
        sys.stdout.write(shown(result.answer) + "\n")
        if args.show_candidates:
            _print_candidates(result, sys.stdout, shown)
    return 0


async def _doctor(config: AppConfig, args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    out = sys.stdout
    problems = 0
    roster = config.pipeline.roster
    async with open_client(config) as client:
        checks = await check_backends(client, config, limit_s=args.timeout)
    try:
        store = await open_store(config, environ)
        try:
            store_line = f"ok   memory: {await store.check()}"
        finally:
            await store.close()
    except MemoryStoreError as exc:
        store_line = f"FAIL memory: {exc}"
        problems += 1
    problems += sum(not c.ok for c in checks)
    if args.json:
        payload = {
            "config": config.source,
            "ok": problems == 0,
            "warnings": list(config.warnings),
            "memory": store_line,
            "backends": [c.as_dict() for c in checks],
        }
        out.write(json.dumps(payload, indent=2) + "\n")
        return 0 if problems == 0 else 1
    out.write(
        f"config: {config.source} ({len(roster.experts)} experts, strategy {config.pipeline.strategy.value}, "
        f"memory {config.memory.store}, last {config.pipeline.memory_turns} exchanges)\n"
    )
    for warning in config.warnings:
        out.write(f"warn {warning}\n")
    width = max(len(c.spec.name) for c in checks)
    for check in checks:
        where = f"{check.spec.name:<{width}}  {check.role:<12} {check.spec.model} at {check.spec.where}"
        if check.ok:
            out.write(f"ok   {where}\n")
        else:
            out.write(f"FAIL {where}\n       problem: {check.problem}\n       fix: {check.fix}\n")
    out.write(store_line + "\n")
    out.write("all backends ready\n" if problems == 0 else f"{problems} problem(s) found\n")
    return 0 if problems == 0 else 1


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    args = _parser().parse_args(argv)
    try:
        config = load(getattr(args, "config", None), environ)
    except ConfigError as exc:
        sys.stderr.write(f"Error: invalid configuration: {exc}\n")
        return 2
    for warning in config.warnings:
        if args.command not in ("doctor",):
            sys.stderr.write(f"warning: {warning}\n")
    try:
        if args.command == "chat":
            return _chat(config, args, environ)
        if args.command == "ask":
            return asyncio.run(_ask(config, args, environ))
        if args.command == "doctor":
            return asyncio.run(_doctor(config, args, environ))
        from gorkheavy import server  # noqa: PLC0415 - only the server needs aiohttp.web

        factory = event_loop_factory(config.server.event_loop)
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(server.serve(config, environ, host=args.host, port=args.port))
    except (MemoryStoreError, CacheError) as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 1
    except EventLoopUnavailable as exc:
        sys.stderr.write(f"Error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130  # interrupted one-shot command (chat and serve end cleanly on their own)


if __name__ == "__main__":
    sys.exit(main())
