"""Cleaning beyond English: ``clean.language`` picks the word splitter, stop words and
word-length bounds, and each document is judged by the script of its prose.

The texts (``language_texts.py``) were written for these tests: a Chinese Markdown tutorial
with code blocks and TeX formulas, Portuguese paragraphs (one with code, one with formulas), a
Japanese paragraph, and junk of four kinds in each language. Chinese and Japanese need the
``lang`` extra (CI installs it); without it those cases skip, and the missing-extra error is
tested either way.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from typing import Any

import pytest
from datatrove.data import Document

from lmops.config import (
    LANGUAGES,
    CleanConfig,
    FineWebQualityConfig,
    GopherQualityConfig,
    LmopsError,
)
from lmops.data.filters import (
    FastWordTokenizer,
    SegmenterWordTokenizer,
    build_document_steps,
    require_language_support,
    word_tokenizer_for,
)
from lmops.data.text import normalize_text, prose_of, text_script
from tests.unit.language_texts import (
    JA_PARAGRAPH,
    JUNK,
    PT_PARAGRAPHS,
    ZH_CODE_HEAVY,
    ZH_TUTORIAL,
)

HAS_ZH = all(importlib.util.find_spec(m) for m in ("spacy", "jieba"))
HAS_JA = all(importlib.util.find_spec(m) for m in ("spacy", "sudachipy", "sudachidict_core"))
needs_zh = pytest.mark.skipif(not HAS_ZH, reason="the lang extra (spacy, jieba) is absent")
needs_ja = pytest.mark.skipif(not HAS_JA, reason="the lang extra (spacy, sudachipy) is absent")
GOOD = {"zh": [ZH_TUTORIAL, ZH_CODE_HEAVY], "pt": PT_PARAGRAPHS, "ja": [JA_PARAGRAPH]}
LANGUAGE_MARKS = {"zh": needs_zh, "pt": [], "ja": needs_ja}


def kept_by(cfg: CleanConfig, texts: list[str]) -> list[str]:
    """The texts the per-document steps keep (normalized), in order."""
    data: Any = iter([Document(t, str(i)) for i, t in enumerate(texts)])
    for _, step in build_document_steps(cfg):
        data = step.run(data, 0, 1)
    return [d.text for d in data]


def _langs(*codes: str) -> list[Any]:
    return [pytest.param(c, marks=LANGUAGE_MARKS[c]) for c in codes]


@pytest.mark.parametrize("language", _langs("zh", "pt", "ja"))
def test_good_prose_with_code_and_formulas_is_kept_whole(language: str) -> None:
    texts = GOOD[language]
    assert kept_by(CleanConfig(language=language), texts) == [normalize_text(t) for t in texts]


@pytest.mark.parametrize("language", _langs("zh", "pt", "ja"))
@pytest.mark.parametrize(
    "kind", ["repeated_lines", "boilerplate", "symbol_soup", "keyword_stuffing"]
)
def test_junk_is_still_removed_under_each_language(language: str, kind: str) -> None:
    cfg = CleanConfig(language=language)
    good = GOOD[language][0]
    assert kept_by(cfg, [JUNK[language][kind], good]) == [normalize_text(good)]


def test_english_rules_drop_portuguese_and_portuguese_rules_keep_it() -> None:
    """The issue's Portuguese corpus: lost to English stop words, kept by its own."""
    assert kept_by(CleanConfig(), PT_PARAGRAPHS) == []
    assert len(kept_by(CleanConfig(language="pt"), PT_PARAGRAPHS)) == len(PT_PARAGRAPHS)


def test_script_is_judged_on_prose_not_code_or_formulas() -> None:
    # the code block has more letters than the Chinese prose around it
    code = ZH_CODE_HEAVY.split("`" * 3)[1]
    assert sum(c.isascii() and c.isalpha() for c in code) > sum(
        "\u4e00" <= c <= "\u9fff" for c in ZH_CODE_HEAVY
    )
    assert text_script(ZH_CODE_HEAVY) == "han"
    assert text_script(ZH_TUTORIAL) == "han"
    assert text_script(JA_PARAGRAPH) == "japanese"
    assert {text_script(t) for t in PT_PARAGRAPHS} == {"latin"}
    assert text_script(JUNK["zh"]["symbol_soup"]) == "none"  # judged by every language
    assert "import" not in prose_of(ZH_CODE_HEAVY) and "运行前" in prose_of(ZH_CODE_HEAVY)
    assert "frac" not in prose_of(PT_PARAGRAPHS[2]) and "Bhaskara" in prose_of(PT_PARAGRAPHS[2])
    # prices are not formulas (pandoc's rule: no space inside the dollars, no digit after)
    assert prose_of("custa $5 e $10 cada") == "custa $5 e $10 cada"


def test_english_default_no_longer_drops_chinese_with_latin_code() -> None:
    """``non_latin: keep`` protects a Chinese document even when its code is ASCII;
    ``filter`` still holds it to the English rules."""
    keep = CleanConfig()
    assert kept_by(keep, [ZH_CODE_HEAVY]) == [normalize_text(ZH_CODE_HEAVY)]
    assert kept_by(replace(keep, non_latin="filter"), [ZH_CODE_HEAVY]) == []


