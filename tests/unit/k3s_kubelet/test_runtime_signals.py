"""Container processes start with every signal at its default action, as runc starts them: a kubelet started
from a shell's background job has SIGINT and SIGQUIT ignored, and an ignored signal survives exec."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from gorkheavy_lab.k3s.stream.process import default_signals


def _status_lines(preexec: Callable[[], None] | None) -> list[str]:
    async def run() -> bytes:
        proc = await asyncio.create_subprocess_exec(
            "grep",
            "-E",
            "^Sig(Ign|Blk)",
            "/proc/self/status",
            stdout=asyncio.subprocess.PIPE,
            preexec_fn=preexec,
        )
        out, _ = await proc.communicate()
        return out

    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGQUIT)}
    try:
        return asyncio.run(run()).decode().splitlines()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# glibc keeps signals 32 and 33 for itself (no process can change their disposition), so an ignored one that
# this process inherited stays ignored in every child; the standard signals 1 to 31 are what matters
STANDARD = (1 << 31) - 1


def _mask(line: str) -> int:
    return int(line.split(":")[1], 16)


def test_inherited_ignored_signals_are_reset() -> None:
    # what the kubelet's children would get without it: SIGINT (2) and SIGQUIT (3) ignored
    assert _mask(_status_lines(None)[1]) & 0b110 == 0b110
    blocked, ignored = _status_lines(default_signals)
    assert _mask(blocked) == 0, blocked
    assert _mask(ignored) & STANDARD == 0, ignored
