"""Exact word n-gram statistics for a batch of documents, for the Gopher repetition rules.

Why a batch: datatrove's rules count n-grams with a Python ``Counter`` per document, and a
numpy version per document spends most of its time in per-call overhead (a few hundred words
a document). Here the words of a whole batch go through one integer sort per n, with the
document in every key so n-grams of different documents never meet.

How: each n-gram gets a dense code from the (n-1)-gram code at the same position and the id
of the next word. An n-gram that repeats within its document starts with an (n-1)-gram that
repeats, so only positions whose (n-1)-gram repeated are carried to n: the arrays shrink fast
and stop once nothing repeats.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from itertools import chain

import numpy as np

__all__ = ["NGramStats"]


class NGramStats:
    """Repeated n-grams (n = 2 .. ``max_n``) of each word list in ``docs``.

    :meth:`top_chars` and :meth:`dup_chars` give, per document, the figures datatrove's
    ``find_top_duplicate(get_n_grams(words, n))`` and ``find_all_duplicate(words, n)`` give.
    """

    def __init__(self, docs: Sequence[list[str]], max_n: int) -> None:
        n_docs = len(docs)
        self.lengths = np.fromiter(map(len, docs), np.int64, n_docs)
        self.starts = np.zeros(n_docs + 1, dtype=np.int64)
        np.cumsum(self.lengths, out=self.starts[1:])
        words = list(chain.from_iterable(docs))
        total = len(words)
        # A word's id: the position of its first occurrence in the batch (ids < total).
        first_seen: dict[str, int] = {}
        ids = np.fromiter(map(first_seen.setdefault, words, range(total)), np.int64, total)
        self.cum = np.zeros(total + 1, dtype=np.int64)  # characters before each word
        np.cumsum(np.fromiter(map(len, words), np.int64, total), out=self.cum[1:])
        self.doc = np.repeat(np.arange(n_docs, dtype=np.int64), self.lengths)
        end = self.starts[1:][self.doc]  # one past each position's document
        base = max(total, 1)
        # (position, code) of every n-gram that repeats, (first position, count) of each code
        self._levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = {}
        _, codes, counts = np.unique(self.doc * base + ids, return_inverse=True, return_counts=True)
        codes = codes.ravel()
        repeats = counts[codes] > 1
        pos, codes = np.flatnonzero(repeats), codes[repeats]
        for n in range(2, max_n + 1):
            fits = pos + (n - 1) < end[pos]
            cand = pos[fits]
            if not len(cand):
                break
            keys = codes[fits] * base + ids[cand + (n - 1)]  # codes < total, ids < total
            _, first, codes, counts = np.unique(
                keys, return_index=True, return_inverse=True, return_counts=True
            )
            codes = codes.ravel()
            repeated = counts > 1
            repeats = repeated[codes]
            pos, codes = cand[repeats], codes[repeats]
            if not len(pos):
                break
            self._levels[n] = (pos, codes, cand[first[repeated]], counts[repeated])

    def _chars(self, pos: np.ndarray, n: int) -> np.ndarray:
        """Characters of the n-grams at ``pos`` joined with spaces, as datatrove joins them."""
        return self.cum[pos + n] - self.cum[pos] + (n - 1)

    def top_chars(self, n: int, min_count: int = 1) -> list[int | None]:
        """Per document: characters of its most frequent n-gram times its count.

        ``Counter.most_common(1)`` returns the first-inserted of the most frequent n-grams: the
        one whose first occurrence comes first. None for a document shorter than n words; 0
        when the top count is below ``min_count``.
        """
        fits = self.lengths >= n
        start = np.where(fits, self.starts[:-1], 0)
        if min_count <= 1:  # no repeat: the top is the first n-gram, once
            out = np.where(fits, self.cum[np.minimum(start + n, len(self.cum) - 1)], 0)
            out = out - self.cum[start] + (n - 1)
        else:
            out = np.zeros(len(self.lengths), dtype=np.int64)
        out[~fits] = -1
        if n in self._levels:
            _, _, first, counts = self._levels[n]
            doc = self.doc[first]
            order = np.lexsort((first, -counts, doc))  # per document: highest count, earliest
            doc = doc[order]
            head = np.ones(len(doc), dtype=bool)
            head[1:] = doc[1:] != doc[:-1]
            top, count = first[order][head], counts[order][head]
            out[doc[head]] = np.where(count >= min_count, self._chars(top, n) * count, 0)
        return [None if v < 0 else v for v in out.tolist()]

    def dup_chars(self, n: int) -> list[int]:
        """Per document: characters (without separators) in repeated n-grams, datatrove's way.

        datatrove walks the words once, remembering each n-gram it visits; a repeat adds its
        characters and jumps n words ahead (the n-grams it jumps over are never remembered).
        Only positions whose n-gram occurs more than once are walked here. Codes never cross
        documents, and a jump never leaves its document, so one walk serves the whole batch.
        """
        totals = [0] * len(self.lengths)
        if n not in self._levels:
            return totals
        pos, codes = self._levels[n][:2]
        positions = pos.tolist()
        code_list = codes.tolist()
        chars = (self.cum[pos + n] - self.cum[pos]).tolist()
        docs = self.doc[pos].tolist()
        where: dict[int, list[int]] = {}
        for p, c in zip(positions, code_list, strict=True):
            where.setdefault(c, []).append(p)
        dups: list[int] = []
        skip_until = 0
        for p, c, size, d in zip(positions, code_list, chars, docs, strict=True):
            if p < skip_until:
                continue  # jumped over after an earlier repeat
            for j in where[c]:
                if j >= p:
                    break
                k = bisect_left(dups, j)
                if k == 0 or j >= dups[k - 1] + n:  # j was visited, so its n-gram was remembered
                    totals[d] += size
                    dups.append(p)
                    skip_until = p + n
                    break
        return totals
