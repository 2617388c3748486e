"""Reading corpora and labeled sets from local files, and the errors a user sees."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmops.config import ConfigError, DataConfig, LmopsError, SampleConfig, load_params
from lmops.data.sample import generate_corpus
from lmops.data.sources import (
    BLOCK_CHARS,
    IngestStats,
    Source,
    SourceDocument,
    corpus_sources,
    iter_source_documents,
    parse_sources,
    read_labeled,
    source_files,
)

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ corpus


def _docs(sources: list[Source], **kw: object) -> tuple[list[SourceDocument], IngestStats]:
    stats = IngestStats()
    return list(iter_source_documents(sources, stats, **kw)), stats  # type: ignore[arg-type]


def _texts(paths: list[Path], root: Path, **kw: object) -> list[str]:
    """The texts the clean stage reads from ``paths`` (entries of data.corpus_paths)."""
    docs, _ = _docs(parse_sources([str(p) for p in paths], root), root=root, **kw)
    return [d.text for d in docs]


def test_short_txt_without_paragraphs_is_one_document(tmp_path: Path) -> None:
    # shorter than a block: one document (test_corpus_shapes.py covers long files)
    f = _write(tmp_path / "a.txt", "line one\nline two\nline three\n")
    assert _texts([f], tmp_path) == ["line one\nline two\nline three"]


def test_txt_paragraphs_are_grouped_into_blocks(tmp_path: Path) -> None:
    paragraphs = [f"Speaker {i}:\n" + f"Some words number {i}. " * 6 for i in range(120)]
    paragraphs = [p.rstrip() for p in paragraphs]
    _write(tmp_path / "play.txt", "\n\n".join(paragraphs) + "\n")
    docs, stats = _docs(parse_sources(["play.txt"], tmp_path), root=tmp_path)
    texts = [d.text for d in docs]
    assert 5 < len(texts) < 40  # several paragraphs per document, many documents
    # a block is cut once it holds BLOCK_CHARS, counting a 2-character separator per paragraph
    assert all(len(d) + 2 >= BLOCK_CHARS for d in texts[:-1])
    # nothing lost, nothing reordered
    assert [p for d in texts for p in d.split("\n\n")] == paragraphs
    assert [d.id for d in docs] == [f"play.txt:{i}" for i in range(len(docs))]
    assert (stats.files, stats.documents_per_source) == (1, {"play.txt": len(docs)})


def test_jsonl_csv_tsv_one_document_per_row(tmp_path: Path) -> None:
    j = _write(tmp_path / "a.jsonl", '{"text": "first row"}\n\n{"text": "second row", "x": 1}\n')
    c = _write(tmp_path / "b.csv", 'id,body\n1,"has, a comma\nand a newline"\n2,plain\n')
    t = _write(tmp_path / "c.tsv", 'body\tid\nsays "hi there\t1\nit\'s "quoted"\t2\n')
    assert _texts([j], tmp_path) == ["first row", "second row"]
    assert _texts([c], tmp_path, text_column="body") == ["has, a comma\nand a newline", "plain"]
    # TSV keeps quote characters as text (SST-2 style): an unbalanced quote swallows nothing
    assert _texts([t], tmp_path, text_column="body") == ['says "hi there', 'it\'s "quoted"']


def test_folder_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    _write(tmp_path / "corpus" / "b.txt", "bee")
    _write(tmp_path / "corpus" / "a" / "z.jsonl", '{"text": "zed"}\n')
    _write(tmp_path / "corpus" / "notes.bin", "ignored")
    _write(tmp_path / "corpus" / ".hidden" / "x.txt", "ignored")
    docs, stats = _docs(parse_sources(["corpus"], tmp_path), root=tmp_path)
    assert [(d.id, d.text) for d in docs] == [
        ("corpus/a/z.jsonl:0", "zed"),
        ("corpus/b.txt:0", "bee"),
    ]
    assert stats.files == 2 and stats.documents_per_source == {"corpus": 2}


def test_corpus_errors_name_the_param_and_fail_before_reading(tmp_path: Path) -> None:
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        parse_sources(["missing.txt"], tmp_path)  # no document read to fail
    _write(tmp_path / "x.pdf", "x")
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        parse_sources(["x.pdf"], tmp_path)
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        parse_sources([], tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmopsError, match="data.corpus_paths"):
        parse_sources(["empty"], tmp_path)
    j = _write(tmp_path / "a.jsonl", '{"content": "x"}\n')
    with pytest.raises(LmopsError, match="data.corpus_text_column") as err:
        _texts([j], tmp_path)
    assert "content" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------------- the built-in sample


def test_sample_is_a_source_like_the_others(tmp_path: Path) -> None:
    cfg = SampleConfig(n_documents=300, seed=7)
    sources = corpus_sources(DataConfig(source="sample", sample=cfg), tmp_path)
    assert source_files(sources) == {}  # nothing on disk to hash
    docs, stats = _docs(sources, root=tmp_path)
    generated = generate_corpus(300, 7)
    blank = [i for i, text in enumerate(generated) if not text.strip()]
    assert blank  # the sample has blank documents: dropped and counted when read
    assert [d.id for d in docs] == [f"sample:{i}" for i in range(300) if i not in blank]
    assert [d.text for d in docs] == [t for i, t in enumerate(generated) if i not in blank]
    assert {d.source for d in docs} == {0}
    assert (stats.documents_read, stats.empty_documents) == (300, len(blank))
    # no files, and no per-entry breakdown: the sample is not a data.corpus_paths entry
    assert stats.files == 0 and stats.documents_per_source == {}


def test_local_corpus_sources_carry_weights_and_files(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "x")
    _write(tmp_path / "b.txt", "y")
    data = DataConfig(
        source="local",
        corpus_paths=["a.txt", "b.txt"],
        corpus_weights=[2.0, 0.5],
        labeled_train_path="l.csv",
    )
    sources = corpus_sources(data, tmp_path)
    assert [(s.spec, s.weight) for s in sources] == [("a.txt", 2.0), ("b.txt", 0.5)]
    assert source_files(sources) == {"corpus0": tmp_path / "a.txt", "corpus1": tmp_path / "b.txt"}


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ("[1.0]", "data.corpus_weights has 1 entries for 2 data.corpus_paths"),
        ("[1.0,-1.0]", "data.corpus_weights must be >= 0"),
        ("[0,0]", "data.corpus_weights are all 0"),
    ],
)
def test_bad_corpus_weights_stop_when_params_load(weights: str, message: str) -> None:
    overrides = [
        "data.source=local",
        "data.corpus_paths=[a.txt,b.txt]",
        "data.labeled_train_path=l.csv",
        f"data.corpus_weights={weights}",
    ]
    with pytest.raises(ConfigError, match=message) as err:
        load_params(REPO / "params.yaml", overrides)
    assert "\n" not in str(err.value)


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
    with pytest.raises(LmopsError, match="row 1 has no value in column .label."):
        read_labeled(bad)


# ------------------------------------------------------------------- shared data sets


@pytest.mark.skipif(not (SHARED / "tinyshakespeare").exists(), reason="shared data absent")
def test_tinyshakespeare_becomes_many_documents() -> None:
    path = SHARED / "tinyshakespeare" / "input.txt"
    docs = _texts([path], path.parent)
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
    assert _texts([tmp_path], tmp_path) == [
        "zipped row", "zipped text file", "zipped tsv", "from parquet",
    ]  # fmt: skip
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "e.parquet")
    with pytest.raises(LmopsError, match="data.corpus_text_column"):
        _texts([tmp_path / "e.parquet"], tmp_path)


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
    assert _texts([t], tmp_path) == ["caf\ufffd au lait"]


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


def test_sources_fail_fast(tmp_path: Path) -> None:
    _write(tmp_path / "a.txt", "x")
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
