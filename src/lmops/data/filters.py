"""The clean stage's per-document steps: datatrove's formatters and filters, configured from params.

datatrove supplies the rules (Gopher repetition and quality, C4, PII masking). What it lacks, or
does too slowly for a 2-core laptop, lives here as small datatrove steps:

- :class:`UnicodeNormalizer`: unicode / control-character / whitespace clean-up that keeps CJK,
  accents and emoji (datatrove's FTFY formatter needs an extra package and rewrites more).
- :class:`LengthFilter`: ``clean.min_chars`` / ``clean.max_chars``.
- :class:`FastWordTokenizer`: a regex word and sentence splitter with spaCy-like English rules
  and one token per CJK character. datatrove's default (spaCy) splits about 0.15 MB/s per core
  here; this one about 10 MB/s, and every word-based rule and the MinHash shingles use it.
- :class:`GopherRepetition`: datatrove's GopherRepetitionFilter with the n-gram counting done
  in numpy for a batch of documents at once; the same decisions (tested against datatrove's
  own implementation), several times faster.
- Every filter here takes documents in batches and updates datatrove's statistics once per
  batch (:class:`_BatchRun`), and the two Gopher filters share one tokenization a document.
- ``clean.language`` picks the word splitter (:func:`word_tokenizer_for`: the regex one for
  languages written with spaces, datatrove's segmenters for Chinese and Japanese), the stop
  words and the word-length bounds (``lmops.config.LANGUAGES``).
- :class:`FineWebLinePunct`: FineWeb's line-punctuation rule alone (datatrove's
  FineWebQualityFilter runs it together with three more rules), on the prose, with
  ``clean.language``'s FineWeb-2 threshold: catches menus and link lists whose entries happen
  to hold stop words.
- The language's word rules (Gopher quality, FineWeb line punctuation, C4) step aside for documents written in another
  script, judged on their prose outside code and formulas (:func:`lmops.data.text.text_script`),
  when ``clean.non_latin`` is ``keep``: Chinese text is not dropped for lacking "the", nor an
  English page for lacking "的".
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections import Counter
from typing import Any

import regex
from datatrove.data import Document
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters import (
    C4QualityFilter,
    FineWebQualityFilter,
    GopherQualityFilter,
    GopherRepetitionFilter,
)
from datatrove.pipeline.filters.base_filter import BaseFilter, get_filter_result
from datatrove.pipeline.filters.gopher_repetition_filter import find_duplicates
from datatrove.pipeline.formatters import PIIFormatter
from datatrove.pipeline.formatters.base import BaseFormatter
from datatrove.utils.batching import batched
from datatrove.utils.text import PUNCTUATION_SET, split_into_words
from datatrove.utils.typeshelper import StatHints
from datatrove.utils.word_tokenizers import WordTokenizer, load_word_tokenizer

from lmops.config import LANGUAGES, CleanConfig, LmopsError
from lmops.data.ngrams import NGramStats
from lmops.data.text import normalize_text, prose_of, text_script

__all__ = [
    "C4Quality",
    "FastWordTokenizer",
    "FineWebLinePunct",
    "GopherQuality",
    "GopherRepetition",
    "LengthFilter",
    "SegmenterWordTokenizer",
    "UnicodeNormalizer",
    "build_document_steps",
    "require_language_support",
    "word_tokenizer_for",
]

# Han, kana, CJK compatibility ideographs and the supplementary ideograph planes: one token each,
# since these scripts do not put spaces between words.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_WORDS = re.compile(
    rf"[{_CJK}]"  # one ideograph or kana
    r"|\d+(?:[.,:]\d+)+"  # 19.5, 1,000, 12:30 stay one token, as in spaCy
    rf"|[^\W_{_CJK}]+(?:['’][^\W_{_CJK}]+)*"  # letters and digits, inner apostrophes (it's)
    r"|(?:[^\w\s]|_)+"  # a run of punctuation or symbols (..., ?!, emoji)
)
# The same rules for ASCII text, where the plain re engine's ASCII classes run ~1.7x faster.
_ASCII_WORDS = re.compile(
    r"\d+(?:[.,:]\d+)+|[A-Za-z0-9]+(?:'[A-Za-z0-9]+)*|[^A-Za-z0-9\s]+", re.ASCII
)
# FastWordTokenizer.words keeps the words of this much text at most (~50 MB of word lists):
# a batch of 256 documents of up to ~15,000 characters each, the window the Gopher filters share
_MEMO_CHARS = 4_000_000
# Latin-script sentence ends need a space (or the end) after them ("3.5", "e.g." stay inside);
# CJK full-width ones end a sentence where they stand.
_SENTENCE_END = re.compile(r"[.!?…]+[\"'”’)\]]*(?=\s|$)|[。！？]+[」』”’)\]]*")


class _WordMemo(WordTokenizer):
    """A word tokenizer that remembers the words of the last batches of documents."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self._memo: dict[str, list[str]] = {}
        self._memo_chars = 0

    def words(self, text: str) -> list[str]:
        """:meth:`word_tokenize`, remembered for the last batches of documents.

        The Gopher filters take the same batch one after the other and need the same words;
        datatrove's own cache of them holds 5 documents. Bounded by characters, oldest out.
        """
        found = self._memo.get(text)
        if found is None:
            found = self._memo[text] = self.word_tokenize(text)
            self._memo_chars += len(text)
            while self._memo_chars > _MEMO_CHARS and len(self._memo) > 1:
                oldest = next(iter(self._memo))
                del self._memo[oldest]
                self._memo_chars -= len(oldest)
        return found


