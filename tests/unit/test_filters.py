"""Per-document cleaning steps: each exposed setting drops what it should and keeps the rest.

The steps run here without an executor (a generator chain, as inside one datatrove task), so
each case costs microseconds. The faster Gopher implementations are checked against
datatrove's own on real and random text.
"""

from __future__ import annotations

import random
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from datatrove.data import Document
from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter
from datatrove.pipeline.filters.base_filter import BaseFilter

from lmops.config import (
    C4Config,
    CleanConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    PIIConfig,
)
from lmops.data.filters import (
    FastWordTokenizer,
    GopherQuality,
    GopherRepetition,
    LengthFilter,
    build_document_steps,
)
from lmops.data.ngrams import NGramStats
from lmops.data.sample import generate_corpus
from lmops.data.text import normalize_text
from tests.unit.clean_texts import clean_texts

SHAKESPEARE = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "tinyshakespeare" / "input.txt"
)
TOK = FastWordTokenizer()

# Plain English prose that every default rule keeps.
GOOD = (
    "The old mill stood by the river for a hundred years. Every morning the miller opened "
    "the doors and the farmers brought their grain to him. He was a kind man, and the "
    "children of the village liked to watch the great wheel turn in the water."
)
OFF = {  # every rule set off, so one case can turn on exactly the rule it tests
    "gopher_repetition": GopherRepetitionConfig(enabled=False),
    "gopher_quality": GopherQualityConfig(enabled=False),
    "c4": C4Config(enabled=False),
}


def run_steps(cfg: CleanConfig, texts: list[str]) -> list[str]:
    data: Any = iter([Document(t, str(i)) for i, t in enumerate(texts)])
    for _, step in build_document_steps(cfg, TOK):
        data = step.run(data, 0, 1)
    return [d.text for d in data]


def cfg_with(section: str | None = None, **fields: Any) -> CleanConfig:
    """Defaults with every filter off; ``section`` on with only the rules in ``fields``."""
    cfg = CleanConfig(min_chars=1, **OFF)
    if section is None:
        return replace(cfg, **fields)
    current = getattr(cfg, section)
    quiet = {}
    for name in vars(current):
        value = getattr(current, name)
        if name in ("enabled", "top_n_gram_min_count", "remove_citations", "stop_words"):
            continue
        if isinstance(value, bool):
            quiet[name] = False
        elif section == "c4" and isinstance(value, int):
            quiet[name] = -1
        else:
            quiet[name] = None
    return replace(cfg, **{section: replace(current, **{**quiet, "enabled": True, **fields})})


