"""The channel protocols' framing, Status documents and terminal sizes; CRI log records and options."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from gorkheavy_lab.k3s.stream import channels
from gorkheavy_lab.k3s.stream.channels import Protocol, ProtocolError
from gorkheavy_lab.k3s.stream.logs import Formatter, LogOptions, OptionError, parse_record, tail_start


def test_binary_framing_round_trip_and_close_signal() -> None:
    v5 = Protocol(channels.V5)
    assert v5.encode(channels.STDOUT, b"hi\n") == b"\x01hi\n"
    assert v5.decode(b"\x00abc") == (channels.STDIN, b"abc")
    assert v5.decode(b"\x04{}") == (channels.RESIZE, b"{}")
    assert v5.decode(bytes([255, 0])) == (channels.CLOSE, b"\x00")
    with pytest.raises(
        ProtocolError, match=r"Single channel byte should follow stream close signal\. Got 2 bytes"
    ):
        v5.decode(bytes([255, 0, 1]))
    with pytest.raises(ProtocolError, match=r"close signal on v4\.channel\.k8s\.io"):
        Protocol(channels.V4).decode(bytes([255, 0]))
    with pytest.raises(ProtocolError, match="empty message"):
        v5.decode(b"")
    with pytest.raises(ProtocolError, match="text message"):
        v5.decode("0abc")


def test_base64_framing() -> None:
    b64 = Protocol(channels.V4_BASE64)
    assert b64.encode(channels.STDERR, b"\xffok") == "2/29r"
    assert b64.decode("0aGk=") == (channels.STDIN, b"hi")
    assert b64.decode(b"0aGk=") == (channels.STDIN, b"hi")
    with pytest.raises(ProtocolError, match="bad base64"):
        b64.decode("0a$")
    with pytest.raises(ProtocolError, match="bad channel"):
        b64.decode("xaGk=")


def test_negotiation_follows_the_clients_order() -> None:
    assert channels.negotiate("v5.channel.k8s.io") == Protocol(channels.V5)
    assert channels.negotiate("foo, v4.base64.channel.k8s.io, v5.channel.k8s.io") == Protocol(
        channels.V4_BASE64
    )
    assert channels.negotiate("v3.channel.k8s.io") is None


def test_status_documents_as_kubectl_reads_them() -> None:
    v5, v1 = Protocol(channels.V5), Protocol(channels.V1)
    assert json.loads(channels.status_message(v5, channels.success())) == {
        "metadata": {},
        "status": "Success",
    }
    failed = json.loads(
        channels.status_message(v5, channels.exit_status(3, "error executing command [x], exit code 3"))
    )
    assert failed["status"] == "Failure"
    assert failed["reason"] == "NonZeroExitCode"
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    # before v4 the error channel carries text only, and nothing on success
    assert channels.status_message(v1, channels.success()) == b""
    assert channels.status_message(v1, channels.internal_error("boom")) == b"Internal error occurred: boom"


def test_terminal_size() -> None:
    assert channels.terminal_size(b'{"Width":100,"Height":40}') == (100, 40)
    for bad in (b"{}", b"nope", b'{"Width":-1,"Height":2}', b'{"Width":"x","Height":2}'):
        with pytest.raises(ProtocolError):
            channels.terminal_size(bad)


def test_cri_records_and_formatting() -> None:
    full = parse_record(b"2026-12-01T10:00:00.123456789Z stdout F hello world")
    assert full is not None
    assert (full.stream, full.full, full.text) == ("stdout", True, b"hello world")
    assert full.time == dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)
    empty = parse_record(b"2026-12-01T10:00:00Z stderr F")
    assert empty is not None
    assert empty.text == b""
    assert parse_record(b"not a record") is None
    assert parse_record(b"yesterday stdout F x") is None
    partial = parse_record(b"2026-12-01T10:00:01.5Z stdout P par")
    assert partial is not None
    rest = parse_record(b"2026-12-01T10:00:02Z stdout F tial")
    assert rest is not None
    stamped = Formatter(LogOptions(timestamps=True))
    assert stamped.format(partial) + stamped.format(rest) == b"2026-12-01T10:00:01.5Z partial\n"
    only_err = Formatter(LogOptions(streams=frozenset({"stderr"})))
    assert only_err.format(full) == b""
    assert only_err.format(empty) == b"\n"
    limited = Formatter(LogOptions(limit_bytes=4))
    assert limited.format(full) == b"hell"
    assert limited.exhausted


def test_tail_counts_the_files_lines() -> None:
    data = b"a\nb\nc\n"
    assert data[tail_start(data, 2) :] == b"b\nc\n"
    assert data[tail_start(data, 0) :] == b""
    assert data[tail_start(data, 10) :] == data
    assert b"a\nb"[tail_start(b"a\nb", 1) :] == b"b"


def test_log_options_from_query() -> None:
    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    opts = LogOptions.from_query({"tailLines": "5", "sinceSeconds": "60", "timestamps": "true"}, now)
    assert (opts.tail_lines, opts.since, opts.timestamps) == (5, now - dt.timedelta(seconds=60), True)
    assert LogOptions.from_query({"stream": "Stderr"}).streams == {"stderr"}
    for query, message in (
        ({"tailLines": "-1"}, "tailLines: Invalid value: -1: must be greater than or equal to 0"),
        ({"limitBytes": "0"}, "limitBytes: Invalid value: 0: must be greater than 0"),
        (
            {"sinceSeconds": "5", "sinceTime": "2026-12-01T00:00:00Z"},
            "at most one of sinceTime or sinceSeconds",
        ),
        ({"stream": "Both"}, 'stream: Unsupported value: "Both"'),
        ({"tailLines": "x"}, "must be an integer"),
    ):
        with pytest.raises(OptionError, match=message):
            LogOptions.from_query(query)
