"""Synthetic benchmark corpora built from ../shared/data (tinyshakespeare + SST-2 sentences).

Each document recombines a few Shakespeare paragraphs and SST-2 sentences picked at random
(seeded), so almost every document is distinct while the text stays real English. Known exact
and near duplicates can be injected, so dedup recall and false removals can be counted.
Everything is written to a temporary folder given by the caller, never into the repo.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def pieces() -> tuple[list[str], list[str]]:
    """Shakespeare paragraphs and SST-2 sentences."""
    text = (SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 40]
    sentences = []
    with open(SHARED / "sst2" / "train.tsv", encoding="utf-8") as fh:
        next(fh)
        for line in fh:
            s = line.rstrip("\r\n").split("\t")[-1].strip()  # columns: label, sentence
            if len(s.split()) >= 6:
                sentences.append(s[0].upper() + s[1:] + ".")
    return paragraphs, sentences


def make_document(rng: random.Random, paragraphs: list[str], sentences: list[str]) -> str:
    parts = rng.sample(paragraphs, rng.randint(1, 3))
    review = " ".join(rng.sample(sentences, rng.randint(4, 10)))
    parts.insert(rng.randint(0, len(parts)), review)
    return "\n\n".join(parts)


def near_copy(rng: random.Random, text: str) -> str:
    """A light edit: ~2 % of words replaced, a line appended, some case changes."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, len(words) // 50)):
        words[i] = rng.choice(["indeed", "perhaps", "truly", "however"])
    out = " ".join(words) + "\n\nShared from the archive."
    return out.upper() if rng.random() < 0.2 else out


@dataclass
class BenchCorpus:
    folder: Path
    bytes: int = 0
    distinct: list[str] = field(default_factory=list)
    exact_pairs: list[tuple[str, str]] = field(default_factory=list)  # (original, copy)
    near_pairs: list[tuple[str, str]] = field(default_factory=list)


def build(
    folder: Path, target_mb: float, *, dup_fraction: float = 0.02, files: int = 8, seed: int = 0
) -> BenchCorpus:
    """Write ``files`` JSONL files (``{"id", "text"}``) of about ``target_mb`` MB in total."""
    rng = random.Random(seed)
    paragraphs, sentences = pieces()
    folder.mkdir(parents=True, exist_ok=True)
    corpus = BenchCorpus(folder)
    handles = [open(folder / f"part-{i:02d}.jsonl", "w", encoding="utf-8") for i in range(files)]  # noqa: SIM115
    ids: list[str] = []
    texts: dict[str, str] = {}
    target = target_mb * 1e6
    n = 0
    lines = [0] * files
    try:
        while corpus.bytes < target:
            kind = rng.random()
            if ids and kind < dup_fraction:
                orig = rng.choice(ids)
                text, pair = "  " + texts[orig].replace("\n", "\r\n") + "  ", corpus.exact_pairs
            elif ids and kind < 2 * dup_fraction:
                orig = rng.choice(ids)
                text, pair = near_copy(rng, texts[orig]), corpus.near_pairs
            else:
                orig, text, pair = None, make_document(rng, paragraphs, sentences), None
            part = n % files
            doc_id = f"part-{part:02d}.jsonl:{lines[part]}"  # the id the clean stage gives it
            lines[part] += 1
            n += 1
            if pair is None:
                ids.append(doc_id)
                texts[doc_id] = text
            else:
                pair.append((orig, doc_id))
            handles[part].write(json.dumps({"id": doc_id, "text": text}) + "\n")
            corpus.bytes += len(text.encode("utf-8"))
    finally:
        for h in handles:
            h.close()
    used = {o for o, _ in corpus.exact_pairs + corpus.near_pairs}
    corpus.distinct = [i for i in ids if i not in used]
    return corpus
