"""Reading corpora and labeled sets from local files, and the errors a user sees."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmops.config import LmopsError
from lmops.data.sources import read_corpus, read_labeled

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ corpus


def test_txt_without_paragraphs_is_one_document(tmp_path: Path) -> None:
    f = _write(tmp_path / "a.txt", "line one\nline two\nline three\n")
    assert list(read_corpus([f])) == ["line one\nline two\nline three\n"]


def test_txt_paragraphs_are_grouped_into_blocks(tmp_path: Path) -> None:
    paragraphs = [f"Speaker {i}:\nSome words number {i}." for i in range(40)]
    f = _write(tmp_path / "play.txt", "\n\n".join(paragraphs) + "\n")
    docs = list(read_corpus([f], block_chars=200))
    assert 5 < len(docs) < 40  # several paragraphs per document, many documents
    assert all(len(d) >= 200 for d in docs[:-1])
    # nothing lost, nothing reordered
    assert [p for d in docs for p in d.split("\n\n")] == paragraphs


def test_jsonl_csv_tsv_one_document_per_row(tmp_path: Path) -> None:
    j = _write(tmp_path / "a.jsonl", '{"text": "first row"}\n\n{"text": "second row", "x": 1}\n')
    c = _write(tmp_path / "b.csv", 'id,body\n1,"has, a comma\nand a newline"\n2,plain\n')
    t = _write(tmp_path / "c.tsv", 'body\tid\nsays "hi there\t1\nit\'s "quoted"\t2\n')
    assert list(read_corpus([j])) == ["first row", "second row"]
    assert list(read_corpus([c], text_column="body")) == ["has, a comma\nand a newline", "plain"]
    # TSV keeps quote characters as text (SST-2 style): an unbalanced quote swallows nothing
    assert list(read_corpus([t], text_column="body")) == ['says "hi there', 'it\'s "quoted"']


def test_folder_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "corpus" / "b.txt", "bee")
    _write(tmp_path / "corpus" / "a" / "z.jsonl", '{"text": "zed"}\n')
    _write(tmp_path / "corpus" / "notes.bin", "ignored")
    _write(tmp_path / "corpus" / ".hidden" / "x.txt", "ignored")
    assert list(read_corpus([tmp_path / "corpus"])) == ["zed", "bee"]


def test_corpus_errors_name_the_param_and_fail_before_iteration(tmp_path: Path) -> None:
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        read_corpus([tmp_path / "missing.txt"])  # no iteration needed to fail
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        read_corpus([_write(tmp_path / "x.pdf", "x")])
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        read_corpus([])
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        read_corpus([tmp_path / "empty"])
    j = _write(tmp_path / "a.jsonl", '{"content": "x"}\n')
    with pytest.raises(LmopsError, match="data.corpus_text_column") as err:
        list(read_corpus([j]))
    assert "content" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------------- labeled


def test_read_labeled_all_formats_labels_as_strings(tmp_path: Path) -> None:
    rows = [{"sentence": "good film", "label": 1}, {"sentence": "bad, dull film", "label": 0}]
    j = _write(tmp_path / "l.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    c = _write(tmp_path / "l.csv", 'sentence,label\ngood film,1\n"bad, dull film",0\n')
    t = _write(tmp_path / "l.tsv", "label\tsentence\n1\tgood film\n0\tbad, dull film\n")
    expected = [("good film", "1"), ("bad, dull film", "0")]
    for path in (j, c, t):
        assert read_labeled(path, "sentence", "label") == expected


def test_read_labeled_skips_empty_text_and_names_params(tmp_path: Path) -> None:
    c = _write(tmp_path / "l.csv", "text,label\nfine,pos\n,neg\n  ,neg\nok,neg\n")
    assert read_labeled(c) == [("fine", "pos"), ("ok", "neg")]
    with pytest.raises(LmopsError, match="data.labeled_test_path"):
        read_labeled(tmp_path / "nope.csv", param="data.labeled_test_path")
    with pytest.raises(LmopsError, match="data.labeled_text_column"):
        read_labeled(c, text_column="sentence")
    with pytest.raises(LmopsError, match="data.labeled_label_column"):
        read_labeled(c, label_column="y")
    with pytest.raises(LmopsError, match="data.labeled_train_path"):
        read_labeled(_write(tmp_path / "l.txt", "x"))
    bad = _write(tmp_path / "nolabel.csv", "text,label\nfine,\n")
    with pytest.raises(LmopsError, match="no label"):
        read_labeled(bad)


# ------------------------------------------------------------------- shared data sets


@pytest.mark.skipif(not (SHARED / "tinyshakespeare").exists(), reason="shared data absent")
def test_tinyshakespeare_becomes_many_documents() -> None:
    path = SHARED / "tinyshakespeare" / "input.txt"
    docs = list(read_corpus([path]))
    assert 500 < len(docs) < 5000
    assert docs[0].startswith("First Citizen:")
    assert sum(len(d) for d in docs) > 0.95 * len(path.read_text(encoding="utf-8"))


@pytest.mark.skipif(not (SHARED / "sst2").exists(), reason="shared data absent")
def test_sst2_tsv_reads_every_row() -> None:
    path = SHARED / "sst2" / "train.tsv"
    rows = read_labeled(path, "sentence", "label")
    with open(path, encoding="utf-8") as fh:
        n_lines = sum(1 for _ in fh) - 1
    assert len(rows) == n_lines
    assert {label for _, label in rows} == {"0", "1"}
    assert all("\t" not in text for text, _ in rows)