@needs_zh
def test_another_script_skips_the_language_rules_unless_asked() -> None:
    """In a Chinese corpus a Portuguese page is not held to Chinese stop words (keep), or is
    (filter); the repetition rules judge it either way."""
    cfg = CleanConfig(language="zh")
    page = PT_PARAGRAPHS[0]
    assert kept_by(cfg, [page]) == [page]
    assert kept_by(replace(cfg, non_latin="filter"), [page]) == []
    assert kept_by(cfg, [JUNK["pt"]["repeated_lines"]]) == []


@needs_zh
def test_chinese_words_come_from_a_segmenter() -> None:
    """datatrove's "zh" key maps to its whitespace fallback (its csv marks defaults with the
    string "FALSE", which is truthy); the segmenter is under cmn_Hani."""
    tok = word_tokenizer_for("zh")
    assert isinstance(tok, SegmenterWordTokenizer)
    words = tok.word_tokenize("我们使用均方误差作为损失函数")
    assert "损失函数" in words or "损失" in words
    assert max(map(len, words)) <= 4 and len(words) >= 5
    assert tok.words("梯度下降") is tok.words("梯度下降")  # shared by both Gopher filters


@needs_ja
def test_japanese_words_come_from_a_segmenter() -> None:
    words = word_tokenizer_for("ja").word_tokenize("私は毎朝コーヒーを飲みます")
    assert "コーヒー" in words and "は" in words


def test_space_separated_languages_use_the_regex_splitter() -> None:
    for code, defaults in LANGUAGES.items():
        if defaults.datatrove_tokenizer is None:
            assert isinstance(word_tokenizer_for(code), FastWordTokenizer), code


def test_missing_segmenter_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "jieba" else real(name, *a)
    )
    with pytest.raises(LmopsError) as err:
        require_language_support("zh")
    message = str(err.value)
    assert "lmops[lang]" in message and "clean.language zh" in message and "jieba" in message
    assert "\n" not in message
    with pytest.raises(LmopsError, match=r"lmops\[lang\]"):
        build_document_steps(CleanConfig(language="zh"))
    require_language_support("pt")  # nothing to install


def test_auto_takes_the_language_value_and_a_number_wins() -> None:
    q = GopherQualityConfig()
    zh = q.resolved("zh")
    assert (zh.min_avg_word_length, zh.max_avg_word_length, zh.min_stop_words) == (1.0, 5.0, 2)
    assert "的" in zh.stop_words
    en = q.resolved("en")
    assert (en.min_avg_word_length, en.max_avg_word_length) == (3.0, 10.0)
    assert en.stop_words == ["the", "be", "to", "of", "and", "that", "have", "with"]
    own = replace(q, min_avg_word_length=2.5, stop_words=["um"]).resolved("pt")
    assert own.min_avg_word_length == 2.5 and own.stop_words == ["um"]
    assert own.max_avg_word_length == LANGUAGES["pt"].max_avg_word_length
    # an explicit English bound on Chinese drops the tutorial: auto is what makes it work
    strict = CleanConfig(language="zh", gopher_quality=replace(q, min_avg_word_length=3.0))
    if HAS_ZH:
        assert kept_by(strict, [ZH_TUTORIAL]) == []


# A Portuguese site menu, one entry per line, that holds two stop words ("Política de
# privacidade", "Mapa do site") and so passes every Gopher rule: only line endings give it away.
PT_NAV_MENU = (
    "Início\nNotícias\nEsportes\nTecnologia\nEntrar\nCadastre-se\nContato\nSobre nós\n"
    "Política de privacidade\nMapa do site\nTermos de uso\n"
    "Copyright © 2024 Todos os direitos reservados"
)


def test_line_punctuation_drops_a_menu_that_holds_stop_words() -> None:
    """FineWeb's line_punct_thr (FineWeb-2: 0.154 for Portuguese) removes the menu, and keeps
    prose whose lines end in . ! ? (or 。！？), code blocks and formulas left out."""
    pt = CleanConfig(language="pt")
    off = replace(pt, fineweb_quality=FineWebQualityConfig(enabled=False))
    assert kept_by(off, [PT_NAV_MENU]) == [normalize_text(PT_NAV_MENU)]  # the Gopher rules pass it
    assert kept_by(pt, [PT_NAV_MENU, *PT_PARAGRAPHS]) == [normalize_text(t) for t in PT_PARAGRAPHS]
    nav_bar = " | ".join(PT_NAV_MENU.split("\n"))  # the same menu as one line
    assert kept_by(pt, [nav_bar]) == []
    if HAS_ZH:  # headings, code and a line ending in "：" do not sink the tutorial
        assert kept_by(CleanConfig(language="zh"), [ZH_TUTORIAL]) == [normalize_text(ZH_TUTORIAL)]


def test_line_punctuation_follows_the_language_and_is_off_for_english() -> None:
    f = FineWebQualityConfig()
    assert f.resolved("pt").line_punct_thr == 0.154
    assert f.resolved("zh").line_punct_thr == 0.106
    assert f.resolved("en").line_punct_thr is None  # sentence corpora without final stops
    assert replace(f, line_punct_thr=0.5).resolved("en").line_punct_thr == 0.5
    assert "fineweb_quality" not in dict(build_document_steps(CleanConfig()))
    # an explicit threshold turns it on for English too
    en = CleanConfig(fineweb_quality=replace(f, line_punct_thr=0.12))
    menu = "Home\nNews\nSports\nAbout the site\nContact\nTerms of use and privacy of the data"
    assert kept_by(CleanConfig(), [menu]) == [menu]
    assert kept_by(en, [menu]) == []
