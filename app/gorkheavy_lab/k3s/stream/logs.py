"""Container logs as the kubelet serves them from the CRI log files (``<RFC3339Nano> stdout|stderr F|P
<text>`` lines, one file per container instance): the ``containerLogs`` options ``tailLines``,
``sinceSeconds``/``sinceTime``, ``timestamps``, ``limitBytes``, ``stream`` and ``follow``
(``pkg/kubelet/kuberuntime/logs``): a full (``F``) record ends its line, a partial one (``P``) does not; with
``timestamps`` each line starts with the time of its first record."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass

_RECORD = re.compile(rb"^(\S+) (stdout|stderr) (F|P) ?(.*)$", re.DOTALL)
_FRACTION = re.compile(r"\.(\d+)")


class OptionError(ValueError):
    """A bad query parameter (the text is the API server's validation message)."""


def parse_time(text: str) -> dt.datetime:
    """RFC 3339 with up to nanoseconds, as Go writes it (Python keeps microseconds)."""
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Record:
    time: dt.datetime
    stamp: bytes  # the timestamp as written, for ``timestamps=true``
    stream: str
    full: bool
    text: bytes


def parse_record(line: bytes) -> Record | None:
    """One CRI log line (without its newline); None for a line that is not one (the kubelet skips those)."""
    match = _RECORD.match(line)
    if match is None:
        return None
    stamp, stream, tag, text = match.groups()
    try:
        when = parse_time(stamp.decode())
    except ValueError:
        return None
    return Record(when, stamp, stream.decode(), tag == b"F", text)


@dataclass(frozen=True)
class LogOptions:
    tail_lines: int | None = None
    since: dt.datetime | None = None
    timestamps: bool = False
    limit_bytes: int | None = None
    follow: bool = False
    streams: frozenset[str] = frozenset({"stdout", "stderr"})

    @classmethod
    def from_query(cls, query: dict[str, str], now: dt.datetime | None = None) -> LogOptions:
        def number(key: str, minimum: int) -> int | None:
            if key not in query or query[key] == "":
                return None
            try:
                value = int(query[key])
            except ValueError as exc:
                raise OptionError(f"{key}: Invalid value: {query[key]!r}: must be an integer") from exc
            if value < minimum:
                what = "greater than or equal to 0" if minimum == 0 else "greater than 0"
                raise OptionError(f"{key}: Invalid value: {value}: must be {what}")
            return value

        tail = number("tailLines", 0)
        limit = number("limitBytes", 1)
        since_seconds = number("sinceSeconds", 1)
        since_time = query.get("sinceTime") or None
        if since_seconds is not None and since_time is not None:
            raise OptionError(
                "sinceSeconds: Forbidden: at most one of sinceTime or sinceSeconds may be specified"
            )
        since = None
        if since_seconds is not None:
            since = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(seconds=since_seconds)
        elif since_time is not None:
            try:
                since = parse_time(since_time)
            except ValueError as exc:
                raise OptionError(f"sinceTime: Invalid value: {since_time!r}: {exc}") from exc
        stream = query.get("stream", "")
        streams = {"": {"stdout", "stderr"}, "All": {"stdout", "stderr"}, "Stdout": {"stdout"}}.get(
            stream, {"stderr"} if stream == "Stderr" else None
        )
        if streams is None:
            raise OptionError(
                f'stream: Unsupported value: "{stream}": supported values: "All", "Stderr", "Stdout"'
            )
        if tail is not None and stream not in {"", "All"}:
            raise OptionError(
                "tailLines: Forbidden: tailLines and specific stream are mutually exclusive for now"
            )
        truth = {"1", "true", "True", "TRUE", "t", "T"}
        return cls(
            tail_lines=tail,
            since=since,
            timestamps=query.get("timestamps", "") in truth,
            limit_bytes=limit,
            follow=query.get("follow", "") in truth,
            streams=frozenset(streams),
        )


class Formatter:
    """Turns records into the bytes ``kubectl logs`` prints, keeping what ``limitBytes`` still allows."""

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.remaining = options.limit_bytes
        self._open: dict[str, bool] = {}  # stream -> a partial line is open

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def format(self, record: Record) -> bytes:
        opts = self.options
        if record.stream not in opts.streams or (opts.since is not None and record.time < opts.since):
            return b""
        prefix = b""
        if opts.timestamps and not self._open.get(record.stream):
            prefix = record.stamp + b" "
        self._open[record.stream] = not record.full
        out = prefix + record.text + (b"\n" if record.full else b"")
        if self.remaining is not None:
            out = out[: self.remaining]
            self.remaining -= len(out)
        return out


def tail_start(data: bytes, lines: int) -> int:
    """Offset of the ``lines``-th line from the end of ``data`` (the kubelet counts the file's lines)."""
    if lines == 0:
        return len(data)
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    pos = end
    for _ in range(lines):
        pos = data.rfind(b"\n", 0, pos)
        if pos < 0:
            return 0
    return pos + 1


def split_lines(data: bytes) -> tuple[Iterator[bytes], bytes]:
    """Complete lines (without newline) and the unterminated rest."""
    cut = data.rfind(b"\n") + 1
    return iter(data[:cut].split(b"\n")[:-1]), data[cut:]
