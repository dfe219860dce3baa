"""The stand-in's HTTPS listeners (the API server on 6443, the kubelet on 10250) with K3s's quick stop.

K3s stops within seconds of SIGTERM: its servers end open watches and drop streaming connections (exec,
attach, logs) instead of waiting for the clients to hang up. aiohttp's runner waits up to
``shutdown_timeout`` (60 s by default) for the handlers still running, and the agents' watches never end on
their own, so every stop of the server would take a minute. Handlers that stream end on ``app.on_shutdown``;
whatever is still running is cancelled after :data:`SHUTDOWN_TIMEOUT`.

The nodes run Debian 12's aiohttp 3.8, where the timeout is an argument of the site; from 3.9 on it belongs
to the runner (and the site's argument is deprecated). :func:`listener` sets it where the installed aiohttp
takes it.
"""

from __future__ import annotations

import inspect
import os
import ssl
import sys
import threading

from aiohttp import web

from .logs import Logger

# Seconds the handlers still running at a stop get to finish before they are cancelled.
SHUTDOWN_TIMEOUT = 2.0

# Seconds an orderly stop may take after SIGTERM before the process exits regardless: the agent's, and the
# server's (its listeners' SHUTDOWN_TIMEOUT, the embedded agent's connections and the datastore's close).
AGENT_STOP_GRACE = 5.0
SERVER_STOP_GRACE = 10.0


def exit_after(grace: float, log: Logger) -> threading.Timer:
    """End the process ``grace`` seconds from now, should the orderly stop still run then. K3s stops within
    seconds of SIGTERM; a connection that hangs in the stop (a peer that stopped answering) or a machine too
    busy to finish it must not hold `systemctl stop` up until systemd's stop timeout kills the process. The
    datastore commits each write on its own, so nothing written is lost."""

    def _exit() -> None:
        log.warning(f"Shutdown did not finish within {grace:.0f}s of the signal; exiting")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    timer = threading.Timer(grace, _exit)
    timer.daemon = True
    timer.start()
    return timer


_ON_RUNNER = "shutdown_timeout" in inspect.signature(web.BaseRunner.__init__).parameters


async def listener(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext
) -> tuple[web.AppRunner, web.TCPSite]:
    """A set-up runner and its (not yet started) TCP site; ``runner.cleanup()`` stops both."""
    if _ON_RUNNER:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        return runner, web.TCPSite(runner, host, port, ssl_context=ssl_context)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    return runner, web.TCPSite(runner, host, port, ssl_context=ssl_context, shutdown_timeout=SHUTDOWN_TIMEOUT)
