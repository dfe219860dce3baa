"""K3s logs with logrus's text formatter: ``time="2026-08-27T10:00:00Z" level=info msg="..."`` on stderr,
which systemd puts in the journal. Values are quoted the way logrus quotes them (Go's %q)."""

from __future__ import annotations

import datetime as dt
import re
import sys
from typing import TextIO

LEVELS = ("debug", "info", "warning", "error", "fatal")


_PLAIN = re.compile(r"^[A-Za-z0-9\-._/@^+]+$")


def logrus_value(text: str) -> str:
    """logrus quotes a value only when it holds anything beyond letters, digits and ``-._/@^+``."""
    return text if _PLAIN.match(text) else go_quote(text)


def go_quote(text: str) -> str:
    """Go's strconv.Quote for the characters that occur in log messages."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


class Logger:
    def __init__(self, stream: TextIO | None = None, *, debug: bool = False) -> None:
        self._stream = stream
        self.debug_enabled = debug

    def _emit(self, level: str, msg: str) -> None:
        now = dt.datetime.now(dt.UTC).astimezone()
        stamp = now.isoformat(timespec="seconds").replace("+00:00", "Z")
        line = f"time={logrus_value(stamp)} level={level} msg={logrus_value(msg)}\n"
        stream = self._stream or sys.stderr
        stream.write(line)
        stream.flush()

    def debug(self, msg: str) -> None:
        if self.debug_enabled:
            self._emit("debug", msg)

    def info(self, msg: str) -> None:
        self._emit("info", msg)

    def warning(self, msg: str) -> None:
        self._emit("warning", msg)

    def error(self, msg: str) -> None:
        self._emit("error", msg)

    def fatal(self, msg: str) -> None:
        self._emit("fatal", msg)
