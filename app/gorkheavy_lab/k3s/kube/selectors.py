"""Label and field selectors as the apiserver parses them (``=``, ``==``, ``!=``, ``in``, ``notin``, exists,
``!key``)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .errors import bad_request

Matcher = Callable[[dict[str, str]], bool]
_SET = re.compile(r"^\s*(!?)\s*([A-Za-z0-9./_-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


def _split(selector: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


def _requirement(term: str) -> Matcher:
    equal_op = next((op for op in ("!=", "==", "=") if op in term), None)
    if equal_op is not None:
        left, right = (part.strip() for part in term.split(equal_op, 1))
        negate = equal_op == "!="

        def equality(labels: dict[str, str]) -> bool:
            return (labels.get(left) == right) != negate

        return equality
    match = _SET.match(term)
    if match is None:
        raise bad_request(f"unable to parse requirement: {term!r}")
    neg, key, op, values = match.groups()
    allowed = {v.strip() for v in values.split(",")} if op else set()

    def setwise(labels: dict[str, str]) -> bool:
        if op == "in":
            return labels.get(key) in allowed
        if op == "notin":
            return labels.get(key) not in allowed
        return (key in labels) != bool(neg)

    return setwise


def label_matcher(selector: str | None) -> Matcher:
    tests = [_requirement(raw.strip()) for raw in _split(selector or "")]
    return lambda labels: all(t(labels) for t in tests)


def field_matcher(selector: str | None) -> Callable[[dict[str, Any]], bool]:
    if not selector:
        return lambda _obj: True
    tests = []
    for raw in _split(selector):
        term = raw.strip()
        neg = "!=" in term
        key, value = term.split("!=" if neg else ("==" if "==" in term else "="), 1)
        path = key.strip().split(".")

        def test(
            obj: dict[str, Any], path: list[str] = path, value: str = value.strip(), neg: bool = neg
        ) -> bool:
            cur: Any = obj
            for part in path:
                cur = cur.get(part) if isinstance(cur, dict) else None
            got = "" if cur is None else str(cur)
            return (got != value) if neg else (got == value)

        tests.append(test)
    return lambda obj: all(t(obj) for t in tests)