class FastWordTokenizer(_WordMemo):
    """Regex words and sentences; a drop-in for datatrove's spaCy tokenizer in its filters."""

    def __init__(self) -> None:
        super().__init__("lmops_fast")

    def word_tokenize(self, text: str) -> list[str]:
        return (_ASCII_WORDS if text.isascii() else _WORDS).findall(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        spans: list[tuple[int, int]] = []
        start = 0
        for m in _SENTENCE_END.finditer(text):
            if text[start : m.end()].strip():
                spans.append((start, m.end()))
            start = m.end()
        if text[start:].strip():
            spans.append((start, len(text)))
        return spans

    def sent_tokenize(self, text: str) -> list[str]:
        return [text[a:b].strip() for a, b in self.span_tokenize(text)]


class SegmenterWordTokenizer(_WordMemo):
    """datatrove's word tokenizer for a language without spaces between words, remembered.

    datatrove picks the segmenter (spaCy with jieba for Chinese, spaCy with SudachiPy for
    Japanese: FineWeb-2's choices); this wrapper adds the memo the Gopher filters share, and
    builds datatrove's tokenizer in the worker process that first needs it (a spaCy pipeline
    is large to pickle and slow to load).
    """

    def __init__(self, datatrove_key: str) -> None:
        super().__init__(datatrove_key)
        self.datatrove_key = datatrove_key
        self._inner: WordTokenizer | None = None

    @property
    def inner(self) -> WordTokenizer:
        if self._inner is None:
            self._inner = load_word_tokenizer(self.datatrove_key)
        return self._inner

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_inner": None, "_memo": {}, "_memo_chars": 0}

    def word_tokenize(self, text: str) -> list[str]:
        return self.inner.word_tokenize(text)

    def sent_tokenize(self, text: str) -> list[str]:
        return self.inner.sent_tokenize(text)

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        return self.inner.span_tokenize(text)


# Modules datatrove's segmenter imports for a language (beyond datatrove itself); the lang extra.
_SEGMENTER_MODULES = {
    "zh": ("spacy", "jieba"),
    "ja": ("spacy", "sudachipy", "sudachidict_core"),
}


def require_language_support(language: str) -> None:
    """Raise a one-line :class:`LmopsError` naming the extra when ``language`` lacks a package.

    Called where the clean stage starts, so a missing segmenter stops it before any reading,
    not in a worker process halfway through the corpus.
    """
    missing = [m for m in _SEGMENTER_MODULES.get(language, ()) if not importlib.util.find_spec(m)]
    if missing:
        raise LmopsError(
            f"clean.language {language} ({LANGUAGES[language].name}) needs a word segmenter: "
            f"{', '.join(missing)} not installed; pip install 'lmops[lang]'"
        )


def word_tokenizer_for(language: str) -> _WordMemo:
    """The word tokenizer the filters use for ``language`` (a ``clean.language`` code)."""
    key = LANGUAGES[language].datatrove_tokenizer
    if key is None:
        return FastWordTokenizer()
    require_language_support(language)
    return SegmenterWordTokenizer(key)


def words_of(text: str, language: Any) -> list[str]:
    """The words of ``text`` for a filter whose ``language`` is a language code or a tokenizer."""
    if isinstance(language, _WordMemo):
        return language.words(text)
    return split_into_words(text, language)


class _BatchRun:
    """Mixin for datatrove filters: documents in batches, statistics once per batch.

    datatrove's ``BaseFilter.run`` times every document and updates two or three statistics
    for it, and records each kept document's length: at ~1 KB a document that bookkeeping cost
    more than some rules. Here the same statistics (same names, same totals) are counted per
    batch, and ``filter_batch`` gets a whole batch, for filters that gain from one.
    """

    docs_per_batch = 256

    def run(self, data: Any, rank: int = 0, world_size: int = 1) -> Any:
        writer = self.exclusion_writer  # type: ignore[attr-defined]
        with writer if writer else contextlib.nullcontext():
            for batch in batched(data, self.docs_per_batch):
                with self.track_time():  # type: ignore[attr-defined]
                    results = self.filter_batch(batch)  # type: ignore[attr-defined]
                counts: Counter[str] = Counter({StatHints.total: len(batch)})
                kept = []
                for doc, result in zip(batch, results, strict=True):
                    keep, reason = get_filter_result(result)
                    if keep:
                        kept.append(doc)
                        continue
                    counts[StatHints.dropped] += 1
                    if reason:
                        counts[f"dropped_{reason}"] += 1
                    if writer:
                        if reason:
                            doc.metadata["filter_reason"] = reason
                        writer.write(doc, rank)
                counts[StatHints.forwarded] = len(kept)
                for label, value in counts.items():
                    if value:
                        self.stat_update(label, value=value)  # type: ignore[attr-defined]
                yield from kept


class UnicodeNormalizer(BaseFormatter):
    """:func:`lmops.data.text.normalize_text` as a datatrove step."""

    name = "🔤 Normalize"

    def __init__(self, unicode_form: str = "NFC") -> None:
        super().__init__()
        self.unicode_form = unicode_form

    def format(self, text: str) -> str:
        return normalize_text(text, self.unicode_form)


class LengthFilter(_BatchRun, BaseFilter):
    """Keep documents of ``min_chars`` to ``max_chars`` characters."""

    name = "📏 Length"

    def __init__(
        self,
        min_chars: int,
        max_chars: int,
        exclusion_writer: Any = None,
        name: str | None = None,
    ) -> None:
        if name:
            self.name = name  # before super().__init__: the stats take the name
        super().__init__(exclusion_writer)
        self.min_chars = min_chars
        self.max_chars = max_chars

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        n = len(doc.text)
        if n < self.min_chars:
            return False, "too_short"
        if n > self.max_chars:
            return False, "too_long"
        return True


class _LanguageRules:
    """Mixin: let documents written in another script than the rules' language through.

    ``script`` is the language's (``lmops.config.LANGUAGES``); a document without letters is
    judged whatever the language, so symbol soup never slips through as "another script".
    """

    script: str = "latin"
    skip_other_scripts: bool = True

    @property
    def skip_non_latin(self) -> bool:
        """The older name of :attr:`skip_other_scripts` (from when the rules were English)."""
        return self.skip_other_scripts

    @skip_non_latin.setter
    def skip_non_latin(self, value: bool) -> None:
        self.skip_other_scripts = value

    def other_script(self, text: str) -> bool:
        """True when this rule set steps aside for ``text`` (and counts it)."""
        if not self.skip_other_scripts:
            return False
        script = text_script(text)
        if script in (self.script, "none"):
            return False
        self.stat_update("skipped_other_script")  # type: ignore[attr-defined]
        return True

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.other_script(doc.text):
            return True
        return super().filter(doc)  # type: ignore[misc]


# Words made only of datatrove's punctuation characters, one word per line of a joined string.
_SYMBOL_ONLY = regex.compile(
    "(?m)^[" + "".join(regex.escape(c) for c in sorted(PUNCTUATION_SET)) + "]+$"
)
_HAS_LETTER = regex.compile(r"(?m)^[^\n]*?\p{L}")  # str.isalpha() is exactly category L*
# The same two scans for ASCII text, where the plain re engine is several times faster.
_ASCII_SYMBOL_ONLY = re.compile(
    "(?m)^[" + "".join(re.escape(c) for c in sorted(PUNCTUATION_SET) if c.isascii()) + "]+$"
)
_ASCII_HAS_LETTER = re.compile(r"(?m)^[^\n]*?[A-Za-z]")


class GopherQuality(_BatchRun, _LanguageRules, GopherQualityFilter):
    """datatrove's Gopher quality rules, skipped for documents in another script when asked.

    ``filter`` is the parent's, rule for rule and in the same order, with its per-character
    Python loops replaced by two regex scans over the words joined one per line (the words
    never contain a newline). ``tests/unit/test_filters.py`` checks the decisions are equal.

    The rules judge the prose (:func:`lmops.data.text.prose_of`): fenced code, inline code and
    TeX formulas are not words of any language, and in a tutorial their brackets and operators
    alone pushed good text under the alphabetic-words ratio. A text without such markup is
    judged exactly as datatrove would.
    """

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.other_script(doc.text):
            return True
        text = prose_of(doc.text)
        words = words_of(text, self.language)
        n_words = len(words)
        joined = "\n".join(words)
        ascii_only = joined.isascii()
        symbol_only = (_ASCII_SYMBOL_ONLY if ascii_only else _SYMBOL_ONLY).findall(joined)
        n_non_symbol = n_words - len(symbol_only)
        if self.min_doc_words and n_non_symbol < self.min_doc_words:
            return False, "gopher_short_doc"
        if self.max_doc_words and n_non_symbol > self.max_doc_words:
            return False, "gopher_long_doc"
        if n_words == 0:  # the parent would divide by zero below
            return False, "gopher_short_doc"
        non_symbol_chars = len(joined) - (n_words - 1) - sum(map(len, symbol_only))
        avg = non_symbol_chars / n_non_symbol if n_non_symbol else float("nan")
        if self.min_avg_word_length and avg < self.min_avg_word_length:
            return False, "gopher_below_avg_threshold"
        if self.max_avg_word_length and avg > self.max_avg_word_length:
            return False, "gopher_above_avg_threshold"
        if self.max_symbol_word_ratio and text.count("#") / n_words > self.max_symbol_word_ratio:
            return False, "gopher_too_many_hashes"
        if (
            self.max_symbol_word_ratio
            and (text.count("...") + text.count("…")) / n_words > self.max_symbol_word_ratio
        ):
            return False, "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if (
            self.max_bullet_lines_ratio
            and sum(s.lstrip().startswith(("•", "-")) for s in lines) / len(lines)
            > self.max_bullet_lines_ratio
        ):
            return False, "gopher_too_many_bullets"
        if (
            self.max_ellipsis_lines_ratio
            and sum(s.rstrip().endswith(("...", "…")) for s in lines) / len(lines)
            > self.max_ellipsis_lines_ratio
        ):
            return False, "gopher_too_many_end_ellipsis"
        if (
            self.max_non_alpha_words_ratio
            and len((_ASCII_HAS_LETTER if ascii_only else _HAS_LETTER).findall(joined)) / n_words
            < self.max_non_alpha_words_ratio
        ):
            return False, "gopher_below_alpha_threshold"
        if self.min_stop_words and len(self.stop_words.intersection(words)) < self.min_stop_words:
            return False, "gopher_enough_stop_words"
        return True


