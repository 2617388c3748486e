"""The clean pipeline end to end: normalization, the report, splits, weights, bad input."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmops.config import (
    C4Config,
    CleanConfig,
    DataConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LmopsError,
    MinhashConfig,
    Params,
)
from lmops.data.cleaning import run_clean, work_dir, write_splits
from lmops.data.filters import FastWordTokenizer, build_document_steps
from lmops.data.report import render_html, render_table, stage_metrics, write_report
from lmops.data.sources import IngestStats, SourceDocument, parse_sources
from lmops.data.text import normalize_text
from tests.unit.clean_texts import clean_texts

# ----------------------------------------------------------------------- normalize_text


def test_unicode_forms() -> None:
    decomposed = "cafe\u0301 \ufb01ne"  # e + combining acute; the "fi" ligature
    assert normalize_text(decomposed, "NFC") == "caf\u00e9 \ufb01ne"
    assert normalize_text(decomposed, "NFKC") == "caf\u00e9 fine"
    assert normalize_text(decomposed, "none") == decomposed


@pytest.mark.parametrize(
    "text",
    [
        "東京は日本の首都です。中文字符，한국어 텍스트",
        "Crème brûlée, naïve café, Ærøskøbing, Łódź, İstanbul",
        "emoji 😀🚀, skin tone 👍🏽, flag 🇫🇷, family 👩\u200d👩\u200d👧, keycap 1\ufe0f\u20e3",
    ],
)
def test_nfc_keeps_cjk_accents_and_emoji(text: str) -> None:
    assert normalize_text(text, "NFC") == text


def test_control_characters_go_newlines_and_tabs_stay() -> None:
    assert normalize_text("a\x00b\x07c\x1bd\x7fe\x85f\tg\nh", "NFC") == "abcdef\tg\nh"
    assert normalize_text("one\u2028two\u2029three") == "one\ntwo\nthree"


def test_lone_surrogates_become_replacement_characters() -> None:
    out = normalize_text("bad \udcff byte and \ud800 escape")
    assert out == "bad \ufffd byte and \ufffd escape"
    out.encode("utf-8")


def test_whitespace_is_tidied() -> None:
    raw = "  Hello    world.  \r\nNext   line\t \n\n\n\n\nLast\r\n\n  "
    assert normalize_text(raw, "NFC") == "Hello world.\nNext line\n\nLast"
    assert normalize_text("keeps\n\none blank line", "NFC") == "keeps\n\none blank line"


def _normalize_every_rule(text: str, form: str) -> str:
    """normalize_text without its shortcuts: every rule applied to every text."""
    import re
    import unicodedata

    text = re.sub(r"[\ud800-\udfff]", "\ufffd", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\u2028\u2029]", "\n", text)
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", "", text)
    text = re.sub(r" {2,}", " ", text)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("ab \t\n\r\x00\x85\u2028é\u0301\ufb01\u00a0東😀\udcff"))),
    st.sampled_from(["NFC", "NFKC", "none"]),
)
def test_normalize_shortcuts_change_nothing(text: str, form: str) -> None:
    assert normalize_text(text, form) == _normalize_every_rule(text, form)


def test_normalization_is_idempotent() -> None:
    raw = " a  b \x00\r\n\n\n\nc\u0301 "
    once = normalize_text(raw, "NFKC")
    assert normalize_text(once, "NFKC") == once


# -------------------------------------------------------------------------- clean_texts

# Filters off: these tests are about the pipeline; test_filters.py covers each rule.
LENIENT = CleanConfig(
    min_chars=10,
    max_chars=80,
    gopher_repetition=GopherRepetitionConfig(enabled=False),
    gopher_quality=GopherQualityConfig(enabled=False),
    c4=C4Config(enabled=False),
)


def test_filters_dedup_and_report() -> None:
    keep = "A document long enough to keep."
    docs = [
        keep,
        "tiny",  # too short: dropped
        "x" * 81,  # too long: dropped
        "Another   document,\x00 also fine.  ",  # normalized, then kept
        "Ein Dokument über Brûlée, 東京 😀 ok.",  # non-ASCII: bytes are UTF-8 bytes, not chars
        keep,  # exact duplicate: dropped
        "  A document long enough to keep.\r\n",  # duplicate once normalized: dropped
        "   \n\n  ",  # blank: dropped when read
        "",  # empty: dropped when read
    ]
    kept, report = clean_texts(iter(docs), LENIENT)
    assert kept == [keep, "Another document, also fine.", "Ein Dokument über Brûlée, 東京 😀 ok."]
    steps = {s["name"]: s for s in report["steps"]}
    assert [s["name"] for s in report["steps"]] == [
        "read", "normalize", "length", "exact_dedup", "near_dedup",
    ]  # fmt: skip
    assert steps["read"]["reasons"] == {"empty": 2}
    assert steps["length"]["reasons"] == {"too_short": 1, "too_long": 1}
    assert steps["exact_dedup"]["dropped"] == 2 and steps["near_dedup"]["dropped"] == 0
    # the steps chain: what one step gives is what the next one takes
    for a, b in zip(report["steps"], report["steps"][1:], strict=False):
        assert (a["docs_out"], a["bytes_out"]) == (b["docs_in"], b["bytes_in"])
    assert report["docs_in"] == len(docs) and report["docs_out"] == 3
    assert report["bytes_in"] == sum(len(d.encode()) for d in docs)
    assert report["bytes_out"] == sum(len(d.encode()) for d in kept)
    assert steps["normalize"]["bytes_out"] < steps["normalize"]["bytes_in"]
    assert dict(report["top_rejections"])["exact_dedup/duplicate"] == 2
    examples = report["examples"]
    assert examples["exact_duplicates"][0]["kept_id"] == "corpus.jsonl:0"
    assert {e["reason"] for e in examples["filtered"]["length"]} == {"too_short", "too_long"}
    table = render_table(report)
    assert table[0].startswith("step") and any(line.startswith("exact_dedup") for line in table)
    page = render_html(report)
    assert "<table>" in page and "exact duplicates" in page


def test_dedup_can_be_switched_off() -> None:
    doc = "The same long document."
    cfg = replace(LENIENT, exact_dedup=False, minhash=MinhashConfig(enabled=False))
    kept, report = clean_texts([doc, doc], cfg)
    assert kept == [doc, doc]
    assert [s["name"] for s in report["steps"]] == ["read", "normalize", "length"]


def test_empty_after_cleaning_is_a_user_error() -> None:
    with pytest.raises(LmopsError, match=r"empty after cleaning.*clean\.min_chars"):
        clean_texts(["short", "tiny"], LENIENT)


def test_nothing_readable_is_a_user_error() -> None:
    with pytest.raises(LmopsError, match="no documents.*data.corpus_paths"):
        clean_texts(["", "  "], LENIENT)


def test_invalid_utf8_is_repaired_or_dropped_and_counted() -> None:
    docs = ["A fine document of words.", "Broken \udcff bytes in this one."]
    kept, report = clean_texts(docs, LENIENT)
    assert kept[1] == "Broken \ufffd bytes in this one."
    assert report["ingest"]["invalid_utf8_repaired"] == 1
    kept, report = clean_texts(docs, replace(LENIENT, invalid_utf8="drop"))
    assert kept == docs[:1] and report["ingest"]["invalid_utf8_dropped"] == 1
    assert report["steps"][0]["reasons"] == {"invalid_utf8": 1}


DOCS = [f"Document number {i} talks about topic {i * 7 % 13} at length." for i in range(40)]


def test_shards_and_workers_do_not_change_the_result() -> None:
    """Many shards: same survivors, same order (test_dedup.py runs them in two processes)."""
    docs = DOCS + DOCS[:5] + [d.upper() for d in DOCS[5:8]]
    one, _ = clean_texts(docs, LENIENT)
    many = replace(LENIENT, shard_mb=0.0005)  # ~8 documents per shard
    sharded, report = clean_texts(docs, many)
    assert report["shards"] > 4
    assert sharded == one


def test_stage_metrics_summary_and_report_files(tmp_path: Path) -> None:
    words = [letter * 3 for letter in "abcdefghijklmnop"]
    distinct = [" ".join(random.Random(i).sample(words, 8)) + "." for i in range(10)]
    docs = distinct + distinct[:3] + ["tiny"]
    _, report = clean_texts(docs, LENIENT)
    report["labeled"] = {"labels": ["neg", "pos"], "train": 8, "val": 1, "test": 2}
    metrics = stage_metrics(report)
    assert metrics == {
        "docs_in": 14,
        "docs_out": 10,
        "bytes_in": report["bytes_in"],
        "bytes_out": report["bytes_out"],
        "kept_fraction": round(10 / 14, 6),
        "train_documents": 10,
        "val_documents": 0,
        "labeled_train": 8,
        "labeled_test": 2,
        "dropped": {
            "read": 0,
            "normalize": 0,
            "length": 1,
            "exact_dedup": 3,
            "near_dedup": 0,
        },  # fmt: skip
        "near_dup_pairs": 0,
    }
    assert render_table(report)[-1] == (
        "train 10 docs, val 0 docs; labeled "
        "{'labels': ['neg', 'pos'], 'train': 8, 'val': 1, 'test': 2}"
    )
    paths = write_report(report, tmp_path)
    assert [p.name for p in paths] == ["report.json", "report.html"]
    assert json.loads(paths[0].read_text()) == json.loads(json.dumps(report))
    assert paths[1].read_text() == render_html(report)
    without_minhash = replace(LENIENT, minhash=MinhashConfig(enabled=False))
    _, report = clean_texts(docs, without_minhash)
    report["labeled"] = {"train": 8, "test": 2}
    assert "near_dup_pairs" not in stage_metrics(report)


def test_work_dir_is_fingerprinted_by_params_and_input_files(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("some text", encoding="utf-8")
    data = DataConfig(source="local", corpus_paths=["corpus.txt"], labeled_train_path="l.csv")
    params = Params(data=data)
    sources = parse_sources(data.corpus_paths, tmp_path)
    work = work_dir(params, sources, tmp_path)
    assert work.parent == tmp_path / ".lmops" / "work" and work.name.startswith("clean-")
    assert work_dir(params, sources, tmp_path) == work  # resumable: same params, same files
    other = replace(params, clean=replace(params.clean, min_chars=21))
    assert work_dir(other, sources, tmp_path) != work
    corpus.write_text("some other text", encoding="utf-8")
    assert work_dir(params, sources, tmp_path) != work
    elsewhere = replace(params.hardware.data_executor, work_dir=str(tmp_path / "scratch"))
    moved = replace(params, hardware=replace(params.hardware, data_executor=elsewhere))
    assert work_dir(moved, sources, Path("/unused")).parent == tmp_path / "scratch"


# ------------------------------------------------------------------------------ splits


def _run(tmp_path: Path, texts: list[str], sources: list[int] | None = None):
    docs = [
        SourceDocument(f"d{i}", t, (sources or [0] * len(texts))[i]) for i, t in enumerate(texts)
    ]
    cfg = replace(LENIENT, exact_dedup=False, minhash=MinhashConfig(enabled=False))
    return run_clean(docs, cfg, tmp_path / "work", ingest=IngestStats())


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_corpus_split_is_by_id_hash_and_stable(tmp_path: Path) -> None:
    texts = [f"A document with the number {i} in it." for i in range(300)]
    run = _run(tmp_path, texts)
    counts = write_splits(run, tmp_path / "a", val_fraction=0.1, seed=3)
    train, val = _rows(tmp_path / "a" / "train.jsonl"), _rows(tmp_path / "a" / "val.jsonl")
    assert counts == {"train": len(train), "val": len(val)} and 10 < len(val) < 60
    assert {r["id"] for r in train}.isdisjoint(r["id"] for r in val)
    assert sorted(r["text"] for r in train + val) == sorted(texts)
    # a bigger corpus keeps every old document in the split it had
    run2 = _run(
        tmp_path / "more", texts + [f"Another new document, number {i}." for i in range(50)]
    )
    write_splits(run2, tmp_path / "b", val_fraction=0.1, seed=3)
    val2 = {r["id"] for r in _rows(tmp_path / "b" / "val.jsonl")}
    assert {r["id"] for r in val} <= val2


def test_each_split_gets_a_document(tmp_path: Path) -> None:
    run = _run(tmp_path, ["The first of two documents.", "The second of two documents."])
    counts = write_splits(run, tmp_path / "out", val_fraction=0.01, seed=0)
    assert counts == {"train": 1, "val": 1}


def test_source_weights_repeat_or_subsample_within_one_split(tmp_path: Path) -> None:
    texts = [f"Document {i} from source {i % 2}, long enough." for i in range(400)]
    run = _run(tmp_path, texts, sources=[i % 2 for i in range(400)])
    write_splits(run, tmp_path / "out", val_fraction=0.1, seed=1, weights=[2.0, 0.5])
    rows = _rows(tmp_path / "out" / "train.jsonl") + _rows(tmp_path / "out" / "val.jsonl")
    by_source = [
        sum(1 for r in rows if r["text"].endswith(f"source {s}, long enough.")) for s in (0, 1)
    ]
    assert by_source[0] == 400 and 70 < by_source[1] < 130  # 200 * 2 and about 200 * 0.5
    val_text = {r["text"] for r in _rows(tmp_path / "out" / "val.jsonl")}
    train_text = {r["text"] for r in _rows(tmp_path / "out" / "train.jsonl")}
    assert val_text.isdisjoint(train_text)  # a copy never lands in the other split


# ------------------------------------------------------------------- never crashes on text

ANY_TEXT = st.text(
    alphabet=st.characters(codec=None, exclude_categories=()),  # surrogates included
    max_size=300,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ANY_TEXT)
def test_every_step_survives_any_unicode(text: str) -> None:
    """Every default step, run on random text: no exception, valid UTF-8 out."""
    from datatrove.data import Document

    data = iter([Document(text, "x")])
    for _, step in build_document_steps(replace(CleanConfig(), min_chars=0), FastWordTokenizer()):
        data = step.run(data, 0, 1)
    for doc in data:
        doc.text.encode("utf-8")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_TEXT, min_size=1, max_size=25))
def test_clean_pipeline_survives_any_unicode(texts: list[str]) -> None:
    """The whole pipeline (files, datatrove passes, dedup) on random text."""
    cfg = replace(CleanConfig(), min_chars=1)
    try:
        kept, _ = clean_texts(texts, cfg)
    except LmopsError as exc:  # everything filtered or blank: a user error, not a crash
        assert "empty after cleaning" in str(exc) or "no documents" in str(exc)
        return
    for text in kept:
        assert text == text.strip() and text.encode("utf-8").decode("utf-8") == text
