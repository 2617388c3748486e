"""Exact and near-duplicate removal on datatrove's dedup stages, plus a similarity check.

datatrove's MinHash dedup is locality-sensitive hashing: two documents become a candidate pair
when all ``rows`` hashes of any one of ``bands`` bands agree, so the similarity at which pairs
are caught is a soft S-curve set by bands and rows, not a number one can ask for. Here the
banding is made generous (high recall) and every candidate pair is then checked: the share of
all ``bands * rows`` MinHash values the two documents have in common estimates their Jaccard
similarity, and only pairs at or above ``clean.minhash.threshold`` are merged into clusters.
That check is the two steps datatrove lacks: :class:`MinhashFullSignatures` (per task, one
array of every document's full signature) and :class:`MinhashVerifyPairs` (per band, drops
candidate pairs below the threshold before datatrove's clustering).

The word shingles use :class:`~lmops.data.filters.FastWordTokenizer` and sha1-based hashes:
datatrove's default xxhash call refuses ``str`` with xxhash >= 4.

The order of work keeps the corpus to two reads: both signature steps run in the filter pass
(:class:`ExactSignature` passes documents on to :class:`MinhashSignature`), then
:class:`MinhashDropExact` takes the exact duplicates out of the MinHash files, and one last
pass applies datatrove's exact and MinHash filters. Several steps are datatrove's own with a
faster body (:class:`MinhashSignature`, :class:`MinhashBuckets`); the tests check they write
the same bytes as datatrove's.
"""

from __future__ import annotations

import re
import struct
import unicodedata
from dataclasses import replace
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import regex
from datatrove.data import Document, DocumentsPipeline
from datatrove.io import DataFolderLike, get_datafolder
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup import (
    ExactDedupConfig,
    ExactDedupFilter,
    ExactDedupSignature,
    ExactFindDedups,
    MinhashDedupBuckets,
    MinhashDedupCluster,
    MinhashDedupFilter,
    MinhashDedupSignature,
)
from datatrove.pipeline.dedup.minhash import MinhashConfig as DatatroveMinhashConfig
from datatrove.utils.batching import batched
from datatrove.utils.hashes.sha1 import sha1_hash64
from datatrove.utils.hashing import HashConfig
from datatrove.utils.text import PUNCTUATION_TRANS, simplify_text
from datatrove.utils.typeshelper import ExtensionHelperSD, StatHints
from datatrove.utils.word_tokenizers import WordTokenizer

from lmops.config import MinhashConfig

__all__ = [
    "MinhashBuckets",
    "ExactSignature",
    "MinhashDropExact",
    "MinhashFullSignatures",
    "MinhashSignature",
    "MinhashVerifyPairs",
    "datatrove_minhash_config",
    "exact_dedup_config",
    "exact_stages",
    "minhash_stages",
    "shingle_words",
]

# sha1 works for str and bytes on every install; 64 bits keep accidental collisions negligible.
HASH = HashConfig(precision=64, hash_fc="sha1")
_PAIR = struct.Struct("<4I")


def document_text(doc: Document) -> str:
    """What exact dedup compares: the normalized text (module level, so workers can unpickle it)."""
    return doc.text


def first_shard_first(doc: Document) -> int:
    """Exact dedup keeps the highest priority, then the lowest position in a shard: with this,
    the first occurrence in input order survives (shards are contiguous)."""
    return max(1, 65535 - int(doc.metadata.get("shard", 0)))


def exact_dedup_config() -> ExactDedupConfig:
    return ExactDedupConfig(
        content_getter=document_text, document_priority=first_shard_first, hash_config=HASH
    )


def datatrove_minhash_config(cfg: MinhashConfig) -> DatatroveMinhashConfig:
    return DatatroveMinhashConfig(
        n_grams=cfg.shingle_size,
        num_buckets=cfg.bands,
        hashes_per_bucket=cfg.rows,
        seed=cfg.seed,
        hash_config=HASH,
    )


