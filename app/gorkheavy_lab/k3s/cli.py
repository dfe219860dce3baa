"""The ``k3s`` command of the zipapp: ``--version``, ``server``, ``agent``."""

from __future__ import annotations

import asyncio
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import flags, release
from .logs import Logger

APP_HELP = """NAME:
   k3s - Kubernetes, but small and simple

USAGE:
   k3s [global options] command [command options] [arguments...]

VERSION:
   {version}

COMMANDS:
   server  Run management server
   agent   Run node agent

GLOBAL OPTIONS:
   --debug        (logging) Turn on debug logs [$K3S_DEBUG]
   --help, -h     show help
   --version, -v  print the version
"""


def version_text(rel: release.Release) -> str:
    return f"k3s version {rel.version} ({rel.short_commit})\ngo version {rel.go_version}\n"


async def run_agent(values: dict[str, Any], args: list[str], rel: release.Release, log: Logger) -> None:
    from . import server  # noqa: PLC0415
    from .agent import Agent, AgentConfig, JoinError, LoadBalancer, read_token, token_or_error  # noqa: PLC0415

    raw = read_token(values)
    if not raw:
        raise server.FatalError("--token is required")
    url = str(values.get("server") or "")
    if not url:
        raise server.FatalError("--server is required")
    if not url.startswith("https://"):
        raise server.FatalError(f"only https:// URLs are supported, invalid scheme: {url}")
    try:
        token = token_or_error(raw)
    except JoinError as exc:
        raise server.FatalError(str(exc)) from exc
    data_dir = Path(values.get("data-dir") or "/var/lib/rancher/k3s")
    from . import images  # noqa: PLC0415

    images.import_dir(data_dir, log)
    host_port = url.removeprefix("https://").split("/", 1)[0]
    if ":" not in host_port.rsplit("]", 1)[-1]:
        host_port += ":443"
    lb_port = int(values.get("lb-server-port") or 6444)
    balancer = None
    supervisor = url.rstrip("/")
    if not values.get("disable-apiserver-lb"):
        balancer = LoadBalancer(lb_port, host_port, log)
        try:
            await balancer.start()
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise server.FatalError(
                f"failed to create load balancer: listen tcp 127.0.0.1:{lb_port}: bind: {reason}"
            ) from exc
        supervisor = f"https://127.0.0.1:{lb_port}"
    ident = server.identity(values, args, server_role=False, towards=host_port.rsplit(":", 1)[0])
    agent = Agent(
        AgentConfig(url, supervisor, token, ident, data_dir, server.etc_dir() / "node" / "password", rel), log
    )
    import signal  # noqa: PLC0415

    from . import serving  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    task = asyncio.create_task(agent.run())

    def terminate() -> None:
        # K3s's agent exits at once on SIGTERM and leaves the pods' containers running (its unit has
        # KillMode=process). The orderly close of the stand-in's connections gets a few seconds; should one
        # of them hang (a peer that stopped answering), the process exits anyway instead of holding up
        # `systemctl restart` until systemd's stop timeout kills it.
        task.cancel()
        serving.exit_after(serving.AGENT_STOP_GRACE, log)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, terminate)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        if balancer is not None:
            await balancer.stop()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv if argv is None else argv)[1:]
    rel = release.current()
    debug = False
    while args and args[0] in {"--debug", "-debug"}:
        debug = True
        args.pop(0)
    log = Logger(debug=debug)
    if not args or args[0] in {"--help", "-h", "help"}:
        sys.stdout.write(APP_HELP.format(version=f"{rel.version} ({rel.short_commit})"))
        return 0
    if args[0] in {"--version", "-v", "-version"}:
        sys.stdout.write(version_text(rel))
        return 0
    command, rest = args[0], args[1:]
    if command not in flags.COMMANDS:
        if command.startswith("-"):
            sys.stdout.write(f"Incorrect Usage. flag provided but not defined: -{command.lstrip('-')}\n\n")
            sys.stdout.write(APP_HELP.format(version=f"{rel.version} ({rel.short_commit})"))
            log.fatal(f"flag provided but not defined: -{command.lstrip('-')}")
            return 1
        log.fatal(f'the K3s stand-in does not model the "{command}" command')
        return 1
    env = flags.getenv()
    try:
        values = flags.resolve(command, rest, env, log)
    except flags.UsageError as exc:
        sys.stdout.write(f"Incorrect Usage: {exc}\n\n{flags.command_help(command)}")
        sys.stdout.flush()
        log.fatal(str(exc))
        return 1
    except flags.ConfigError as exc:
        log.fatal(str(exc))
        return 1
    if values.get("help"):
        sys.stdout.write(flags.command_help(command))
        return 0
    if values.get("debug"):
        log.debug_enabled = True
    from . import server  # noqa: PLC0415 - aiohttp and cryptography load only for the daemons

    try:
        if command == "server":
            asyncio.run(server.run(values, rest, rel, log))
        else:
            asyncio.run(run_agent(values, rest, rel, log))
    except server.FatalError as exc:
        log.fatal(str(exc))
        return 1
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # a fatal line in the journal; the trace only with --debug
        log.debug(traceback.format_exc())
        log.fatal(f"{type(exc).__name__}: {exc}")
        return 1
    return 0
