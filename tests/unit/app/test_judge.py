"""The judge's verdict reader, candidate labelling and the deterministic fallback."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest
from gorkheavy.core.judge import assign_labels, fallback_choice, parse_verdict
from gorkheavy.core.types import Candidate, ErrorCause, VerdictSource
from hypothesis import given, settings
from hypothesis import strategies as st

LABELS = ["A", "B", "C"]


def cand(name: str, text: str = "an answer", *, failed: bool = False) -> Candidate:
    if failed:
        return Candidate(name, f"{name}:1b", "raw", "", 0.1, "boom", ErrorCause.HTTP_STATUS)
    return Candidate(name, f"{name}:1b", "raw", text, 0.1)


def test_structured_reply_is_read_as_structured() -> None:
    verdict = parse_verdict('{"best": "B", "reason": "most complete"}', LABELS)
    assert verdict is not None
    assert (verdict.label, verdict.reason, verdict.source) == ("B", "most complete", VerdictSource.STRUCTURED)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ('Sure! Here is my verdict: {"best": "c", "reason": "x"} hope it helps', "C"),
        ('```json\n{"best": "Candidate A", "reason": "ok"}\n```', "A"),
        ('{"best": 2, "reason": "numbers count from one"}', "B"),
        ("B", "B"),
        ("(C)", "C"),
        ("The best answer is B because it explains the cause.", "B"),
        ("I choose candidate C.", "C"),
        ("Answer 1 is the most accurate.", "A"),
        ("After comparing them, my verdict: **A**", "A"),
        ('{"winner": "A"}', "A"),
    ],
)
def test_tolerant_reader_finds_the_choice_in_free_text(text: str, label: str) -> None:
    verdict = parse_verdict(text, LABELS)
    assert verdict is not None
    assert verdict.label == label
    assert verdict.source in (VerdictSource.PARSED, VerdictSource.STRUCTURED)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I cannot decide.",
        '{"best": "D", "reason": "no such label"}',
        '{"reason": "they are all fine"}',
        "Candidate A is good but candidate B is better in parts.",  # two labels named: ambiguous
        "Answer 7 is best.",  # out of range
        "{" * 500,
        "[1, 2, 3]",
    ],
)
def test_reader_refuses_what_names_no_single_valid_label(text: str) -> None:
    assert parse_verdict(text, LABELS) is None


def test_a_lowercase_article_is_not_read_as_a_label() -> None:
    assert parse_verdict("I pick a good one, the best is a tough call", LABELS) is None


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=3000))
def test_hostile_text_never_raises_and_only_yields_known_labels(text: str) -> None:
    verdict = parse_verdict(text, LABELS)
    assert verdict is None or verdict.label in LABELS


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(max_size=300),
    suffix=st.text(max_size=300),
    label=st.sampled_from(LABELS),
    reason=st.text(max_size=50),
)
def test_a_verdict_object_buried_in_noise_is_found(prefix: str, suffix: str, label: str, reason: str) -> None:
    obj = json.dumps({"best": label, "reason": reason})
    verdict = parse_verdict(f"{prefix.replace('{', '(')}\n{obj}\n{suffix}", LABELS)
    assert verdict is not None
    assert verdict.label == label


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c) | st.dictionaries(st.text(), c),
    )
)
def test_arbitrary_json_never_raises(value: object) -> None:
    verdict = parse_verdict(json.dumps(value), LABELS)
    assert verdict is None or verdict.label in LABELS


def test_labels_hide_names_and_shuffle_positions() -> None:
    candidates = [cand("qwen-small"), cand("qwen"), cand("llama")]
    first_place: Counter[str] = Counter()
    for seed in range(300):
        labelled = assign_labels(candidates, random.Random(seed))
        assert [label for label, _ in labelled] == LABELS
        assert sorted(c.name for _, c in labelled) == sorted(c.name for c in candidates)
        first_place[labelled[0][1].name] += 1
    # every model gets the first position, roughly a third of the time each
    assert set(first_place) == {"qwen-small", "qwen", "llama"}
    assert min(first_place.values()) > 60


def test_fallback_takes_the_first_usable_candidate_in_roster_order() -> None:
    candidates = [
        cand("qwen-small", failed=True),
        cand("qwen", "short"),
        cand("llama", "a much longer answer"),
    ]
    assert fallback_choice(candidates).name == "qwen"


def test_fallback_without_usable_candidates_raises() -> None:
    with pytest.raises(ValueError, match="no usable candidate"):
        fallback_choice([cand("qwen", failed=True), cand("llama", "   ")])


@given(best=st.booleans(), labels=st.sampled_from([["A", "B"], LABELS, list("ABCDEFGHIJ")]))
@settings(max_examples=50, deadline=None)
def test_a_boolean_is_never_read_as_a_label(best: bool, labels: list[str]) -> None:
    assert parse_verdict(json.dumps({"best": best}), labels) is None
    assert parse_verdict(json.dumps({"best": best, "reason": "fine"}), labels) is None


def test_only_strings_and_integers_are_structured_labels() -> None:
    for reply in ('{"best": 1.0}', '{"best": ["B"]}'):  # at best the free-text reader's guess
        verdict = parse_verdict(reply, LABELS)
        assert verdict is None or verdict.source is VerdictSource.PARSED
    verdict = parse_verdict('{"best": 2}', LABELS)
    assert verdict is not None
    assert (verdict.label, verdict.source) == ("B", VerdictSource.STRUCTURED)