class ExactSignature(ExactDedupSignature):
    """datatrove's exact-dedup signature step, passing the documents on to the next step.

    datatrove's step ends its pipeline; this one lets the MinHash signature step follow it, so
    both signatures come from the one pass that reads the text.
    """

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        signatures: list[Any] = []
        for doc_idx, doc in enumerate(data):
            signatures.extend(self.get_hashes(doc, doc_idx))
            yield doc
        self.stat_update(StatHints.total, value=len(signatures))
        self.save_hashes(rank, signatures)


_MARKS = regex.compile(r"\p{Mn}+")
# Fixed odd multipliers: shingle hash = sum of (word hash * multiplier of its position), mixed.
_POSITION = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
     0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9,
     0x8CB92BA72F3D8DD7, 0xA24BAED4963EE407, 0x9FB21C651E98DF25, 0xE7037ED1A0B428DB,
     0x8EBC6AF09C88C6E3, 0x589965CC75374CC3, 0x1D8E4E27C47D124F, 0xDB4F0B9175AE2165],
    dtype=np.uint64,
)  # fmt: skip
_SIGNATURE_ROWS = 2048  # shingles hashed at once: 2048 x bands*rows x 8 bytes stay in cache


def simplify_for_shingles(text: str, norm: Any) -> str:
    """datatrove's ``simplify_text``, with its per-character diacritics loop as one regex.

    Same output (lower case, digits to 0, punctuation to spaces, whitespace runs to one space,
    diacritics removed); ASCII text skips the unicode step, which cannot change it.
    """
    if not norm.norm_unicode_diacritics:
        return simplify_text(text, norm)
    plain = simplify_text(text, replace(norm, norm_unicode_diacritics=False))
    if plain.isascii():
        return plain
    return _MARKS.sub("", unicodedata.normalize("NFD", plain)).strip()


# datatrove's punctuation-to-space table for the 128 ASCII characters, as a bytes table:
# bytes.translate runs in C at memory speed, str.translate with a dict calls per character.
_ASCII_PUNCTUATION = bytes(range(128)).decode("ascii").translate(PUNCTUATION_TRANS).encode(
    "ascii"
) + bytes(range(128, 256))
assert len(_ASCII_PUNCTUATION) == 256, "datatrove's table deletes characters: see shingle_words"
# datatrove's NUMBERS_PATTERN restricted to ASCII: \p{Nd} is 0-9, the only ASCII separators . and ,
_ASCII_NUMBERS = re.compile(r"[0-9]+(?:[.,][0-9]+)?")


def _ascii_fast_path(norm: Any) -> bool:
    """Whether :func:`shingle_words`' ASCII path reproduces ``simplify_text`` for ``norm``."""
    return (
        norm.lowercase
        and norm.remove_punctuation
        and norm.norm_whitespace
        and not norm.norm_weekdays
        and not norm.norm_monthnames
    )


def shingle_words(text: str, norm: Any, tokenizer: WordTokenizer) -> list[str]:
    """The words MinHash shingles are made of: ``simplify_text`` of ``text``, split into words.

    ASCII text (most of an English corpus) takes a path with the same result in a fraction of
    the time: lower case, ASCII digit runs to 0, punctuation to spaces through a bytes table,
    then ``str.split`` (every ASCII character is then a letter, a digit or a space, so the
    word tokenizer would split at the spaces too). ``tests/unit/test_dedup.py`` checks both
    paths agree with datatrove.
    """
    if text.isascii() and _ascii_fast_path(norm):
        plain = text.lower()
        if norm.norm_numbers:
            plain = _ASCII_NUMBERS.sub("0", plain)
        return plain.encode("ascii").translate(_ASCII_PUNCTUATION).decode("ascii").split()
    plain = simplify_for_shingles(text, norm)
    if plain.isascii() and plain.replace(" ", "").isalnum():
        return plain.split()  # letters and digits between single spaces: the same words
    return tokenizer.word_tokenize(plain)


