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
