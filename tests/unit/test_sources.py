"""Reading corpora and labeled sets from local files, and the errors a user sees."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmops.config import LmopsError
from lmops.data.sources import (
    IngestStats,
    Source,
    SourceDocument,
    iter_source_documents,
    parse_sources,
    read_corpus,
    read_labeled,
)

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


# ------------------------------------------------------------- formats, bad input, mixing


def _docs(sources: list[Source], **kw: object) -> tuple[list[SourceDocument], IngestStats]:
    stats = IngestStats()
    return list(iter_source_documents(sources, stats, **kw)), stats  # type: ignore[arg-type]


def test_gzip_and_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as fh:
        fh.write('{"text": "zipped row"}\n')
    with gzip.open(tmp_path / "b.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write("zipped text file")
    with gzip.open(tmp_path / "c.tsv.gz", "wt", encoding="utf-8") as fh:
        fh.write("text\tlabel\nzipped tsv\t1\n")
    pq.write_table(pa.table({"text": ["from parquet", None], "n": [1, 2]}), tmp_path / "d.parquet")
    assert list(read_corpus([tmp_path])) == [
        "zipped row", "zipped text file", "zipped tsv", "from parquet",
    ]  # fmt: skip
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "e.parquet")
    with pytest.raises(LmopsError, match="data.corpus_text_column"):
        list(read_corpus([tmp_path / "e.parquet"]))


def test_invalid_utf8_is_repaired_or_dropped_and_counted(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_bytes(b'{"text": "fine"}\n{"text": "bro\xffken"}\n{"text": "esc \\udc80"}\n')
    sources = parse_sources([str(f)], tmp_path)
    docs, stats = _docs(sources)
    assert [d.text for d in docs] == ["fine", "bro\ufffdken", "esc \ufffd"]
    assert all(d.id.endswith(f"bad.jsonl:{i}") for i, d in enumerate(docs))
    assert stats.invalid_utf8_repaired == 2
    docs, stats = _docs(sources, invalid_utf8="drop")
    assert [d.text for d in docs] == ["fine"] and stats.invalid_utf8_dropped == 2
    t = tmp_path / "latin1.txt"
    t.write_bytes("caf\xe9 au lait".encode("latin-1"))
    assert list(read_corpus([t])) == ["caf\ufffd au lait"]


def test_binary_and_truncated_files_are_skipped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write(tmp_path / "corpus" / "a.txt", "a real text file")
    (tmp_path / "corpus" / "b.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(64))
    data = gzip.compress(b'{"text": "row one"}\n{"text": "row two"}\n' * 200)
    (tmp_path / "corpus" / "c.jsonl.gz").write_bytes(data[: len(data) // 2])
    sources = parse_sources(["corpus"], tmp_path)
    with caplog.at_level("WARNING"):
        docs, stats = _docs(sources, root=tmp_path)
    assert docs[0].text == "a real text file" and docs[0].id == "corpus/a.txt:0"
    assert stats.binary_files_skipped == ["corpus/b.txt"]
    assert stats.unreadable_files == ["corpus/c.jsonl.gz"]
    assert "looks binary" in caplog.text and "unreadable" in caplog.text
    with pytest.raises(LmopsError, match="binary.*data.labeled_train_path"):
        read_labeled(_bin(tmp_path / "m.csv"))


def _bin(path: Path) -> Path:
    path.write_bytes(b"text,label\n\x00\x01\x02,1\n")
    return path


def test_sources_parse_weights_and_fail_fast(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "x")
    _write(tmp_path / "b.txt", "y")
    sources = parse_sources(["a.txt", "b.txt"], tmp_path, [2.0, 0.5])
    assert [(s.spec, s.weight) for s in sources] == [("a.txt", 2.0), ("b.txt", 0.5)]
    with pytest.raises(LmopsError, match="data.corpus_weights"):
        parse_sources(["a.txt"], tmp_path, [1.0, 2.0])
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        parse_sources(["a.txt", "missing.txt"], tmp_path)
    with pytest.raises(LmopsError, match="unknown option.*data.corpus_paths"):
        parse_sources(["hf:some/dataset?colum=text"], tmp_path)


def test_hugging_face_dataset_from_a_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"content": ["first hf row", "second hf row"]}).save_to_disk(
        str(tmp_path / "saved")
    )
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_dict({"text": ["train row"]}),
         "test": datasets.Dataset.from_dict({"text": ["test row"]})}
    )  # fmt: skip
    dd.save_to_disk(str(tmp_path / "dict"))
    (tmp_path / "files").mkdir()
    _write(tmp_path / "files" / "part.jsonl", '{"text": "json via load_dataset"}\n')
    _write(tmp_path / "plain.txt", "local text")
    sources = parse_sources(
        ["hf:saved?column=content", "hf:dict?split=test", "hf:files?split=train", "plain.txt"],
        tmp_path,
        [1, 1, 1, 3],
    )
    docs, stats = _docs(sources)
    assert [d.text for d in docs] == [
        "first hf row", "second hf row", "test row", "json via load_dataset", "local text",
    ]  # fmt: skip
    assert [d.source for d in docs] == [0, 0, 1, 2, 3]
    assert docs[0].id == "hf:saved?column=content:0"
    assert stats.documents_per_source["hf:dict?split=test"] == 1
    missing = parse_sources(["hf:dict?split=validation"], tmp_path)
    with pytest.raises(LmopsError, match="no split 'validation'"):
        _docs(missing)
    # an unreachable hub (offline here, so no retries) is one line naming the param
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    offline = parse_sources(["hf:no-such-org/no-such-dataset-xyz"], tmp_path)
    with pytest.raises(LmopsError, match="could not read the dataset.*data.corpus_paths"):
        _docs(offline)
