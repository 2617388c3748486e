"""Exact and near-duplicate removal: duplicates go, distinct documents stay, the threshold holds."""

from __future__ import annotations

import random
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from datatrove.utils.text import TextNormConfig, simplify_text
from hypothesis import given, settings
from hypothesis import strategies as st

from lmops.config import (
    C4Config,
    CleanConfig,
    DataExecutorConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    MinhashConfig,
)
from lmops.data.dedup import (
    MinhashSignature,
    MinhashVerifyPairs,
    datatrove_minhash_config,
    shingle_words,
    simplify_for_shingles,
)
from lmops.data.filters import FastWordTokenizer
from tests.unit.clean_texts import clean_texts

NO_FILTERS = CleanConfig(
    min_chars=1,
    gopher_repetition=GopherRepetitionConfig(enabled=False),
    gopher_quality=GopherQualityConfig(enabled=False),
    c4=C4Config(enabled=False),
)
WORDS = [
    "river",
    "mill",
    "bread",
    "market",
    "winter",
    "lantern",
    "garden",
    "harbor",
    "village",
    "teacher",
    "letter",
    "music",
    "mountain",
    "kitchen",
    "window",
    "orchard",
    "bridge",
    "station",
    "forest",
    "meadow",
    "candle",
    "basket",
    "ladder",
    "doctor",
    "sailor",
    "painter",
    "baker",
    "farmer",
    "weaver",
    "potter",
    "tailor",
    "clock",
    "violin",
]


def distinct_docs(n: int, seed: int = 0, words: int = 60) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(words)) + "." for _ in range(n)]


def edit(text: str, changes: int, seed: int) -> str:
    """A near duplicate: ``changes`` words swapped for others."""
    rng = random.Random(seed)
    words = text.split()
    for i in rng.sample(range(len(words)), changes):
        words[i] = "changed"
    return " ".join(words)


def test_exact_and_near_duplicates_go_distinct_documents_stay() -> None:
    base = distinct_docs(30)
    near = [edit(base[i], 1, seed=i) for i in range(10)]  # about 0.85 Jaccard on 5-word shingles
    exact = ["  " + base[i].upper().lower() + "\n" for i in range(10, 15)]  # equal once normalized
    kept, report = clean_texts(base + near + exact, NO_FILTERS)
    assert kept == base
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["exact_dedup"]["dropped"] == 5 and steps["near_dedup"]["dropped"] == 10
    examples = report["examples"]["near_duplicates"]
    assert examples and all(e["kept_text"] in base and e["removed_text"] in near for e in examples)


def test_threshold_decides_borderline_pairs() -> None:
    a = distinct_docs(1, seed=5, words=80)[0]
    b = edit(a, 5, seed=1)  # Jaccard of 5-word shingles about 0.55-0.65
    others = distinct_docs(5, seed=9)
    strict = replace(NO_FILTERS, minhash=MinhashConfig(threshold=0.9))
    loose = replace(NO_FILTERS, minhash=MinhashConfig(threshold=0.3, bands=40, rows=3))
    assert clean_texts([a, b, *others], strict)[0] == [a, b, *others]
    assert clean_texts([a, b, *others], loose)[0] == [a, *others]


def test_near_dedup_in_two_processes_matches_one() -> None:
    base = distinct_docs(40, seed=3)
    docs = base + [edit(base[i], 1, seed=i) for i in range(0, 40, 4)] + base[:3]
    cfg = replace(NO_FILTERS, shard_mb=0.002)  # several shards
    one, report = clean_texts(docs, cfg)
    assert report["shards"] >= 4 and one == base
    two, _ = clean_texts(docs, cfg, executor=DataExecutorConfig(workers=2))
    assert two == one


@pytest.mark.parametrize(
    "text",
    ["Crème Brûlée at 12,50 EUR!", "ÅNGSTRÖM — naïve façade", "東京 2024年", "plain ascii, text."],
)
def test_simplified_text_matches_datatrove(text: str) -> None:
    assert simplify_for_shingles(text, TextNormConfig()) == simplify_text(text, TextNormConfig())


def _datatrove_words(text: str, norm: TextNormConfig) -> list[str]:
    return FastWordTokenizer().word_tokenize(simplify_text(text, norm))


@pytest.mark.parametrize(
    "text",
    [
        "It's 3.14, not 3,14 -- or 1.2.3? [x] {y} <z> a_b #9 $5 100% @me ~/x|y",
        "Tabs\tand\nnew lines,\r\n  and\x1c odd\x0b space\x7f",
        "Crème Brûlée at 12,50 EUR!",
        "東京 2024年 ok",
        "",
    ],
)
def test_shingle_words_match_datatrove(text: str) -> None:
    assert shingle_words(text, TextNormConfig(), FastWordTokenizer()) == _datatrove_words(
        text, TextNormConfig()
    )


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(max_codepoint=127)), st.booleans())
def test_shingle_words_ascii_path_matches_datatrove(text: str, numbers: bool) -> None:
    norm = TextNormConfig(norm_numbers=numbers)
    assert shingle_words(text, norm, FastWordTokenizer()) == _datatrove_words(text, norm)


