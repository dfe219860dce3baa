"""``ollama``: the command line of the Ollama image as the lab's kubelet runs it (``ollama/ollama:<tag>``).

``ollama serve`` runs the stand-in server (``OllamaStandin``) with a model store on disk, laid out as Ollama's
(``$OLLAMA_MODELS/manifests/registry.ollama.ai/<namespace>/<model>/<tag>`` and ``blobs/sha256-<hex>``), so a
pulled model survives a restart on the pod's volume. ``list``, ``show``, ``pull`` and ``rm`` are clients of
that server, printing what the real CLI prints and exiting 1 with ``Error: <message>`` as it does.

Environment, as the real CLI reads it: ``OLLAMA_HOST`` (``[scheme://]host[:port]``, default
``127.0.0.1:11434``; the client uses it to find the server, ``serve`` to bind), ``OLLAMA_MODELS`` (default
``$HOME/.ollama/models``), ``OLLAMA_KEEP_ALIVE`` (how long a model stays loaded, default ``5m``).

Pulls come from the stand-in's catalogue (``CATALOGUE``), not from a registry: the lab has no network. A model
that is not in it fails as ``ollama pull`` fails for a name the registry does not have:
``Error: pull model manifest: file does not exist``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

# The client commands (list, show, pull, rm) use only the standard library, so that a probe's `ollama show`
# starts fast; `serve` imports aiohttp and the stand-in server.

VERSION = "0.33.3"
CATALOGUE = frozenset(
    {
        "granite4:350m",
        "granite4:latest",
        "llama3.2:1b",
        "llama3.2:3b",
        "llama3.2:latest",
        "qwen2.5-coder:1.5b",
        "qwen2.5-coder:0.5b",
        "qwen2.5:0.5b",
        "qwen3:0.6b",
        "qwen3:1.7b",
        "gemma3:1b",
        "gemma3:270m",
        "gemma3:latest",
        "smollm2:135m",
        "tinyllama:1.1b",
    }
)
CONNECT_ERROR = "could not connect to ollama server, run 'ollama serve' to start it"


def host_url(value: str | None) -> tuple[str, int, str]:
    """OLLAMA_HOST as envconfig.Host parses it: scheme (http), host (127.0.0.1), port (11434)."""
    text = (value or "").strip().strip("\"'")
    scheme = "http"
    if "://" in text:
        scheme, text = text.split("://", 1)
    text = text.split("/", 1)[0]
    host, port = text, "11434"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "11434"
    elif text.count(":") == 1:
        host, port = text.split(":")
    host = host or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        number = 11434
    return host, number, scheme


def models_dir() -> Path:
    given = os.environ.get("OLLAMA_MODELS")
    if given:
        return Path(given)
    return Path(os.environ.get("HOME", "/root")) / ".ollama" / "models"


def _log(level: str, msg: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + ".000Z"
    print(f"time={stamp} level={level} source=routes.go msg={json.dumps(msg)}", file=sys.stderr, flush=True)


def _store_standin(store: Path, version: str) -> Any:
    """The stand-in with its models in an Ollama model store on disk, pulls limited to the catalogue."""
    from ._models import ModelName  # noqa: PLC0415 - serve only
    from ._server import PULL_NOT_FOUND, OllamaStandin  # noqa: PLC0415

    class StoreStandin(OllamaStandin):
        """The stand-in with its models in an Ollama model store on disk, pulls limited to the catalogue."""

        def __init__(self, store: Path, **kwargs: Any) -> None:
            self.store = store
            super().__init__(**kwargs)
            self.pull_errors = _NotInCatalogue()
            manifests = store / "manifests"
            for path in sorted(manifests.glob("*/*/*/*")) if manifests.is_dir() else []:
                host, namespace, model, tag = path.relative_to(manifests).parts
                self.add_model(f"{host}/{namespace}/{model}:{tag}")

        keep_alive_ns = 300 * 1_000_000_000

        async def _load(self, request: Any, entry: Any, keep_alive: int | None) -> None:
            # a request without keep_alive gets OLLAMA_KEEP_ALIVE, as the server's default
            await super()._load(request, entry, self.keep_alive_ns if keep_alive is None else keep_alive)

        def _manifest(self, name: ModelName) -> Path:
            return self.store / "manifests" / name.host / name.namespace / name.model / name.tag

        def _install_pulled(self, raw_name: str, name: ModelName) -> None:
            super()._install_pulled(raw_name, name)
            display = name.display_shortest()
            weights = f"GGUF stand-in weights of {display}\n".encode()
            digest = hashlib.sha256(weights).hexdigest()
            blobs = self.store / "blobs"
            blobs.mkdir(parents=True, exist_ok=True)
            (blobs / f"sha256-{digest}").write_bytes(weights)
            manifest = {
                "schemaVersion": 2,
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "config": {
                    "mediaType": "application/vnd.docker.container.image.v1+json",
                    "digest": f"sha256:{digest}",
                    "size": len(weights),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.ollama.image.model",
                        "digest": f"sha256:{digest}",
                        "size": len(weights),
                    }
                ],
            }
            path = self._manifest(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(manifest))

        def _forget(self, key: tuple[str, str, str, str]) -> None:
            entry = self._models.get(key)
            super()._forget(key)
            if entry is not None:
                with contextlib.suppress(OSError):
                    self._manifest(entry.parsed).unlink()

    class _NotInCatalogue(dict[str, str]):
        """``pull_errors`` for every name outside the catalogue."""

        def get(self, key: str, default: Any = None) -> Any:
            name = ModelName.parse(key.strip())
            return None if name.display_shortest() in CATALOGUE else PULL_NOT_FOUND

    return StoreStandin(store, version=version)


async def serve() -> int:
    host, port, _scheme = host_url(os.environ.get("OLLAMA_HOST"))
    store = models_dir()
    try:
        store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"Error: mkdir {store}: {exc.strerror.lower() if exc.strerror else exc}", file=sys.stderr)
        return 1
    from aiohttp import web  # noqa: PLC0415 - serve only

    from ._golang import MAX_DURATION, parse_duration  # noqa: PLC0415

    keep_alive = os.environ.get("OLLAMA_KEEP_ALIVE", "") or "5m"
    try:  # envconfig.KeepAlive: a Go duration, or a number of seconds; negative keeps models loaded
        seconds = int(keep_alive)
        keep_alive_ns = seconds * 1_000_000_000 if seconds >= 0 else MAX_DURATION
    except ValueError:
        try:
            keep_alive_ns = parse_duration(keep_alive)
            if keep_alive_ns < 0:
                keep_alive_ns = MAX_DURATION
        except ValueError:
            _log(
                "WARN",
                f"invalid environment variable, using default: key=OLLAMA_KEEP_ALIVE value={keep_alive}",
            )
            keep_alive, keep_alive_ns = "5m", 300 * 1_000_000_000
    standin = _store_standin(store, VERSION)
    standin.keep_alive_ns = keep_alive_ns
    _log(
        "INFO",
        f"server config OLLAMA_HOST:http://{host}:{port} OLLAMA_KEEP_ALIVE:{keep_alive} "
        f"OLLAMA_MODELS:{store}",
    )
    runner = web.AppRunner(standin.make_app(), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        print(f"Error: listen tcp {host}:{port}: bind: {(exc.strerror or str(exc)).lower()}", file=sys.stderr)
        await runner.cleanup()
        return 1
    _log("INFO", f"Listening on {host}:{port} (version {VERSION})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    return 0


def _client_url() -> str:
    host, port, scheme = host_url(os.environ.get("OLLAMA_HOST"))
    if host in {"0.0.0.0", "::"}:
        host = "127.0.0.1"
    return f"{scheme}://{host}:{port}"


class _Fail(Exception):
    pass


def _open(method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(_client_url() + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        return urllib.request.urlopen(request, timeout=600)
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace")
        try:
            message = json.loads(text).get("error", text)
        except ValueError:
            message = text.strip() or f"{exc.code} {exc.reason}"
        raise _Fail(message) from None


def _json(method: str, path: str, body: Any = None) -> Any:
    with _open(method, path, body) as resp:
        text = resp.read().decode()
    return json.loads(text) if text else {}


def _lines(method: str, path: str, body: Any) -> Iterator[dict[str, Any]]:
    with _open(method, path, body) as resp:
        for line in resp:
            if line.strip():
                yield json.loads(line)


def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}" if n < scale * 10 else f"{n / scale:.0f} {unit}"
    return f"{n} B"


def _ago(stamp: str) -> str:
    import datetime as dt  # noqa: PLC0415

    try:
        when = dt.datetime.fromisoformat(stamp[:26].rstrip("Z") + "+00:00")
    except ValueError:
        return "Unknown"
    seconds = (dt.datetime.now(dt.UTC) - when).total_seconds()
    if seconds < 60:
        return "Less than a minute ago"
    if seconds < 3600:
        m = int(seconds // 60)
        return f"{m} minute{'s' if m > 1 else ''} ago"
    h = int(seconds // 3600)
    return f"{h} hour{'s' if h > 1 else ''} ago"


def _list() -> int:
    body = _json("GET", "/api/tags")
    rows = [("NAME", "ID", "SIZE", "MODIFIED")]
    for m in body.get("models") or []:
        rows.append((m["name"], m["digest"][:12], _size(int(m["size"])), _ago(m.get("modified_at", ""))))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("    ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip())
    return 0


def _show(name: str) -> int:
    body = _json("POST", "/api/show", {"model": name})
    details = body.get("details", {})
    info = body.get("model_info", {})
    family = details.get("family", "")
    print("  Model")
    print(f"    architecture        {family}")
    print(f"    parameters          {details.get('parameter_size', '')}")
    print(f"    context length      {info.get(f'{family}.context_length', '')}")
    print(f"    embedding length    {info.get(f'{family}.embedding_length', '')}")
    print(f"    quantization        {details.get('quantization_level', '')}")
    print()
    print("  Capabilities")
    for cap in body.get("capabilities") or []:
        print(f"    {cap}")
    print()
    return 0


def _pull(name: str) -> int:
    for step in _lines("POST", "/api/pull", {"model": name}):
        if "error" in step:
            raise _Fail(step["error"])
        status = step.get("status", "")
        if "total" in step and "completed" in step:
            print(f"{status}: {_size(int(step['completed']))}/{_size(int(step['total']))}", flush=True)
        elif "total" not in step:
            print(status, flush=True)
    return 0


def client(command: str, args: list[str]) -> int:
    if command == "list":
        return _list()
    if not args:
        raise _Fail(
            "accepts 1 arg(s), received 0"
            if command != "rm"
            else "requires at least 1 arg(s), only received 0"
        )
    if command == "show":
        return _show(args[0])
    if command == "pull":
        return _pull(args[0])
    if command == "rm":
        for model in args:
            _json("DELETE", "/api/delete", {"model": model})
            print(f"deleted '{model}'")
        return 0
    raise _Fail(f'unknown command "{command}" for "ollama"')


USAGE = """Large language model runner

Usage:
  ollama [flags]
  ollama [command]

Available Commands:
  serve       Start ollama
  show        Show information for a model
  pull        Pull a model from a registry
  list        List models
  rm          Remove a model

Flags:
  -h, --help      help for ollama
  -v, --version   Show version information
"""


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        return 0
    if args[0] in {"-v", "--version"}:
        print(f"ollama version is {VERSION}")
        return 0
    command, rest = args[0], args[1:]
    command = {"ls": "list", "delete": "rm"}.get(command, command)
    if command == "serve":
        return asyncio.run(serve())
    try:
        return client(command, rest)
    except _Fail as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError):
        print(f"Error: {CONNECT_ERROR}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
