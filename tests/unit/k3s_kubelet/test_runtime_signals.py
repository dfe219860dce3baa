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


def test_inherited_ignored_signals_are_reset() -> None:
    # what the kubelet's children would get without it: SIGINT (2) and SIGQUIT (3) ignored
    assert _status_lines(None)[1] == "SigIgn:\t0000000000000006"
    assert _status_lines(default_signals) == ["SigBlk:\t0000000000000000", "SigIgn:\t0000000000000000"]