def test_word_tokenizer_splits_like_spacy_and_cjk_per_character() -> None:
    assert TOK.word_tokenize("It's 19.5 kg... well-known, café 東京です 😀!") == [
        "It's", "19.5", "kg", "...", "well", "-", "known", ",", "café",
        "東", "京", "で", "す", "😀!",
    ]  # fmt: skip
    assert TOK.sent_tokenize("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
    assert TOK.sent_tokenize("日本です。中文！") == ["日本です。", "中文！"]


def test_defaults_keep_good_prose_and_the_built_in_sample() -> None:
    assert run_steps(CleanConfig(), [GOOD]) == [GOOD]
    docs = [d for d in generate_corpus(600, 7) if len(d.strip()) >= 20]
    kept = run_steps(CleanConfig(), docs)
    assert len(kept) >= 0.97 * len(docs)


# (section, fields, a document the setting must drop, one it must keep)
LINES = "\n".join(f"line number {i} says something new" for i in range(10))
CASES = [
    (None, {"min_chars": 30}, "too short", GOOD),
    (None, {"max_chars": 100}, GOOD, "short but fine"),
    ("gopher_repetition", {"dup_line_frac": 0.3}, "same line\n" * 5 + "other", LINES),
    ("gopher_repetition", {"dup_para_frac": 0.3}, "same para\n\n" * 5 + "other", GOOD),
    ("gopher_repetition", {"dup_line_char_frac": 0.2}, "x\ny\n" + ("a long line of text " * 4 + "\n") * 2, LINES),
    ("gopher_repetition", {"dup_para_char_frac": 0.2}, "intro\n\n" + GOOD[:100] + "\n\n" + GOOD[:100], GOOD),
    ("gopher_repetition", {"top_2_gram_frac": 0.2}, "big cat " * 12 + "ends", GOOD),
    ("gopher_repetition", {"top_3_gram_frac": 0.18, "top_2_gram_frac": None}, "the big cat " * 8 + "ends", GOOD),
    ("gopher_repetition", {"top_4_gram_frac": 0.16, "top_2_gram_frac": None, "top_3_gram_frac": None}, "a b c d " * 8 + GOOD[:80], GOOD),
    ("gopher_repetition", {"dup_5_gram_frac": 0.15}, GOOD + " " + GOOD[:90], GOOD),
    ("gopher_repetition", {"dup_10_gram_frac": 0.1}, GOOD + " " + GOOD[:100], GOOD),
    ("gopher_repetition", {"top_n_gram_min_count": 1, "top_2_gram_frac": 0.2}, "Short text here.", None),
    ("gopher_quality", {"min_doc_words": 10}, "Only five words are here.", GOOD),
    ("gopher_quality", {"max_doc_words": 20}, GOOD, "The cat and the dog sat on the mat."),
    ("gopher_quality", {"min_avg_word_length": 3.0}, "a an to of it is be by on in at up " * 3, GOOD),
    ("gopher_quality", {"max_avg_word_length": 10.0}, "the " + "extraordinarilylongwords " * 12 + "and of", GOOD),
    ("gopher_quality", {"max_symbol_word_ratio": 0.1}, GOOD + " #tag #more #hash #x #y #z #w #v #u #t", GOOD),
    ("gopher_quality", {"max_bullet_lines_ratio": 0.9}, "- the first item\n- the second item\n- and a third one", GOOD),
    ("gopher_quality", {"max_ellipsis_lines_ratio": 0.3}, "and then the ...\nof the story ...\nnothing here", GOOD),
    ("gopher_quality", {"min_alpha_words_ratio": 0.8}, "the and 12 34 56 78 90 11 22 33 44 55 of", GOOD),
    ("gopher_quality", {"min_stop_words": 2}, "Dogs bark loudly. Cats sleep quietly all day long, sometimes.", GOOD),
    ("c4", {"filter_no_terminal_punct": True, "min_num_sentences": 1}, "no full stop here at all", GOOD),
    ("c4", {"min_num_sentences": 5}, "One sentence only, with words.", "A b c. D e f. G h i. J k l. M n o."),
    ("c4", {"min_words_per_line": 3, "min_num_sentences": 1}, "Hi.\nOk.", "This line has words."),
    ("c4", {"max_word_length": 10, "min_num_sentences": 1}, "A supercalifragilistic word.", "Short words only here."),
    ("c4", {"filter_lorem_ipsum": True, "min_num_sentences": 1}, "Lorem ipsum dolor sit amet.", GOOD),
    ("c4", {"filter_javascript": True, "min_num_sentences": 1}, "Please enable JavaScript now.", GOOD),
    ("c4", {"filter_curly_bracket": True, "min_num_sentences": 1}, "Code goes { here } now.", GOOD),
    ("c4", {"filter_policy": True, "min_num_sentences": 1}, "Read our privacy policy today.", GOOD),
]  # fmt: skip


@pytest.mark.parametrize(("section", "fields", "drop", "keep"), CASES)
def test_each_setting_drops_and_keeps(
    section: str | None, fields: dict, drop: str, keep: str | None
) -> None:
    cfg = cfg_with(section, **fields)
    assert run_steps(cfg, [drop]) == [], f"{section}.{fields} should drop {drop!r}"
    if keep is not None:
        assert run_steps(cfg, [keep]) == [keep], f"{section}.{fields} should keep {keep!r}"
    if section is not None:  # and the same rule switched off keeps it
        off = replace(cfg, **{section: replace(getattr(cfg, section), enabled=False)})
        assert run_steps(off, [drop]) == [normalize_text(drop)]


def test_top_n_gram_min_count_keeps_short_texts() -> None:
    short = "Short text here."
    assert run_steps(cfg_with("gopher_repetition"), [short]) == [short]


def test_c4_removes_lines_and_citations() -> None:
    cfg = cfg_with("c4", min_num_sentences=1, filter_no_terminal_punct=True)
    text = "A line that ends well.\nA line without an end\nCited fact [1] is here."
    # datatrove cuts the citation and leaves the spaces around it
    assert run_steps(cfg, [text]) == ["A line that ends well.\nCited fact  is here."]


def test_c4_can_empty_a_document_and_length_catches_it() -> None:
    cfg = replace(cfg_with("c4", filter_no_terminal_punct=True), min_chars=5)
    kept, report = clean_texts([GOOD, "no end here\nnor here"], replace(cfg, exact_dedup=False))
    assert kept == [GOOD]
    assert any(s["name"] == "length_after_c4" and s["dropped"] == 1 for s in report["steps"])


@pytest.mark.parametrize(
    ("pii", "text", "expected"),
    [
        (PIIConfig(enabled=True), "Mail jane.doe@example.com or 8.8.8.8.", "Mail <email> or <ip>."),
        (PIIConfig(enabled=True), "Router at 192.168.1.1 stays.", "Router at 192.168.1.1 stays."),
        (PIIConfig(enabled=True, ips=False), "Host 8.8.8.8 stays.", "Host 8.8.8.8 stays."),
        (PIIConfig(enabled=True, emails=False), "a@b.org stays", "a@b.org stays"),
        (PIIConfig(enabled=False), "a@b.org stays", "a@b.org stays"),
    ],
)
def test_pii_masking(pii: PIIConfig, text: str, expected: str) -> None:
    assert run_steps(cfg_with(None, pii=pii), [text]) == [expected]


CJK = "東京は日本の首都です。人口は約千四百万人で、多くの会社や大学があります。" * 2
RUSSIAN = "Москва является столицей России и крупнейшим городом страны по численности населения."


@pytest.mark.parametrize("text", [CJK, RUSSIAN])
def test_non_latin_text_skips_english_rules_unless_asked(text: str) -> None:
    keep = cfg_with("gopher_quality", min_avg_word_length=3.0, min_stop_words=2)
    assert run_steps(keep, [text]) == [text]
    assert run_steps(replace(keep, non_latin="filter"), [text]) == []


# --------------------------------------------------------------- same decisions as datatrove


def _corpus() -> list[str]:
    rng = random.Random(0)
    docs = generate_corpus(1500, 3)
    if SHAKESPEARE.is_file():
        text = SHAKESPEARE.read_text()
        docs += [text[i : i + rng.randint(100, 3000)] for i in range(0, 400_000, 1500)]
    words = ["a", "b", "c", "d", "e", "the", "of", "and", "x", "y", "1", "2", "!", ".", ",", "..."]
    for _ in range(1500):
        k = rng.randint(1, 250)
        vocab = words[: rng.randint(2, len(words))]
        sep = rng.choice([" ", " ", "\n", "\n\n"])
        docs.append(sep.join(rng.choice(vocab) for _ in range(k)))
    return docs


def test_gopher_repetition_decides_like_datatrove() -> None:
    ours, theirs = GopherRepetition(language=TOK), GopherRepetitionFilter(language=TOK)
    docs = [Document(text, str(i)) for i, text in enumerate(_corpus())]
    expected = [theirs.filter(doc) for doc in docs]
    for doc, verdict in zip(docs[:300], expected, strict=False):
        assert ours.filter(doc) == verdict, doc.text[:200]
    for start in range(0, len(docs), 256):  # batches, as the stage runs them
        assert ours.filter_batch(docs[start : start + 256]) == expected[start : start + 256]


def test_batched_filters_keep_datatrove_statistics_and_exclusions(tmp_path: Path) -> None:
    """The batched run counts, drops and hands on exactly what datatrove's own run does."""
    quality = GopherQuality(language=TOK, exclusion_writer=_ListWriter())
    quality.skip_non_latin = False
    ours = {
        "length": LengthFilter(40, 100_000, _ListWriter()),
        "gopher_repetition": GopherRepetition(language=TOK, exclusion_writer=_ListWriter()),
        "gopher_quality": quality,
    }
    theirs = {
        "length": LengthFilter(40, 100_000, _ListWriter()),
        "gopher_repetition": GopherRepetitionFilter(language=TOK, exclusion_writer=_ListWriter()),
        "gopher_quality": GopherQualityFilter(language=TOK, exclusion_writer=_ListWriter()),
    }
    texts = _corpus()[:700]
    for name, reference in theirs.items():
        reference.run = BaseFilter.run.__get__(reference)  # datatrove's loop, not ours
        kept = [d.text for d in ours[name].run(iter(Document(t, "x") for t in texts))]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # datatrove's np.mean([]) on symbol-only texts
            want = [d.text for d in reference.run(iter(Document(t, "x") for t in texts))]
        assert kept == want, name
        got = {k: v.total for k, v in ours[name].stats.stats.items()}
        expected = {k: v.total for k, v in reference.stats.stats.items() if k != "doc_len"}
        assert got == expected, name
        assert got["dropped"] > 0, name
        assert ours[name].exclusion_writer.rows == reference.exclusion_writer.rows, name


class _ListWriter:
    """An exclusion writer that keeps (text, reason) of what it is given."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str | None]] = []

    def __enter__(self) -> _ListWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def write(self, doc: Document, rank: int = 0) -> None:
        self.rows.append((doc.text, doc.metadata.get("filter_reason")))


def test_word_memo_forgets_old_documents(monkeypatch: pytest.MonkeyPatch) -> None:
    tok = FastWordTokenizer()
    monkeypatch.setattr("lmops.data.filters._MEMO_CHARS", 100)
    texts = [f"document {i} has a few words in it" for i in range(10)]
    for text in texts:
        assert tok.words(text) == tok.word_tokenize(text)
    assert tok.words(texts[-1]) is tok.words(texts[-1])  # remembered, not split again
    assert sum(map(len, tok._memo)) <= 100 + len(texts[-1])
    assert texts[0] not in tok._memo


def _reference_top_chars(words: list[str], n: int, min_count: int) -> int | None:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return None
    gram, count = Counter(grams).most_common(1)[0]  # ties: the first seen
    return 0 if count < min_count else (len(" ".join(gram))) * count


def _reference_dup_chars(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    total, i = 0, 0
    while i < len(words) - n + 1:
        gram = tuple(words[i : i + n])
        if gram in seen:
            total += sum(map(len, gram))
            i += n
        else:
            seen.add(gram)
            i += 1
    return total


@pytest.mark.parametrize("vocab_size", [3, 12, 5000])
def test_ngram_statistics_match_a_plain_python_count(vocab_size: int) -> None:
    """One batch of many documents: each gets its own figures, never its neighbours'."""
    rng = random.Random(vocab_size)
    vocab = [f"w{i}" * rng.randint(1, 3) for i in range(vocab_size)]
    docs = []
    for _ in range(150):
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 400))]
        if vocab_size > 100 and words:  # repeats long enough for 10-grams
            start = rng.randrange(len(words))
            words += words[start : start + rng.randint(1, 30)] * rng.randint(1, 3)
        docs.append(words)
    docs += [docs[-1], docs[-1][:7], []]  # a whole document repeated: no n-gram spans two
    stats = NGramStats(docs, 10)
    for n in range(2, 11):
        for min_count in (1, 2):
            expected = [_reference_top_chars(words, n, min_count) for words in docs]
            assert stats.top_chars(n, min_count) == expected, (n, min_count)
        assert stats.dup_chars(n) == [_reference_dup_chars(words, n) for words in docs], n


def test_gopher_quality_decides_like_datatrove() -> None:
    ours, theirs = GopherQuality(language=TOK), GopherQualityFilter(language=TOK)
    ours.skip_non_latin = False
    extra = ["# a # b # c " * 5, "- one\n- two\n- three", "Wait... what...\nyes...", "12 34 " * 9]
    with warnings.catch_warnings():  # datatrove's np.mean([]) warns on symbol-only texts
        warnings.simplefilter("ignore")
        for text in _corpus() + extra:
            doc = Document(text, "x")
            assert ours.filter(doc) == theirs.filter(doc), text[:200]
