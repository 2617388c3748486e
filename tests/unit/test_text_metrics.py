"""Generation metrics agree with hand-computed values and an independent corpus BLEU-4, and run
without nltk or a network."""

from __future__ import annotations

import math
import socket
import subprocess
import sys
from collections import Counter

import pytest

from lmops.config import LmopsError
from lmops.evaluation.text_metrics import exact_match, generation_metrics

KEYS = {"bleu", "rouge1", "rouge2", "rougeL", "exact_match"}


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def corpus_bleu4(predictions: list[str], references: list[list[str]]) -> float:
    """Papineni et al.'s corpus BLEU-4 in plain Python: n-gram counts clipped by the most any one
    reference holds, summed over the corpus; the reference length closest to each prediction's;
    brevity penalty exp(1 - r/c) when c <= r."""
    matched, total = [0] * 4, [0] * 4
    c = r = 0
    for pred, refs in zip(predictions, references, strict=True):
        p, rs = pred.split(), [ref.split() for ref in refs]
        c += len(p)
        r += min((abs(len(x) - len(p)), len(x)) for x in rs)[1]
        for n in range(1, 5):
            max_ref: Counter = Counter()
            for x in rs:
                max_ref |= ngrams(x, n)
            counts = ngrams(p, n)
            matched[n - 1] += sum(min(k, max_ref[g]) for g, k in counts.items())
            total[n - 1] += sum(counts.values())
    if min(matched) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matched, total, strict=True)) / 4
    return math.exp(min(0.0, 1 - r / c) + log_precision)


def test_identical_texts_score_one() -> None:
    texts = ["the quick brown fox jumps over the lazy dog", "a b c d e"]
    scores = generation_metrics(texts, [[t] for t in texts])
    assert set(scores) == KEYS
    assert all(isinstance(v, float) for v in scores.values())
    assert scores == pytest.approx(dict.fromkeys(KEYS, 1.0))


def test_one_prediction_two_references_by_hand() -> None:
    refs = ["the cat sat on a mat", "there is a cat on the mat now"]
    scores = generation_metrics(["the cat sat on the mat"], [refs])
    # BLEU: the closest reference length, 6, is the prediction's: no brevity penalty. Clipped
    # n-gram precisions: 5/6 ("the" twice, at most once in any one reference), 5/5, 3/4, 1/3
    assert scores["bleu"] == pytest.approx((5 / 6 * 5 / 5 * 3 / 4 * 1 / 3) ** 0.25)
    # ROUGE: best reference per key; the first: 5 of 6 unigrams, 3 of 5 bigrams, LCS 5 of 6
    assert scores["rouge1"] == pytest.approx(5 / 6)
    assert scores["rouge2"] == pytest.approx(3 / 5)
    assert scores["rougeL"] == pytest.approx(5 / 6)
    assert scores["exact_match"] == 0.0


def test_corpus_bleu_with_brevity_penalty_matches_plain_python() -> None:
    predictions = ["the cat is on the mat", "a quick brown dog runs over the fence today"]
    references = [
        ["the cat is sitting on the mat", "there is a cat on the mat right now"],
        ["the quick brown dog runs over a fence", "a fast brown dog jumps the fence today ok"],
    ]
    expected = corpus_bleu4(predictions, references)
    # meant to be shorter than its closest references (c = 6 + 9 < r = 7 + 9: a brevity
    # penalty) and to match some 4-grams (the second prediction), so BLEU is neither 0 nor 1
    assert sum(len(p.split()) for p in predictions) == 15
    assert 0.0 < expected < 1.0
    assert generation_metrics(predictions, references)["bleu"] == pytest.approx(expected, rel=1e-5)


def test_no_matching_four_gram_gives_zero_bleu() -> None:
    scores = generation_metrics(["the cat sat"], [["the cat sat down"]])
    assert scores["bleu"] == 0.0
    assert scores["rouge1"] == pytest.approx(2 * 1 * 3 / 4 / (1 + 3 / 4))


def test_exact_match_normalizes_whitespace_against_any_reference() -> None:
    predictions = ["  the cat\n sat\t", "The cat sat", "dog"]
    references = [["a dog", "the  cat sat"], ["the cat sat"], ["dog "]]
    # whitespace does not count, case does
    assert exact_match(predictions, references) == pytest.approx(2 / 3)
    assert generation_metrics(predictions, references)["exact_match"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("predictions", "references", "message"),
    [
        (["a", "b"], [["a"]], "2 predictions and 1 reference lists"),
        ([], [], "at least one prediction"),
        (["a", "b"], [["a"], []], "prediction 1 has no reference"),
        (["a"], [["  "]], "prediction 0 has no reference"),
        (["a"], ["a"], r"references\[0\] is a string"),
    ],
)
def test_bad_inputs_are_refused(predictions, references, message) -> None:
    with pytest.raises(LmopsError, match=message):
        generation_metrics(predictions, references)


def test_runs_without_nltk_or_network(monkeypatch) -> None:
    """rougeLsum would import nltk and download punkt_tab: nothing on our path may do either."""

    def no_network(*args, **kwargs):
        raise AssertionError("generation_metrics tried to open a network connection")

    monkeypatch.setitem(sys.modules, "nltk", None)  # any `import nltk` now raises ImportError
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    scores = generation_metrics(["one two three four five"], [["one two three four five six"]])
    assert scores["rougeL"] == pytest.approx(2 * 1 * 5 / 6 / (1 + 5 / 6))


def test_importing_the_module_does_not_import_torchmetrics() -> None:
    code = (
        "import sys, lmops.evaluation.text_metrics\n"
        "assert 'torchmetrics' not in sys.modules, 'torchmetrics imported at module level'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported at module level'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