def test_shingle_words_follow_datatrove_options_off_the_fast_path() -> None:
    norm = TextNormConfig(norm_weekdays=True)  # no ASCII fast path for this option
    text = "See you on monday, 12.5 times."
    assert shingle_words(text, norm, FastWordTokenizer()) == _datatrove_words(text, norm)
    assert "WEEKDAY" in shingle_words(text, norm, FastWordTokenizer())  # the option took effect


def test_signature_files_are_the_bytes_datatrove_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.dedup import MinhashDedupSignature

    docs = distinct_docs(30, seed=5) + ["too short", distinct_docs(1, seed=9)[0]]
    config = datatrove_minhash_config(MinhashConfig(bands=4, rows=3))
    ours = MinhashSignature(str(tmp_path / "ours"), config, language=FastWordTokenizer())
    ours.docs_per_batch = 7  # batches end inside the list, one in the middle of "too short"
    monkeypatch.setattr("lmops.data.dedup._SIGNATURE_ROWS", 50)  # a document spans chunks
    theirs = MinhashSignature(str(tmp_path / "theirs"), config, language=FastWordTokenizer())
    ours.run((Document(text=t, id=str(i)) for i, t in enumerate(docs)), rank=3)
    # datatrove's own loop, packing and sorting, over the same shingles and permutations
    MinhashDedupSignature.run(theirs, (Document(text=t, id=str(i)) for i, t in enumerate(docs)), 3)
    for band in range(4):
        name = f"bucket_{band:03d}/00003.minhash.sig"
        mine = (tmp_path / "ours" / name).read_bytes()
        assert len(mine) == 31 * (3 * 8 + 4)  # every document but the short one
        assert mine == (tmp_path / "theirs" / name).read_bytes()


def test_bucket_pairs_are_the_bytes_datatrove_writes(tmp_path: Path) -> None:
    from datatrove.data import Document
    from datatrove.pipeline.dedup import MinhashDedupBuckets

    from lmops.data.dedup import MinhashBuckets

    base = distinct_docs(25, seed=11)
    shards = [
        base[:10] + [edit(base[0], 1, seed=1), base[3]],
        base[10:20] + [base[0], edit(base[12], 1, seed=2), base[12]],
        base[20:] + [base[5], base[5], edit(base[21], 2, seed=3)],
    ]
    config = datatrove_minhash_config(MinhashConfig(bands=6, rows=2))
    sigs = tmp_path / "sigs"
    for rank, texts in enumerate(shards):
        step = MinhashSignature(str(sigs), config, language=FastWordTokenizer())
        step.run((Document(text=t, id=str(i)) for i, t in enumerate(texts)), rank=rank)
    for band in range(6):
        MinhashBuckets(str(sigs), str(tmp_path / "ours"), config=config).run(None, band, 6)
        MinhashDedupBuckets(str(sigs), str(tmp_path / "theirs"), config=config).run(None, band, 6)
    found = 0
    for band in range(6):
        mine = (tmp_path / "ours" / f"{band:05d}_00.dups").read_bytes()
        assert mine == (tmp_path / "theirs" / f"{band:05d}_00.dups").read_bytes()
        found += len(mine) // 16
    assert found >= 6 * 4  # the exact copies collide in every band


def test_signature_depends_on_the_shingles_only(tmp_path: Path) -> None:
    step = MinhashSignature(
        str(tmp_path), datatrove_minhash_config(MinhashConfig()), language=FastWordTokenizer()
    )
    a = "The quick brown fox jumps over the lazy dog near the river bank today."
    sig = step.get_signature(step.get_shingles(a))
    assert sig == step.get_signature(step.get_shingles(a.upper().replace(" ", "  ")))
    assert len(sig) == 20 and all(len(band) == 5 for band in sig)
    other = step.get_signature(step.get_shingles(a.replace("fox", "cat")))
    assert sig != other
    assert step.get_shingles("too few words").size == 0


def test_verify_keeps_only_pairs_above_the_threshold(tmp_path: Path) -> None:
    full = np.arange(40, dtype=np.uint64).reshape(4, 10)
    full[1] = full[0]  # doc 1 equals doc 0
    full[2, :6] = full[0, :6]  # doc 2 shares 60 % with doc 0
    (tmp_path / "full").mkdir()
    np.save(tmp_path / "full" / "00000.npy", full)
    (tmp_path / "pairs").mkdir()
    pairs = [(0, 0, 0, 1), (0, 0, 0, 2), (0, 0, 0, 3)]
    (tmp_path / "pairs" / "00000_00.dups").write_bytes(
        b"".join(struct.pack("<4I", *p) for p in pairs)
    )
    for threshold, expected in ((0.5, pairs[:2]), (0.7, pairs[:1]), (0.0, pairs)):
        out = tmp_path / f"out{threshold}"
        MinhashVerifyPairs(
            str(tmp_path / "pairs"), str(tmp_path / "full"), str(out), threshold
        ).run(None, 0, 1)
        got = np.frombuffer((out / "00000_00.dups").read_bytes(), dtype="<u4").reshape(-1, 4)
        assert [tuple(int(x) for x in row) for row in got] == expected
