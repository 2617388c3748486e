"""The built-in sample: deterministic, sized for a CPU pipeline, messy enough to clean, and a
sentiment set whose labels follow composition rules (negation, contrast), not single words."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import pytest

from lmops.config import CleanConfig, DataConfig, SampleConfig
from lmops.data import sample
from lmops.data.sources import corpus_sources
from lmops.data.text import normalize_text
from tests.unit.clean_texts import clean_sources

# ------------------------------------------------------------------------------ corpus


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    defaults = SampleConfig()  # the quickstart's corpus
    return sample.generate_corpus(defaults.n_documents, defaults.seed)


def test_corpus_is_deterministic_and_seeded() -> None:
    a = sample.generate_corpus(300, 7)
    assert a == sample.generate_corpus(300, 7)
    assert a != sample.generate_corpus(300, 8)


@pytest.mark.parametrize("n", [0, 1, 9, 10, 57, 1000])
def test_corpus_has_exactly_n_documents(n: int) -> None:
    assert len(sample.generate_corpus(n, 1)) == n


def test_default_corpus_size_and_speed(corpus: list[str]) -> None:
    start = time.perf_counter()
    sample.generate_corpus(6000, 99)
    assert time.perf_counter() - start < 3.0
    megabytes = sum(len(d.encode("utf-8")) for d in corpus) / 1e6
    assert 2.0 <= megabytes <= 4.0, megabytes


def test_corpus_is_varied(corpus: list[str]) -> None:
    kinds = Counter()
    for d in corpus:
        if d.startswith("Review by"):
            kinds["review"] += 1
        elif d.startswith("How to make"):
            kinds["recipe"] += 1
        elif d.startswith("Weather for"):
            kinds["weather"] += 1
        elif "How are you?" in d:
            kinds["dialogue"] += 1
        elif "there lived" in d:
            kinds["story"] += 1
    assert len(kinds) == 5 and min(kinds.values()) > 200, kinds
    words = Counter(w for d in corpus for w in re.findall(r"[a-z]+", d.lower()))
    assert len(words) > 800  # a real vocabulary, not a handful of templates
    assert len(set(corpus)) > 0.98 * len(corpus)


def test_corpus_gives_the_clean_stage_work(corpus: list[str], tmp_path: Path) -> None:
    assert any(re.search(r"[\x00-\x08\x0b\x1b\x7f]", d) for d in corpus)  # control chars
    assert any("\r\n" in d or "  " in d for d in corpus)  # whitespace junk
    # the clean stage's own reader on the default params: the sample source, i.e. ``corpus``
    sources = corpus_sources(DataConfig(), tmp_path)
    kept, report = clean_sources(sources, CleanConfig(), tmp_path)
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["length"]["reasons"]["too_short"] >= 30
    assert steps["exact_dedup"]["dropped"] >= 60  # exact copies and whitespace variants
    # the default quality rules leave the sample alone; templated weather reports are the
    # main near duplicates
    assert steps["gopher_quality"]["dropped"] + steps["gopher_repetition"]["dropped"] < 60
    assert 0.93 * len(corpus) < len(kept) < len(corpus)
    # a normal document survives cleaning unchanged: the generator writes clean text
    plain = next(d for d in corpus if d.startswith("Once upon a time"))
    assert normalize_text(plain, "NFC") == plain and plain in kept


# ---------------------------------------------------------------------------- labeled

NEGATION = re.compile(r"\b(not|never)\b|n't\b")


def _polarity(clause: str) -> int:
    """Reference rule: the clause's one sentiment word, flipped by a negator."""
    words = re.findall(r"[a-z']+", clause.lower())
    pos = [w for w in words if w in sample.POSITIVE_WORDS]
    neg = [w for w in words if w in sample.NEGATIVE_WORDS]
    assert len(pos) + len(neg) == 1, clause
    base = 1 if pos else -1
    return -base if NEGATION.search(clause.lower()) else base


def _rule_label(text: str) -> tuple[str, str]:
    """(shape, label) by the composition rules, computed independently of the generator."""
    last = re.split(r"(?<=[.!])\s+", text)[-1].rstrip(".!")
    m = re.search(r"\b(?:although|though|while) (.+?), (.+)$", last, flags=re.IGNORECASE)
    if m:
        first, decider = m.group(1), m.group(2)
        assert _polarity(first) == -_polarity(decider), text
        return "although", sample.LABELS[_polarity(decider) > 0]
    if " but " in last:
        first, decider = re.split(r",? but ", last)
        assert _polarity(first) == -_polarity(decider), text
        return "but", sample.LABELS[_polarity(decider) > 0]
    clauses = last.split(" and ")
    pols = {_polarity(c) for c in clauses}
    assert len(pols) == 1, text  # "and" only joins clauses that agree
    return ("and" if len(clauses) > 1 else "single"), sample.LABELS[pols.pop() > 0]


@pytest.fixture(scope="module")
def labeled() -> list[tuple[str, str]]:
    return sample.generate_labeled(3000, 1234)


def test_labeled_is_balanced_unique_and_deterministic(labeled: list[tuple[str, str]]) -> None:
    assert sample.LABELS == ["negative", "positive"]
    assert Counter(label for _, label in labeled) == {"negative": 1500, "positive": 1500}
    assert len({t for t, _ in labeled}) == len(labeled)
    assert sample.generate_labeled(200, 5) == sample.generate_labeled(200, 5)
    assert sample.generate_labeled(200, 5) != sample.generate_labeled(200, 6)
    assert abs(Counter(lab for _, lab in sample.generate_labeled(11, 3))["positive"] - 5.5) < 1


def test_labels_follow_negation_and_contrast_rules(labeled: list[tuple[str, str]]) -> None:
    shapes = Counter()
    for text, label in labeled:
        shape, expected = _rule_label(text)
        assert expected == label, text
        shapes[shape, label] += 1
    for shape in ("single", "and", "but", "although"):
        for label in sample.LABELS:
            assert shapes[shape, label] > 50, shapes


def test_labels_need_composition_not_word_lists(labeled: list[tuple[str, str]]) -> None:
    """Negation makes the sentiment word disagree with the label; in contrasts the first
    clause disagrees: a bag of sentiment words alone cannot get these right."""
    negated_single = [
        (t, lab) for t, lab in labeled if _rule_label(t)[0] == "single" and NEGATION.search(t)
    ]
    assert len(negated_single) > 100
    for text, label in negated_single:
        words = set(re.findall(r"[a-z']+", text.lower()))
        lexical = "positive" if words & sample.POSITIVE_WORDS else "negative"
        assert lexical != label, text
    examples = dict(labeled)
    intensified = [t for t in examples if re.search(r"\b(very|extremely|really)\b", t)]
    hedged = [t for t in examples if re.search(r"\b(somewhat|a bit|fairly)\b", t)]
    assert len(intensified) > 50 and len(hedged) > 20