# What may follow a line's terminal punctuation: closing quotes and brackets ("Fim." he said.)
_LINE_CLOSERS = "\"'”’»)]}）」』】"


class FineWebLinePunct(_BatchRun, _LanguageRules, FineWebQualityFilter):
    """FineWeb's ``line_punct_thr`` rule: drop a document when fewer than that share of its
    non-blank lines end in terminal punctuation (datatrove's ``stop_chars``: its
    TERMINAL_PUNCTUATION, which holds . ! ? and the CJK 。！？ among other scripts' marks).

    Only this rule of datatrove's FineWebQualityFilter runs (its short-line, duplicate-line and
    list rules are not set from params; the list rule would tokenize every document again).
    Two differences from datatrove: lines are judged on the prose
    (:func:`lmops.data.text.prose_of`: a tutorial's code lines and display formulas do not end
    in a full stop, and are not lines of the language), and a line's trailing spaces and
    closing quotes or brackets are passed over before its last character is looked at.
    A document without prose lines counts as having none that ends in punctuation.
    """

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if self.other_script(doc.text):
            return True
        lines = [line.rstrip() for line in prose_of(doc.text).split("\n")]
        lines = [line for line in lines if line]
        ended = sum(1 for line in lines if line.rstrip(_LINE_CLOSERS).endswith(self.stop_chars))
        ratio = ended / len(lines) if lines else 0.0
        if ratio < self.line_punct_thr and not (ratio == 0 and self.line_punct_exclude_zero):
            return False, "line_punct_ratio"
        return True


