"""Labelling candidates for the judge and reading its verdict.

Reading a verdict goes through three steps, each used only when the previous one fails:

1. structured: the reply is the JSON object the schema asked for, validated with pydantic;
2. parsed: a tolerant reader finds a verdict object embedded in free text, or a single label named in a
   phrase such as ``best: B``, ``Answer 2``, ``Candidate C`` or just ``A``;
3. fallback (in the pipeline): the deterministic rule of :func:`fallback_choice`.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, StrictInt, StrictStr, ValidationError

from gorkheavy.core.types import Candidate, VerdictSource

MAX_VERDICT_CHARS = 20_000
_MAX_OBJECT_ATTEMPTS = 200


class _Verdict(BaseModel):
    model_config = ConfigDict(extra="ignore")
    best: StrictStr | StrictInt  # strict: pydantic's lax mode would read true as 1, i.e. label A
    reason: StrictStr = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    label: str
    reason: str
    source: VerdictSource


def assign_labels(candidates: Sequence[Candidate], rng: random.Random) -> list[tuple[str, Candidate]]:
    """Shuffle the candidates and give them neutral labels A, B, C ... in the shuffled order."""
    if len(candidates) > len(string.ascii_uppercase):
        raise ValueError(f"at most {len(string.ascii_uppercase)} candidates can be labelled")
    order = list(candidates)
    rng.shuffle(order)
    return list(zip(string.ascii_uppercase, order, strict=False))


def _normalise_label(value: str | int, labels: Sequence[str]) -> str | None:
    """A label from a verdict field: 'B', 'b', 'Candidate B', '(B)', or a 1-based number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return labels[value - 1] if 1 <= value <= len(labels) else None
    text = value.strip().strip("*()[]\"'.:").strip()
    text = re.sub(r"^(?:candidate|answer|option|response)\s*", "", text, flags=re.IGNORECASE).strip("*()[] ")
    if text.isascii() and text.isdigit():
        return _normalise_label(int(text), labels)
    upper = text.upper()
    return upper if upper in labels else None


def _from_object(obj: object, labels: Sequence[str], source: VerdictSource) -> Verdict | None:
    if not isinstance(obj, dict):
        return None
    try:
        verdict = _Verdict.model_validate(obj)
    except ValidationError:
        return None
    label = _normalise_label(verdict.best, labels)
    return Verdict(label, verdict.reason.strip(), source) if label else None


_KEYWORD = re.compile(
    r"(?:best|winner|choose|chose|choice|select|selected|pick|picked|prefer|verdict)"
    r"[^A-Za-z0-9]{0,20}(?:(?:is|the|answer|candidate|option|response)[^A-Za-z0-9]{0,5}){0,3}"
    r"\b([A-Za-z]|[0-9]{1,2})\b",
    re.IGNORECASE,
)
_NAMED = re.compile(
    r"\b(?:answer|candidate|option|response)\s*[#:(]?\s*\b([A-Z]|[0-9]{1,2})\b", re.IGNORECASE
)


def parse_verdict(text: str, labels: Sequence[str]) -> Verdict | None:
    """Read the judge's choice from its reply, or None when no unambiguous choice can be found.

    Never raises, whatever the reply contains; only ever returns one of ``labels``.
    """
    if not labels:
        return None
    text = text[:MAX_VERDICT_CHARS]
    stripped = text.strip()
    try:
        whole = json.loads(stripped)
    except (ValueError, RecursionError):
        whole = None
    found = _from_object(whole, labels, VerdictSource.STRUCTURED)
    if found:
        return found

    decoder = json.JSONDecoder()
    attempts = 0
    for match in re.finditer(r"\{", text):
        attempts += 1
        if attempts > _MAX_OBJECT_ATTEMPTS:
            break
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        found = _from_object(obj, labels, VerdictSource.PARSED)
        if found:
            return found

    bare = _normalise_label(stripped, labels) if len(stripped) <= 16 else None
    if bare:
        return Verdict(bare, "", VerdictSource.PARSED)

    for pattern in (_KEYWORD, _NAMED):
        chosen = {
            label
            for m in pattern.finditer(text)
            if (label := _normalise_label(m.group(1), labels)) is not None
            and (m.group(1).isdigit() or m.group(1).isupper())
        }
        if len(chosen) == 1:
            return Verdict(chosen.pop(), "", VerdictSource.PARSED)
        if len(chosen) > 1:
            return None
    return None


def fallback_choice(candidates: Sequence[Candidate]) -> Candidate:
    """The deterministic choice when the judge cannot decide.

    Rule: the first usable candidate in roster order (the order of the experts in the config file, which is
    therefore their priority). Raises ValueError when no candidate is usable.
    """
    for candidate in candidates:
        if candidate.ok:
            return candidate
    raise ValueError("no usable candidate")