class MinhashSignature(MinhashDedupSignature):
    """datatrove's MinHash signature step with faster shingles and permutations.

    datatrove hashes every n-word shingle string with sha1. Here each distinct word is hashed
    once (sha1, 64 bits) and a shingle's hash combines its words' hashes with a fixed
    multiplier per position, then mixes the bits: the same shingle always gets the same
    value, different shingles collide with probability about 2**-64. Signatures differ from
    datatrove's own, so do not mix them with a datatrove-built MinHash index.
    """

    docs_per_batch = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._word_hashes: dict[str, int] = {}

    @property
    def parameters(self) -> tuple[np.ndarray, np.ndarray]:
        """Odd multipliers ``a`` and offsets ``b`` of the multiply-shift hash family, from the seed.

        ``(a * x + b) mod 2**64``, top 32 bits: a hash per MinHash permutation that costs one
        wrapping multiply and add, where datatrove's ``(a * x + b) mod (2**61 - 1)`` needs a
        slow 64-bit modulo (2.5x the signature time here).
        """
        if self._parameters is None:
            gen = np.random.default_rng(self.config.seed)
            size = (1, self.num_hashes)
            a = gen.integers(0, 2**64, size=size, dtype=np.uint64, endpoint=False)
            b = gen.integers(0, 2**64, size=size, dtype=np.uint64, endpoint=False)
            self._parameters = (a | np.uint64(1), b)
        return self._parameters

    def get_signature(self, shingles: np.ndarray) -> list[list[int]]:
        """Per permutation, the lowest 32-bit multiply-shift hash over the shingles."""
        lowest, _ = self._lowest(shingles.ravel(), np.array([shingles.size]))
        return lowest.reshape(self.config.num_buckets, self.config.hashes_per_bucket).tolist()

    def get_shingles(self, text: str) -> np.ndarray:
        return self.shingle_hashes([text])[0].reshape((-1, 1))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> None:
        """datatrove's signature step, a batch of documents at a time, each band written once.

        datatrove hashes, packs and writes every band of every document separately, then reads
        each file back to sort it; here a batch's shingles go through numpy together, the
        signatures of the task's documents are kept (``bands * rows`` numbers a document) and
        each band is sorted and written once. The files are the same bytes datatrove writes,
        so its bucket step reads them.
        """
        with self.track_time():
            if self.check_can_skip_sig_writing(rank)[0]:
                return  # an interrupted run wrote them already
            rows: list[np.ndarray] = []
            positions: list[np.ndarray] = []
            total = 0
            for batch in batched(data, self.docs_per_batch):
                hashes, counts = self.shingle_hashes([doc.text for doc in batch])
                lowest, kept = self._lowest(hashes, counts)
                rows.append(lowest)
                positions.append(kept + total)
                total += len(batch)
            self.stat_update(StatHints.total, value=total)
            self._write_bands(rank, rows, positions)

    def _lowest(self, hashes: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signatures (one row per document with shingles) and the indexes of those documents.

        Per permutation ``(a * x + b) mod 2**64``, the minimum over a document's shingles, top
        32 bits (the well-mixed ones of a multiply-shift hash; a right shift keeps order, so
        the minimum is taken on the full values). Rows are hashed ``_SIGNATURE_ROWS`` at a
        time, so memory stays bounded whatever a document's length.
        """
        a, b = self.parameters
        kept = np.flatnonzero(counts)
        lowest = np.full((len(kept), self.num_hashes), np.iinfo(np.uint64).max, dtype=np.uint64)
        owner = np.repeat(np.arange(len(kept)), counts[kept])  # row of each shingle
        for lo in range(0, len(hashes), _SIGNATURE_ROWS):
            part = hashes[lo : lo + _SIGNATURE_ROWS, None] * a
            part += b
            doc = owner[lo : lo + _SIGNATURE_ROWS]
            starts = np.flatnonzero(np.diff(doc, prepend=-1))
            docs = doc[starts]
            lowest[docs] = np.minimum(lowest[docs], np.minimum.reduceat(part, starts, axis=0))
        return (lowest >> np.uint64(32)).astype(self.config.hash_config.np_dtype), kept

    def _write_bands(self, rank: int, rows: list[np.ndarray], positions: list[np.ndarray]) -> None:
        r = self.config.hashes_per_bucket
        dtype = _record_dtype(self.config)
        signatures = np.concatenate(rows) if rows else np.empty((0, self.num_hashes))
        docs = np.concatenate(positions) if positions else np.empty(0, dtype=np.int64)
        for band in range(self.config.num_buckets):
            columns = [signatures[:, band * r + i] for i in range(r)]
            order = np.lexsort([docs, *columns[::-1]])  # by the hashes, then the document
            records = np.empty(len(docs), dtype=dtype)
            for i, column in enumerate(columns):
                records[f"h{i}"] = column[order]
            records["doc"] = docs[order]
            with self.output_folder.open(f"bucket_{band:03d}/{rank:05d}.minhash.sig", "wb") as f:
                f.write(records.tobytes())

    def shingle_hashes(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The shingle hashes of all ``texts`` in one array, and how many each text has.

        A text with fewer words than a shingle has none. The word hashes of the whole batch
        are combined in a few numpy operations, then the windows that cross from one text
        into the next are left out.
        """
        n = self.config.n_grams
        if n > len(_POSITION):
            parts = [super(MinhashSignature, self).get_shingles(t).ravel() for t in texts]
            counts = np.array([len(p) for p in parts], dtype=np.int64)
            return (np.concatenate(parts) if parts else np.empty(0, np.uint64)), counts
        norm, tok = self.config.norm_config, self.word_tokenizer
        word_lists = [shingle_words(t, norm, tok) for t in texts]
        lengths = np.fromiter(map(len, word_lists), np.int64, len(word_lists))
        counts = np.maximum(lengths - (n - 1), 0)
        if not counts.any():
            return np.empty(0, dtype=np.uint64), counts
        words = list(chain.from_iterable(word_lists))
        cache = self._word_hashes
        if len(cache) > 1_000_000:  # bounded: a few hundred MB at most, then start over
            cache.clear()
        known = list(map(cache.get, words))  # one C-level pass; most words were seen before
        if None in known:
            for i, value in enumerate(known):
                if value is None:
                    known[i] = cache.setdefault(words[i], sha1_hash64(words[i]))
        word_hashes = np.array(known, dtype=np.uint64)
        m = len(words) - n + 1
        h = word_hashes[:m] * _POSITION[0]
        for j in range(1, n):
            h += word_hashes[j : j + m] * _POSITION[j]
        # the windows that start in a text and end in it: text d's first word, then counts[d]
        starts = np.cumsum(lengths) - lengths
        before = np.cumsum(counts) - counts
        h = h[np.arange(int(counts.sum())) + np.repeat(starts - before, counts)]
        h ^= h >> np.uint64(31)  # splitmix-style finalizer: spread the bits
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
        return h, counts


def _record_dtype(mh: DatatroveMinhashConfig) -> np.dtype:
    """One row of a datatrove bucket signature file: ``rows`` hashes, then the document index."""
    hash_type = f"<{mh.hash_config.struct_format}"
    return np.dtype([(f"h{i}", hash_type) for i in range(mh.hashes_per_bucket)] + [("doc", "<u4")])


class MinhashDropExact(PipelineStep):
    """Remove exact duplicates from one task's MinHash signature files, renumbering the rest.

    Why: the signatures are computed in the filter pass, before exact duplicates are known, so
    that no pass has to read and rewrite the whole corpus just to compute them. datatrove's
    filters number documents by their position in the stream they see; in the final pass the
    MinHash filter sees the stream *after* the exact-dedup filter, so its document numbers must
    skip the exact duplicates. Reads ``signatures_folder``, writes the same files to
    ``output_folder`` (a new folder, so a rerun after a kill starts from intact inputs). Without
    ``duplicates_folder`` (exact dedup off) the records are copied as they are.
    """

    type = "🫂 - DEDUP"
    name = "🎯 MinHash drop exact duplicates"

    def __init__(
        self,
        signatures_folder: DataFolderLike,
        output_folder: DataFolderLike,
        config: Any,
        duplicates_folder: DataFolderLike | None = None,
    ) -> None:
        super().__init__()
        self.signatures_folder = get_datafolder(signatures_folder)
        self.output_folder = get_datafolder(output_folder)
        self.duplicates_folder = get_datafolder(duplicates_folder) if duplicates_folder else None
        self.config = config

    def _dropped(self, rank: int) -> np.ndarray:
        """Sorted positions (in the filter pass's stream) of this task's exact duplicates."""
        if self.duplicates_folder is None:
            return np.empty(0, dtype=np.int64)
        name = f"{rank:05d}{ExtensionHelperSD.stage_2_duplicates}"
        parts = [np.empty(0, dtype="<u4")]
        for folder in self.duplicates_folder.list_files(include_directories=True, recursive=False):
            path = f"{folder}/{name}"
            if self.duplicates_folder.exists(path):
                with self.duplicates_folder.open(path, "rb") as f:
                    parts.append(np.frombuffer(f.read(), dtype="<u4"))
        return np.unique(np.concatenate(parts)).astype(np.int64)

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        dtype = _record_dtype(self.config)
        dropped = self._dropped(rank)
        for b in range(self.config.num_buckets):
            path = f"bucket_{b:03d}/{rank:05d}.minhash.sig"
            with self.signatures_folder.open(path, "rb") as f:
                records = np.frombuffer(f.read(), dtype=dtype)
            if len(dropped):
                docs = records["doc"].astype(np.int64)
                records = records[~np.isin(docs, dropped)].copy()
                # a document's new number: its old one minus the duplicates before it; the
                # order within the file (sorted by hashes, then number) does not change
                records["doc"] -= np.searchsorted(dropped, records["doc"]).astype(np.uint32)
            with self.output_folder.open(path, "wb") as out:
                out.write(records.tobytes())
        self.stat_update("exact_duplicates_dropped", value=len(dropped))


class MinhashFullSignatures(PipelineStep):
    """After datatrove's signature step, gather each document's hashes from all bands.

    Writes ``{rank:05d}.npy``: row ``i`` holds document ``i``'s ``bands * rows`` MinHash values
    (zeros for documents too short for one shingle; those are never in a candidate pair).
    """

    type = "🫂 - DEDUP"
    name = "🎯 MinHash full signatures"

    def __init__(
        self, signatures_folder: DataFolderLike, output_folder: DataFolderLike, config: Any
    ) -> None:
        super().__init__()
        self.signatures_folder = get_datafolder(signatures_folder)
        self.output_folder = get_datafolder(output_folder)
        self.config = config

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        mh = self.config
        dtype = _record_dtype(mh)
        parts = []
        for b in range(mh.num_buckets):
            with self.signatures_folder.open(f"bucket_{b:03d}/{rank:05d}.minhash.sig", "rb") as f:
                parts.append(np.frombuffer(f.read(), dtype=dtype))
        n_docs = max((int(p["doc"].max()) + 1 for p in parts if len(p)), default=0)
        full = np.zeros((n_docs, mh.num_buckets * mh.hashes_per_bucket), dtype=np.uint64)
        r = mh.hashes_per_bucket
        for b, p in enumerate(parts):
            if len(p):
                hashes = np.stack([p[f"h{i}"] for i in range(r)], axis=1)
                full[p["doc"].astype(np.int64), b * r : (b + 1) * r] = hashes
        self.stat_update("documents", value=n_docs)
        with self.output_folder.open(f"{rank:05d}.npy", "wb") as f:
            np.save(f, full)


class MinhashBuckets(MinhashDedupBuckets):
    """datatrove's bucket step (candidate pairs of one band) with numpy instead of a heap.

    datatrove merges the band's signature files with ``heapq``, one Python object per record;
    here the records are concatenated and sorted once (by the band's hashes, then file, then
    document: the heap's order) and every record whose hashes equal the previous record's
    makes the pair ``(previous file, previous doc, file, doc)``, as datatrove writes it. Used
    for the plain case (one task per band, no index); anything else goes to datatrove's code.
    ``tests/unit/test_dedup.py`` checks the output bytes against datatrove's.
    """

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        if self.index_folder is not None or world_size != self.config.num_buckets:
            return super().run(data, rank, world_size)
        with self.track_time():
            dtype = _record_dtype(self.config)
            names = self.input_folder.list_files(subdirectory=f"bucket_{rank:03d}")
            parts, files = [], []
            for name in names:
                with self.input_folder.open(name, "rb") as f:
                    records = np.frombuffer(f.read(), dtype=dtype)
                parts.append(records)
                stem = int(Path(name).name.removesuffix(".minhash.sig"))
                files.append(np.full(len(records), stem, dtype=np.uint32))
            records = np.concatenate(parts) if parts else np.empty(0, dtype=dtype)
            file_ids = np.concatenate(files) if files else np.empty(0, dtype=np.uint32)
            r = self.config.hashes_per_bucket
            hashes = [records[f"h{i}"] for i in range(r)]
            order = np.lexsort([records["doc"], file_ids, *reversed(hashes)])
            same = np.ones(max(0, len(order) - 1), dtype=bool)
            for h in hashes:
                ordered = h[order]
                same &= ordered[1:] == ordered[:-1]
            later = order[1:][same]
            earlier = order[:-1][same]
            pairs = np.stack(
                [
                    file_ids[earlier],
                    records["doc"][earlier],
                    file_ids[later],
                    records["doc"][later],
                ],
                axis=1,
            ).astype("<u4")
            with self.output_folder.open(f"{rank:05d}_00.dups", mode="wb") as out:
                out.write(pairs.tobytes())
            self.stat_update("total_matches", value=len(pairs))


class MinhashVerifyPairs(PipelineStep):
    """Keep the candidate pairs of one band whose estimated Jaccard similarity is >= threshold.

    Runs one task per band on datatrove's ``.dups`` files (``(file, doc, file, doc)`` records)
    and writes the kept records under the same names for datatrove's cluster step.
    """

    type = "🫂 - DEDUP"
    name = "🎯 MinHash verify pairs"

    def __init__(
        self,
        pairs_folder: DataFolderLike,
        full_signatures_folder: DataFolderLike,
        output_folder: DataFolderLike,
        threshold: float,
        chunk_pairs: int = 65536,
    ) -> None:
        super().__init__()
        self.pairs_folder = get_datafolder(pairs_folder)
        self.full_folder = get_datafolder(full_signatures_folder)
        self.output_folder = get_datafolder(output_folder)
        self.threshold = threshold
        self.chunk_pairs = chunk_pairs

    def _signatures(self, cache: dict[int, np.ndarray], file_id: int) -> np.ndarray:
        if file_id not in cache:
            path = self.full_folder.resolve_paths(f"{file_id:05d}.npy")
            cache[file_id] = np.load(path, mmap_mode="r")
        return cache[file_id]

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> None:
        cache: dict[int, np.ndarray] = {}
        for name in self.pairs_folder.list_files(glob_pattern=f"{rank:05d}_*.dups"):
            with self.pairs_folder.open(name, "rb") as f:
                pairs = np.frombuffer(f.read(), dtype="<u4").reshape(-1, 4)
            with self.output_folder.open(name, "wb") as out:
                for start in range(0, len(pairs), self.chunk_pairs):
                    chunk = pairs[start : start + self.chunk_pairs]
                    keep = self._similar(chunk, cache)
                    self.stat_update("candidate_pairs", value=len(chunk))
                    self.stat_update("verified_pairs", value=int(keep.sum()))
                    out.write(np.ascontiguousarray(chunk[keep]).tobytes())

    def _similar(self, pairs: np.ndarray, cache: dict[int, np.ndarray]) -> np.ndarray:
        if self.threshold <= 0:
            return np.ones(len(pairs), dtype=bool)
        keep = np.zeros(len(pairs), dtype=bool)
        files = np.unique(pairs[:, [0, 2]], axis=0)
        for fa, fb in files.tolist():
            rows = np.flatnonzero((pairs[:, 0] == fa) & (pairs[:, 2] == fb))
            a = self._signatures(cache, fa)[pairs[rows, 1].astype(np.int64)]
            b = self._signatures(cache, fb)[pairs[rows, 3].astype(np.int64)]
            keep[rows] = (a == b).mean(axis=1) >= self.threshold
        return keep


# ------------------------------------------------------------------------- stage builders


def exact_stages(work: str) -> dict[str, Any]:
    """The three exact-dedup steps: signature (per shard), find (one task), filter."""
    cfg = exact_dedup_config()
    return {
        "signature": ExactSignature(
            output_folder=f"{work}/exact/signatures", config=cfg, finder_workers=1
        ),
        "find": ExactFindDedups(
            data_folder=f"{work}/exact/signatures",
            output_folder=f"{work}/exact/duplicates",
            config=cfg,
        ),
        "filter": lambda exclusion_writer: ExactDedupFilter(
            data_folder=f"{work}/exact/duplicates", config=cfg, exclusion_writer=exclusion_writer
        ),
    }


def minhash_stages(
    work: str, cfg: MinhashConfig, tokenizer: WordTokenizer, *, exact_dedup: bool = False
) -> dict[str, Any]:
    """The MinHash steps: signature (per shard, in the filter pass), index (per shard: drop the
    exact duplicates when ``exact_dedup``, gather full signatures), buckets and verification
    (per band), cluster (one task), filter (per shard, after the exact-dedup filter)."""
    mh = datatrove_minhash_config(cfg)
    return {
        "signature": MinhashSignature(
            output_folder=f"{work}/minhash/signatures", config=mh, language=tokenizer
        ),
        "index": [
            MinhashDropExact(
                signatures_folder=f"{work}/minhash/signatures",
                output_folder=f"{work}/minhash/unique",
                config=mh,
                duplicates_folder=f"{work}/exact/duplicates" if exact_dedup else None,
            ),
            MinhashFullSignatures(
                signatures_folder=f"{work}/minhash/unique",
                output_folder=f"{work}/minhash/full",
                config=mh,
            ),
        ],
        "buckets": MinhashBuckets(
            input_folder=f"{work}/minhash/unique",
            output_folder=f"{work}/minhash/candidates",
            config=mh,
        ),
        "verify": MinhashVerifyPairs(
            pairs_folder=f"{work}/minhash/candidates",
            full_signatures_folder=f"{work}/minhash/full",
            output_folder=f"{work}/minhash/pairs",
            threshold=cfg.threshold,
        ),
        "cluster": MinhashDedupCluster(
            input_folder=f"{work}/minhash/pairs",
            output_folder=f"{work}/minhash/remove",
            config=mh,
            save_cluster_id=True,
        ),
        "filter": lambda exclusion_writer: MinhashDedupFilter(
            input_folder=f"{work}/minhash/remove",
            exclusion_writer=exclusion_writer,
            load_cluster_ids=True,
        ),
    }
