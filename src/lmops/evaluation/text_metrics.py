"""Generation metrics (BLEU, ROUGE, exact match) of generated texts against reference texts.

All scores are floats on a 0–1 scale (not the 0–100 of some papers), so they sit next to accuracy
and F1 in the same report. Several references per prediction are used as they are meant to be:
BLEU clips n-gram counts against all of them, ROUGE keeps the best-matching one, and exact match
counts a prediction that equals any of them.

torchmetrics is imported inside :func:`generation_metrics`: it imports transformers when that is
installed (about a second), which code that only imports this module should not pay for.
"""

from __future__ import annotations

from collections.abc import Sequence

from lmops.config import LmopsError

# rougeLsum is left out on purpose: it splits sentences with nltk, which downloads `punkt_tab`
# at run time and so fails offline.
ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


def normalize_whitespace(text: str) -> str:
    """``text`` with leading/trailing whitespace removed and inner runs of it made one space."""
    return " ".join(text.split())


def exact_match(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Fraction of predictions equal to at least one of their references after
    :func:`normalize_whitespace` (case and punctuation still count)."""
    hits = sum(
        normalize_whitespace(pred) in {normalize_whitespace(ref) for ref in refs}
        for pred, refs in zip(predictions, references, strict=True)
    )
    return hits / len(predictions)


def _check_pairs(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> None:
    if len(predictions) != len(references):
        raise LmopsError(
            f"generation metrics need one list of references per prediction: got "
            f"{len(predictions)} predictions and {len(references)} reference lists"
        )
    if not predictions:
        raise LmopsError("generation metrics need at least one prediction, got none")
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise LmopsError(
                f"references[{i}] is a string; each prediction needs a list of reference strings"
            )
        if not any(ref.strip() for ref in refs):
            raise LmopsError(f"prediction {i} has no reference (empty or blank reference list)")


def generation_metrics(predictions: list[str], references: list[list[str]]) -> dict[str, float]:
    """Corpus BLEU-4, ROUGE-1/2/L F1 and exact match of ``predictions`` against ``references``.

    ``references[i]`` is the list of acceptable answers for ``predictions[i]``. Returns floats in
    [0, 1] under the keys:

    - ``bleu``: corpus BLEU-4 (whitespace tokens, uniform weights, brevity penalty, no
      smoothing: 0 when no 4-gram of the whole corpus matches);
    - ``rouge1``, ``rouge2``, ``rougeL``: F1 per prediction against its best reference, averaged
      over predictions (lower-cased alphanumeric tokens, no stemming);
    - ``exact_match``: see :func:`exact_match`.

    Raises :class:`LmopsError` when the two lists differ in length, are empty, or a prediction has
    no non-blank reference.
    """
    _check_pairs(predictions, references)
    from torchmetrics.text import BLEUScore, ROUGEScore

    bleu = BLEUScore(n_gram=4)(predictions, references)
    rouge = ROUGEScore(rouge_keys=ROUGE_KEYS, accumulate="best")(predictions, references)
    scores = {"bleu": float(bleu)}
    scores.update({key: float(rouge[f"{key}_fmeasure"]) for key in ROUGE_KEYS})
    scores["exact_match"] = exact_match(predictions, references)
    return scores
