"""What the Ollama server inherits from Go, reproduced byte for byte where clients can see it.

- ``go_json``: ``encoding/json.Marshal`` output (compact, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped).
- ``rfc3339nano``: ``time.Time`` as JSON (RFC 3339 with nanoseconds, trailing zeros trimmed, ``Z`` for UTC).
- ``parse_duration``: ``time.ParseDuration`` with its exact error messages.
- ``decode_json``: ``json.Decoder.Decode`` as gin's ``ShouldBindJSON`` uses it: the first JSON value of the
  body (trailing bytes ignored), ``io.EOF`` for an empty body, and Go's syntax error messages.
- ``check_fields``: the ``UnmarshalTypeError`` messages for a struct's top-level fields, field names matched
  the way ``encoding/json`` matches them (exact first, then case-insensitively).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

__all__ = [
    "GoDecodeError",
    "check_fields",
    "decode_json",
    "go_json",
    "go_quote",
    "json_kind",
    "parse_duration",
    "rfc3339nano",
]

MAX_DURATION: Final = (1 << 63) - 1


class GoDecodeError(ValueError):
    """A request body Go's decoder refuses; ``str()`` is the message the server returns."""

    def __init__(self, message: str, *, eof: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.eof = eof  # io.EOF: nothing but whitespace ("missing request body")


# ----------------------------------------------------------------------------------------------------------
# encoding


_GO_ESCAPES: Final = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
_GO_ESCAPE_TABLE: Final = str.maketrans(_GO_ESCAPES)


def go_json(value: Any) -> bytes:
    """Encode ``value`` as Go's ``json.Marshal`` would (these characters only ever occur inside strings)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    if any(c in text for c in _GO_ESCAPES):
        text = text.translate(_GO_ESCAPE_TABLE)
    return text.encode()


_second_cache: list[Any] = [-1, ""]


def rfc3339nano(ns: int | None = None) -> str:
    """``time.Now().UTC()`` marshalled by Go: ``2025-10-26T17:15:24.097767Z`` (RFC3339Nano, zeros trimmed)."""
    if ns is None:
        ns = time.time_ns()
    secs, frac = divmod(ns, 1_000_000_000)
    if _second_cache[0] != secs:
        _second_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second_cache[0] = secs
    base: str = _second_cache[1]
    if frac:
        return f"{base}.{frac:09d}".rstrip("0") + "Z"
    return base + "Z"


def go_quote(s: str) -> str:
    """``strconv.Quote`` for the strings that appear in error messages."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


# ----------------------------------------------------------------------------------------------------------
# time.ParseDuration


_UNITS: Final = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # U+00B5 micro sign
    "\u03bcs": 1_000,  # U+03BC Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def parse_duration(orig: str) -> int:
    """Go's ``time.ParseDuration``: nanoseconds, or ``ValueError`` with Go's message."""
    invalid = ValueError("time: invalid duration " + go_quote(orig))
    s = orig
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0
    if not s:
        raise invalid
    total = 0
    while s:
        if not (s[0] == "." or (s[0].isascii() and s[0].isdigit())):
            raise invalid
        i = 0
        while i < len(s) and s[i].isascii() and s[i].isdigit():
            i += 1
        pre = i > 0
        whole = int(s[:i]) if pre else 0
        if whole > 1 << 63:
            raise invalid
        s = s[i:]
        frac, scale, post = 0, 1.0, False
        if s and s[0] == ".":
            s = s[1:]
            j = 0
            while j < len(s) and s[j].isascii() and s[j].isdigit():
                j += 1
            post = j > 0
            digits = s[:j]
            s = s[j:]
            for d in digits:  # leadingFraction stops growing once it would overflow
                if frac > ((1 << 63) - 1) // 10:
                    continue
                frac = frac * 10 + int(d)
                scale *= 10
        if not pre and not post:
            raise invalid
        k = 0
        while k < len(s) and not (s[k] == "." or (s[k].isascii() and s[k].isdigit())):
            k += 1
        if k == 0:
            raise ValueError("time: missing unit in duration " + go_quote(orig))
        unit_name, s = s[:k], s[k:]
        unit = _UNITS.get(unit_name)
        if unit is None:
            raise ValueError("time: unknown unit " + go_quote(unit_name) + " in duration " + go_quote(orig))
        if whole > (1 << 63) // unit:
            raise invalid
        value = whole * unit
        if frac > 0:
            value += int(float(frac) * (float(unit) / scale))
            if value > 1 << 63:
                raise invalid
        total += value
        if total > 1 << 63:
            raise invalid
    if neg:
        return -total
    if total > MAX_DURATION:
        raise invalid
    return total


# ----------------------------------------------------------------------------------------------------------
# json.Decoder.Decode


_WS: Final = " \t\r\n"


def _quote_char(c: str) -> str:
    if c == "'":
        return "'\\''"
    if c == '"':
        return "'\"'"
    q = go_quote(c)
    return "'" + q[1:-1] + "'"


class _Scanner:
    """A port of the states of Go's ``encoding/json`` scanner that matter for error messages."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _err(self, c: str, context: str) -> GoDecodeError:
        return GoDecodeError(f"invalid character {_quote_char(c)} {context}")

    def _peek(self) -> str:
        if self.pos >= len(self.text):
            raise GoDecodeError("unexpected EOF")
        return self.text[self.pos]

    def _skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1

    def value(self, context: str = "looking for beginning of value") -> None:
        self._skip_ws()
        c = self._peek()
        if c == "{":
            self.pos += 1
            self._object()
        elif c == "[":
            self.pos += 1
            self._array()
        elif c == '"':
            self.pos += 1
            self._string()
        elif c == "-" or (c.isascii() and c.isdigit()):
            self._number()
        elif c in "tfn":
            word = {"t": "true", "f": "false", "n": "null"}[c]
            self.pos += 1
            for expected in word[1:]:
                got = self._peek()
                if got != expected:
                    raise self._err(got, f"in literal {word} (expecting {_quote_char(expected)})")
                self.pos += 1
        else:
            raise self._err(c, context)

    def _object(self) -> None:
        self._skip_ws()
        c = self._peek()
        if c == "}":
            self.pos += 1
            return
        while True:
            if c != '"':
                raise self._err(c, "looking for beginning of object key string")
            self.pos += 1
            self._string()
            self._skip_ws()
            c = self._peek()
            if c != ":":
                raise self._err(c, "after object key")
            self.pos += 1
            self.value()
            self._skip_ws()
            c = self._peek()
            if c == "}":
                self.pos += 1
                return
            if c != ",":
                raise self._err(c, "after object key:value pair")
            self.pos += 1
            self._skip_ws()
            c = self._peek()

    def _array(self) -> None:
        self._skip_ws()
        if self._peek() == "]":
            self.pos += 1
            return
        while True:
            self.value()
            self._skip_ws()
            c = self._peek()
            if c == "]":
                self.pos += 1
                return
            if c != ",":
                raise self._err(c, "after array element")
            self.pos += 1

    def _string(self) -> None:
        while True:
            c = self._peek()
            self.pos += 1
            if c == '"':
                return
            if c == "\\":
                e = self._peek()
                self.pos += 1
                if e == "u":
                    for _ in range(4):
                        h = self._peek()
                        if h not in "0123456789abcdefABCDEF":
                            raise self._err(h, "in \\u hexadecimal character escape")
                        self.pos += 1
                elif e not in 'bfnrt\\/"':
                    raise self._err(e, "in string escape code")
            elif ord(c) < 0x20:
                raise self._err(c, "in string literal")

    def _digits(self) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos].isascii() and self.text[self.pos].isdigit():
            self.pos += 1
        return self.pos - start

    def _number(self) -> None:
        if self._peek() == "-":
            self.pos += 1
            c = self._peek()
            if not (c.isascii() and c.isdigit()):
                raise self._err(c, "in numeric literal")
        if self._peek() == "0":
            self.pos += 1
        else:
            self._digits()
        if self.pos < len(self.text) and self.text[self.pos] == ".":
            self.pos += 1
            c = self._peek()
            if not (c.isascii() and c.isdigit()):
                raise self._err(c, "after decimal point in numeric literal")
            self._digits()
        if self.pos < len(self.text) and self.text[self.pos] in "eE":
            self.pos += 1
            if self._peek() in "+-":
                self.pos += 1
            c = self._peek()
            if not (c.isascii() and c.isdigit()):
                raise self._err(c, "in exponent of numeric literal")
            self._digits()


_decoder: Final = json.JSONDecoder()


def decode_json(raw: bytes) -> Any:
    """The first JSON value of ``raw`` as Go's ``json.Decoder`` reads it; ``GoDecodeError`` if refused."""
    text = raw.decode("utf-8", errors="replace")
    start = len(text) - len(text.lstrip(_WS))
    if start == len(text):
        raise GoDecodeError("EOF", eof=True)
    try:
        value, _end = _decoder.raw_decode(text, start)
    except (json.JSONDecodeError, RecursionError, ValueError):
        _Scanner(text[start:]).value()  # raises Go's message
        raise GoDecodeError("unexpected EOF") from None  # Python refused what Go's scanner accepts (rare)
    return value


# ----------------------------------------------------------------------------------------------------------
# encoding/json type errors for top-level struct fields


def json_kind(value: Any) -> str:
    """The JSON kind in ``UnmarshalTypeError.Value``."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


# Go type name -> JSON kinds it accepts (null is accepted by every type and leaves the field alone).
_ACCEPTS: Final[Mapping[str, frozenset[str]]] = {
    "string": frozenset({"string"}),
    "bool": frozenset({"bool"}),
    "int": frozenset({"number"}),
    "int64": frozenset({"number"}),
    "map[string]interface {}": frozenset({"object"}),
    "map[string]string": frozenset({"object"}),
    "[]int": frozenset({"array"}),
    "[]string": frozenset({"array"}),
    "[]api.Message": frozenset({"array"}),
    "[]api.ImageData": frozenset({"array"}),
    "api.Tools": frozenset({"array"}),
}


def check_fields(
    struct: str,
    fields: Mapping[str, str],
    body: Mapping[str, Any],
    direct: Mapping[str, Callable[[Any], object]] | None = None,
) -> dict[str, Any]:
    """Map ``body``'s keys onto ``fields`` (json tag -> Go type) as Go does, raising Go's error.

    ``direct`` holds the fields with their own ``UnmarshalJSON`` (validators raising ``GoDecodeError``): their
    errors end decoding at once, while type errors are remembered and only the first is reported at the end.
    ``api.Message`` has its own unmarshaler too. Returns the body with recognised keys renamed to their tag;
    unknown keys are kept (Go ignores them).
    """
    direct = direct or {}
    lowered = {tag.lower(): tag for tag in fields}
    out: dict[str, Any] = {}
    first_error: str | None = None
    for key, value in body.items():
        tag = key if key in fields else lowered.get(key.lower())
        if tag is None:
            out[key] = value
            continue
        out[tag] = value
        if value is None:
            continue
        if tag in direct:
            direct[tag](value)
            continue
        go_type = fields[tag]
        accepts = _ACCEPTS.get(go_type)
        if accepts is None:
            continue
        kind = json_kind(value)
        if go_type == "[]api.Message" and kind == "array":
            message_error = _check_messages(value)
            if message_error is not None:
                raise GoDecodeError(message_error)
            continue
        if first_error is not None:
            continue
        where = f"Go struct field {struct}.{tag}"
        if kind not in accepts:
            first_error = f"json: cannot unmarshal {kind} into {where} of type {go_type}"
        elif go_type in ("int", "int64") and (isinstance(value, float) and not value.is_integer()):
            first_error = f"json: cannot unmarshal number {value!r} into {where} of type {go_type}"
        elif go_type in ("[]int", "[]string"):
            elem = go_type[2:]
            for item in value:
                if item is not None and json_kind(item) not in _ACCEPTS[elem]:
                    first_error = f"json: cannot unmarshal {json_kind(item)} into {where} of type {elem}"
                    break
    if first_error is not None:
        raise GoDecodeError(first_error)
    return out


_MESSAGE_FIELDS: Final = {
    "role": "string",
    "content": "string",
    "thinking": "string",
    "tool_name": "string",
    "tool_call_id": "string",
    "images": "[]api.ImageData",
    "tool_calls": "[]api.ToolCall",
}


def _check_messages(messages: list[Any]) -> str | None:
    # api.Message has its own UnmarshalJSON that decodes into a local type named Alias.
    for message in messages:
        if message is None:
            continue
        if not isinstance(message, dict):
            return f"json: cannot unmarshal {json_kind(message)} into Go value of type api.Alias"
        lowered = {tag.lower(): tag for tag in _MESSAGE_FIELDS}
        for key, value in message.items():
            tag = key if key in _MESSAGE_FIELDS else lowered.get(key.lower())
            if tag is None or value is None:
                continue
            go_type = _MESSAGE_FIELDS[tag]
            kind = json_kind(value)
            if go_type == "string" and kind != "string":
                return f"json: cannot unmarshal {kind} into Go struct field Alias.{tag} of type string"
            if go_type.startswith("[]") and kind != "array":
                return f"json: cannot unmarshal {kind} into Go struct field Alias.{tag} of type {go_type}"
    return None
