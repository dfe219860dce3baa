"""Text from outside (model replies, request bodies) made safe to keep, encode and show."""

from __future__ import annotations

import re


def repair_text(text: str) -> str:
    """``text`` as valid Unicode: UTF-16 surrogate pairs joined, lone surrogates replaced by U+FFFD.

    JSON allows ``"\\ud83d"`` alone (or a pair split over two streamed chunks); such a string cannot be
    encoded as UTF-8, so it must not reach a response, a database or a terminal as it is.
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def repair(value: object) -> object:
    """``repair_text`` applied to every string (keys too) of a parsed JSON value."""
    if isinstance(value, str):
        return repair_text(value)
    if isinstance(value, list):
        return [repair(item) for item in value]
    if isinstance(value, dict):
        return {repair_text(str(k)): repair(v) for k, v in value.items()}
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the bidirectional
# overrides/isolates that reorder what a terminal shows
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)  # caret notation: ESC is ^[, CR is ^M
    return f"<U+{code:04X}>"


def printable(text: str) -> str:
    """``text`` safe to write to a terminal: control sequences are shown, not obeyed (ESC as ``^[``)."""
    return _CONTROL.sub(_visible, text)
