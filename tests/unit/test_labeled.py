"""The fine-tuning set: read from the sample or from files, normalized, split, written."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from lmops.config import CleanConfig, DataConfig, LmopsError, SampleConfig
from lmops.data.labeled import LabeledSet, load_labeled, split_by_document, write_labeled
from lmops.data.sample import LABELS, generate_labeled

CFG = CleanConfig(labeled_val_fraction=0.2, labeled_test_fraction=0.25, seed=5)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _local(**kw: object) -> DataConfig:
    return DataConfig(source="local", corpus_paths=["c.txt"], **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ reading


def test_sample_labeled_set_is_one_generator_call_split_in_two() -> None:
    cfg = SampleConfig(n_labeled_train=30, n_labeled_test=10, seed=3)
    labeled = load_labeled(DataConfig(sample=cfg), Path("/nonexistent"))
    rows = generate_labeled(40, 4)  # the sample's seed + 1: apart from the corpus's
    assert (labeled.train, labeled.test) == (rows[:30], rows[30:])
    assert labeled.labels == LABELS and labeled.files == {}


def test_local_labeled_files_are_read_with_their_columns(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("sentence,y\ngood film,1\nbad film,0\n", encoding="utf-8")
    (tmp_path / "test.tsv").write_text("y\tcontent\n0\tdull\n", encoding="utf-8")
    data = _local(
        labeled_train_path="train.csv", labeled_text_column="sentence", labeled_label_column="y"
    )
    labeled = load_labeled(data, tmp_path)
    assert labeled.train == [("good film", "1"), ("bad film", "0")] and labeled.test is None
    assert labeled.labels is None and labeled.files == {"labeled_train": tmp_path / "train.csv"}
    data = replace(data, labeled_test_path="test.tsv", labeled_test_text_column="content")
    labeled = load_labeled(data, tmp_path)
    assert labeled.test == [("dull", "0")]
    assert labeled.files["labeled_test"] == tmp_path / "test.tsv"


def test_a_bad_labeled_test_file_names_its_param(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("text,label\nfine,1\n", encoding="utf-8")
    data = _local(labeled_train_path="train.csv", labeled_test_path="missing.csv")
    with pytest.raises(LmopsError, match="data.labeled_test_path"):
        load_labeled(data, tmp_path)


# ------------------------------------------------------------------------------ writing


def test_written_set_is_normalized_split_and_indexed(tmp_path: Path) -> None:
    train = [(f"  review   number {i}\r\n", "pos" if i % 3 else "neg") for i in range(20)]
    train.append(("\x00  ", "pos"))  # empty once normalized: dropped
    test = [("cafe\u0301 ok", "neg"), ("fine", "pos")]
    summary = write_labeled(LabeledSet(train, test), CFG, tmp_path / "labeled")
    assert summary == {"labels": ["neg", "pos"], "train": 16, "val": 4, "test": 2}
    out = tmp_path / "labeled"
    assert json.loads((out / "labels.json").read_text()) == ["neg", "pos"]
    rows = {split: _rows(out / f"{split}.jsonl") for split in ("train", "val", "test")}
    assert rows["test"] == [
        {"id": "test0", "text": "caf\u00e9 ok", "label": 0},
        {"id": "test1", "text": "fine", "label": 1},
    ]
    seen = rows["train"] + rows["val"]
    assert sorted(r["text"] for r in seen) == sorted(f"review number {i}" for i in range(20))
    assert all(r["label"] == (1 if int(r["text"].split()[-1]) % 3 else 0) for r in seen)
    assert [r["id"] for r in rows["val"]] == ["val0", "val1", "val2", "val3"]


def test_without_a_test_file_test_is_split_off_first(tmp_path: Path) -> None:
    train = [(f"text {i}", "b" if i % 2 else "a") for i in range(40)]
    summary = write_labeled(LabeledSet(train, None), CFG, tmp_path / "labeled")
    assert (summary["train"], summary["val"], summary["test"]) == (24, 6, 10)
    _, test = split_by_document(train, CFG.labeled_test_fraction, CFG.seed)
    expected_test = [text for text, _ in test]
    assert [r["text"] for r in _rows(tmp_path / "labeled" / "test.jsonl")] == expected_test


def test_declared_labels_fix_the_index_order(tmp_path: Path) -> None:
    rows = [(f"text {i}", "zebra") for i in range(10)]
    summary = write_labeled(LabeledSet(rows, None, labels=["zebra", "ant"]), CFG, tmp_path / "l")
    assert summary["labels"] == ["zebra", "ant"]
    assert {r["label"] for r in _rows(tmp_path / "l" / "train.jsonl")} == {0}


def test_too_small_a_set_is_a_user_error_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(LmopsError, match="too small.*data.labeled_train_path"):
        write_labeled(LabeledSet([("one", "a")], None), CFG, tmp_path / "labeled")
    assert not (tmp_path / "labeled").exists()


# --------------------------------------------------------------------- split_by_document


def test_split_is_deterministic_disjoint_and_complete() -> None:
    items = [f"doc{i}" for i in range(200)]
    train, val = split_by_document(items, 0.1, seed=3)
    assert (train, val) == split_by_document(items, 0.1, seed=3)
    assert len(val) == 20 and len(train) == 180
    assert not set(train) & set(val) and set(train) | set(val) == set(items)
    assert train == sorted(train, key=items.index)  # input order kept
    assert val == sorted(val, key=items.index)
    assert split_by_document(items, 0.1, seed=4)[1] != val


@pytest.mark.parametrize(("n", "n_val"), [(0, 0), (1, 0), (2, 1), (3, 1), (10, 1)])
def test_split_small_inputs(n: int, n_val: int) -> None:
    train, val = split_by_document(list(range(n)), 0.05, seed=0)
    assert len(val) == n_val and len(train) == n - n_val


def test_split_never_empties_train() -> None:
    train, val = split_by_document([1, 2], 0.49, seed=0)
    assert len(train) == 1 and len(val) == 1


def test_classes_are_checked_before_the_corpus(tmp_path: Path) -> None:
    """Train labels 0/1 with test labels neg/pos used to become a 4-class model (test acc 0);
    a one-class train file trained nothing. Both stop at load time with the param to fix."""
    (tmp_path / "train.csv").write_text("text,label\na fine day,1\na bad day,0\n")
    (tmp_path / "test.csv").write_text("text,label\nso good,pos\nso bad,neg\n")
    (tmp_path / "one.csv").write_text("text,label\na fine day,1\nanother,1\n")
    data = DataConfig(
        source="local",
        corpus_paths=["x.txt"],
        labeled_train_path="train.csv",
        labeled_test_path="test.csv",
    )
    with pytest.raises(LmopsError, match=r"labeled_test_path has labels \['neg', 'pos'\]"):
        load_labeled(data, tmp_path)
    data.labeled_train_path, data.labeled_test_path = "one.csv", None
    with pytest.raises(LmopsError, match="has one class"):
        load_labeled(data, tmp_path)
