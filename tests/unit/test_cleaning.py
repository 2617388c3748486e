"""Normalization, filters, dedup, the report, and the document split."""

from __future__ import annotations

import pytest

from lmops.config import CleanConfig, LmopsError
from lmops.data.cleaning import clean_documents, normalize_text, split_by_document

# ----------------------------------------------------------------------- normalize_text


def test_unicode_forms() -> None:
    decomposed = "cafe\u0301 \ufb01ne"  # e + combining acute; the "fi" ligature
    assert normalize_text(decomposed, "NFC") == "caf\u00e9 \ufb01ne"
    assert normalize_text(decomposed, "NFKC") == "caf\u00e9 fine"
    assert normalize_text(decomposed, "none") == decomposed


def test_control_characters_go_newlines_and_tabs_stay() -> None:
    assert normalize_text("a\x00b\x07c\x1bd\x7fe\x85f\tg\nh", "NFC") == "abcdef\tg\nh"


def test_whitespace_is_tidied() -> None:
    raw = "  Hello    world.  \r\nNext   line\t \n\n\n\n\nLast\r\n\n  "
    assert normalize_text(raw, "NFC") == "Hello world.\nNext line\n\nLast"
    assert normalize_text("keeps\n\none blank line", "NFC") == "keeps\n\none blank line"


def test_normalization_is_idempotent() -> None:
    raw = " a  b \x00\r\n\n\n\nc\u0301 "
    once = normalize_text(raw, "NFKC")
    assert normalize_text(once, "NFKC") == once


# ---------------------------------------------------------------------- clean_documents


def _cfg(**kw: object) -> CleanConfig:
    return CleanConfig(**{"min_chars": 10, "max_chars": 60, **kw})  # type: ignore[arg-type]


def test_filters_dedup_and_report() -> None:
    keep = "A document long enough to keep."
    docs = [
        keep,
        "tiny",  # too short: dropped
        "x" * 61,  # too long: dropped
        "Another   document,\x00 also fine.  ",  # normalized, then kept
        keep,  # exact duplicate: dropped
        "  A document long enough to keep.\r\n",  # duplicate once normalized: dropped
        "   \n\n  ",  # blank: dropped as too short
    ]
    kept, report = clean_documents(iter(docs), _cfg())
    assert kept == [keep, "Another document, also fine."]
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == ["normalize", "length_filter", "dedup"]
    assert steps["length_filter"]["too_short"] == 2 and steps["length_filter"]["too_long"] == 1
    assert steps["dedup"]["duplicates"] == 2
    # the steps chain: what one step gives is what the next one takes
    for a, b in zip(report["steps"], report["steps"][1:], strict=False):
        assert (a["docs_out"], a["bytes_out"]) == (b["docs_in"], b["bytes_in"])
    assert report["docs_in"] == len(docs) and report["docs_out"] == 2
    assert report["bytes_in"] == sum(len(d.encode()) for d in docs)
    assert report["bytes_out"] == sum(len(d.encode()) for d in kept)
    assert steps["normalize"]["bytes_out"] < steps["normalize"]["bytes_in"]


def test_dedup_can_be_switched_off() -> None:
    doc = "The same long document."
    kept, report = clean_documents([doc, doc], _cfg(dedup=False))
    assert kept == [doc, doc]
    assert [s["name"] for s in report["steps"]] == ["normalize", "length_filter"]


def test_empty_after_cleaning_is_a_user_error() -> None:
    with pytest.raises(LmopsError, match=r"empty after cleaning.*clean\.min_chars"):
        clean_documents(["short", "tiny"], _cfg())


# --------------------------------------------------------------------- split_by_document


def test_split_is_deterministic_disjoint_and_complete() -> None:
    items = [f"doc{i}" for i in range(200)]
    train, val = split_by_document(items, 0.1, seed=3)
    assert (train, val) == split_by_document(items, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180
    assert not set(train) & set(val) and set(train) | set(val) == set(items)
    assert train == sorted(train, key=items.index)  # input order kept
    assert val == sorted(val, key=items.index)
    assert split_by_document(items, 0.1, seed=4)[1] != val


@pytest.mark.parametrize(("n", "n_val"), [(0, 0), (1, 0), (2, 1), (3, 1), (10, 1)])
def test_split_small_inputs(n: int, n_val: int) -> None:
    train, val = split_by_document(list(range(n)), 0.05, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


def test_split_never_empties_train() -> None:
    train, val = split_by_document([1, 2], 0.49, seed=0)
    assert len(train) == 1 and len(val) == 1