class C4Quality(_BatchRun, _LanguageRules, C4QualityFilter):
    """datatrove's C4 rules, skipped for documents in another script when asked."""


# --------------------------------------------------------------------------- Gopher repetition


class GopherRepetition(_BatchRun, GopherRepetitionFilter):
    """datatrove's GopherRepetitionFilter, with its word n-gram statistics computed in numpy.

    Identical decisions to the parent (``tests/unit/test_filters.py`` compares them on real and
    random text), except that two n-grams count as equal when their words are equal, where
    datatrove compares the words glued without spaces (so "ab c" equals "a bc" there). The
    n-gram rules run on a whole batch at once (:class:`lmops.data.ngrams.NGramStats`).
    """

    def __init__(self, *args: Any, top_n_gram_min_count: int = 1, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # datatrove counts the most frequent n-gram even when it occurs once; then a short text
        # fails top_2_gram on its first two words. 2 asks for an actual repetition.
        self.top_n_gram_min_count = top_n_gram_min_count

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        results: list[bool | tuple[bool, str]] = [True] * len(batch)
        todo: list[int] = []  # documents that pass the line rules and have words
        words: list[list[str]] = []
        for i, doc in enumerate(batch):
            verdict = self._line_rules(doc.text)
            if verdict is not True:
                results[i] = verdict
                continue
            doc_words = words_of(doc.text, self.language)
            if doc_words:
                todo.append(i)
                words.append(doc_words)
        sizes = [n for n, _ in self.top_n_grams] + [n for n, _ in self.dup_n_grams]
        if not (todo and sizes):
            return results
        stats = NGramStats(words, max(sizes))
        top = {n: stats.top_chars(n, self.top_n_gram_min_count) for n, _ in self.top_n_grams}
        dup = {n: stats.dup_chars(n) for n, _ in self.dup_n_grams}
        for k, i in enumerate(todo):
            size = len(batch[i].text)
            results[i] = self._ngram_rules(size, top, dup, k)
        return results

    def _ngram_rules(
        self,
        size: int,
        top: dict[int, list[int | None]],
        dup: dict[int, list[int]],
        k: int,
    ) -> bool | tuple[bool, str]:
        for n, n_frac in self.top_n_grams:
            chars = top[n][k]
            if chars is not None and chars / size > n_frac:
                return False, f"top_{n}_gram"
        for n, n_frac in self.dup_n_grams:
            if dup[n][k] / size > n_frac:
                return False, f"duplicated_{n}_n_grams"
        return True

    def _line_rules(self, text: str) -> bool | tuple[bool, str]:
        """The paragraph and line rules, the parent's, in its order."""
        if not text:
            return False, "empty"
        paragraphs = self.paragraph_exp.split(text.strip())
        dup, dup_chars = find_duplicates(paragraphs)
        if self.dup_para_frac and dup / len(paragraphs) > self.dup_para_frac:
            return False, "dup_para_frac"
        if self.dup_para_char_frac and dup_chars / len(text) > self.dup_para_char_frac:
            return False, "dup_para_char_frac"
        lines = self._line_splitter.split(text)
        dup, dup_chars = find_duplicates(lines)
        if self.dup_line_frac and dup / len(lines) > self.dup_line_frac:
            return False, "dup_line_frac"
        if self.dup_line_char_frac and dup_chars / len(text) > self.dup_line_char_frac:
            return False, "dup_line_char_frac"
        return True


# ------------------------------------------------------------------------------ from params


def build_document_steps(
    cfg: CleanConfig,
    tokenizer: WordTokenizer | None = None,
    exclusion_writers: dict[str, Any] | None = None,
) -> list[tuple[str, PipelineStep]]:
    """``(report name, step)`` for each per-document step that ``cfg`` turns on, in order.

    ``exclusion_writers`` maps a step's report name to a datatrove writer that receives the
    documents the step drops (the report shows a few of them). ``tokenizer`` splits words for
    the rules (default: :func:`word_tokenizer_for` ``cfg.language``).
    """
    tokenizer = tokenizer or word_tokenizer_for(cfg.language)
    writers = exclusion_writers or {}
    steps: list[tuple[str, PipelineStep]] = [("normalize", UnicodeNormalizer(cfg.unicode_form))]
    if cfg.pii.enabled:
        steps.append(
            (
                "pii",
                PIIFormatter(
                    remove_emails=cfg.pii.emails,
                    remove_ips=cfg.pii.ips,
                    email_replacement=cfg.pii.email_replacement,
                    ip_replacement=cfg.pii.ip_replacement,
                ),
            )
        )
    steps.append(("length", LengthFilter(cfg.min_chars, cfg.max_chars, writers.get("length"))))
    skip_other_scripts = cfg.non_latin == "keep"
    script = cfg.language_defaults().script
    r = cfg.gopher_repetition
    if r.enabled:
        top = [(n, getattr(r, f"top_{n}_gram_frac")) for n in (2, 3, 4)]
        dup = [(n, getattr(r, f"dup_{n}_gram_frac")) for n in range(5, 11)]
        steps.append(
            (
                "gopher_repetition",
                GopherRepetition(
                    dup_line_frac=r.dup_line_frac,
                    dup_para_frac=r.dup_para_frac,
                    dup_line_char_frac=r.dup_line_char_frac,
                    dup_para_char_frac=r.dup_para_char_frac,
                    top_n_grams=tuple((n, f) for n, f in top if f is not None),
                    dup_n_grams=tuple((n, f) for n, f in dup if f is not None),
                    exclusion_writer=writers.get("gopher_repetition"),
                    language=tokenizer,
                    top_n_gram_min_count=r.top_n_gram_min_count,
                ),
            )
        )
    q = cfg.gopher_quality.resolved(cfg.language)
    if q.enabled:
        quality = GopherQuality(
            min_doc_words=q.min_doc_words,
            max_doc_words=q.max_doc_words,
            min_avg_word_length=q.min_avg_word_length,
            max_avg_word_length=q.max_avg_word_length,
            max_symbol_word_ratio=q.max_symbol_word_ratio,
            max_bullet_lines_ratio=q.max_bullet_lines_ratio,
            max_ellipsis_lines_ratio=q.max_ellipsis_lines_ratio,
            max_non_alpha_words_ratio=q.min_alpha_words_ratio,  # datatrove's name is misleading
            min_stop_words=q.min_stop_words if q.stop_words is not None else None,
            stop_words=q.stop_words or [],
            exclusion_writer=writers.get("gopher_quality"),
            language=tokenizer,
        )
        quality.script, quality.skip_other_scripts = script, skip_other_scripts
        steps.append(("gopher_quality", quality))
    f = cfg.fineweb_quality.resolved(cfg.language)
    if f.enabled and f.line_punct_thr is not None:
        line_punct = FineWebLinePunct(
            exclusion_writer=writers.get("fineweb_quality"),
            line_punct_thr=f.line_punct_thr,
            language=cfg.language,
        )
        line_punct.script, line_punct.skip_other_scripts = script, skip_other_scripts
        steps.append(("fineweb_quality", line_punct))
    c = cfg.c4
    if c.enabled:
        c4 = C4Quality(
            exclusion_writer=writers.get("c4"),
            split_paragraph=True,
            remove_citations=c.remove_citations,
            filter_no_terminal_punct=c.filter_no_terminal_punct,
            min_num_sentences=c.min_num_sentences,
            min_words_per_line=c.min_words_per_line,
            max_word_length=c.max_word_length,
            filter_lorem_ipsum=c.filter_lorem_ipsum,
            filter_javascript=c.filter_javascript,
            filter_curly_bracket=c.filter_curly_bracket,
            filter_policy=c.filter_policy,
            language=tokenizer,
        )
        c4.script, c4.skip_other_scripts = script, skip_other_scripts
        steps.append(("c4", c4))
    return steps
