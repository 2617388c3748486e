"""Corpora in the shapes public corpora ship in (issue 15): text files with one sentence per line
and no blank lines, text files that are one huge line, and csv / tsv tables without a header row.

Each test fails if the shape is read the old way: a line-per-sentence file as one giant
document, a headerless table with its first row taken as the header.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest

from lmops.config import (
    C4Config,
    CleanConfig,
    DataConfig,
    DataExecutorConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    LmopsError,
    MinhashConfig,
    load_params,
)
from lmops.data.cleaning import run_clean
from lmops.data.labeled import load_labeled
from lmops.data.sources import (
    BLOCK_CHARS,
    IngestStats,
    _txt_documents,
    iter_source_documents,
    parse_sources,
    read_labeled,
)
from tests.unit.clean_texts import clean_sources

REPO = Path(__file__).resolve().parents[2]

# One sentence per line, in several languages and scripts (the corpora small models are
# trained for are often not English).
SENTENCES = [
    "The committee approved the new budget after a long debate.",
    "A chuva continuou durante toda a noite e as ruas ficaram alagadas.",
    "Os alunos apresentaram o projeto final na sexta-feira à tarde.",
    "El tren llegó con veinte minutos de retraso a la estación central.",
    "Die Bibliothek bleibt während der Feiertage geschlossen.",
    "这个函数返回列表中最大的元素。",
    "模型在验证集上的准确率达到了百分之九十。",
    "東京の天気は明日から崩れるそうです。",
    "Он долго смотрел на море и молчал.",
]


def _sentence_file(n_lines: int) -> str:
    """``n_lines`` numbered sentences, one per line, no blank line anywhere."""
    return "".join(
        f"{SENTENCES[i % len(SENTENCES)]} ({i})\n" for i in range(n_lines)
    )  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _read(root: Path, name: str, **kw: object) -> list[str]:
    """The documents the clean stage reads from ``root / name`` with ``data.*`` as ``kw``."""
    docs = iter_source_documents(parse_sources([name], root), IngestStats(), root=root, **kw)  # type: ignore[arg-type]
    return [d.text for d in docs]


# ------------------------------------------------------------------------------ text files


def test_line_per_sentence_file_becomes_many_block_sized_documents(tmp_path: Path) -> None:
    text = _sentence_file(3000)  # ~150 KB: read the old way, one document
    _write(tmp_path / "sentences.txt", text)
    docs = _read(tmp_path, "sentences.txt")
    assert len(docs) > 100
    assert all(len(d) <= BLOCK_CHARS for d in docs)
    assert all(len(d) > BLOCK_CHARS // 2 for d in docs[:-1])
    # cut at line ends only: every line whole, none lost, none reordered
    assert "\n".join(docs) + "\n" == text


def test_txt_block_chars_sets_the_document_size(tmp_path: Path) -> None:
    _write(tmp_path / "sentences.txt", _sentence_file(500))
    docs = _read(tmp_path, "sentences.txt", txt_block_chars=300)
    assert all(len(d) <= 300 for d in docs) and len(docs) > 50


def test_txt_split_lines_and_file(tmp_path: Path) -> None:
    text = "first line\n\n  second line  \nthird 第三行\n"
    _write(tmp_path / "a.txt", text)
    assert _read(tmp_path, "a.txt", txt_split="lines") == [
        "first line",
        "second line",
        "third 第三行",
    ]
    assert _read(tmp_path, "a.txt", txt_split="file") == [text]
    long_file = _sentence_file(3000)
    _write(tmp_path / "b.txt", long_file)
    assert _read(tmp_path, "b.txt", txt_split="file") == [long_file]
    assert len(_read(tmp_path, "b.txt", txt_split="lines")) == 3000


def test_huge_single_line_file_is_cut_at_spaces(tmp_path: Path) -> None:
    words = " ".join(f"word{i}" for i in range(60_000))  # ~530 KB, no newline at all (text8)
    _write(tmp_path / "one_line.txt", words)
    docs = _read(tmp_path, "one_line.txt")
    assert len(docs) > 400
    assert all(len(d) <= BLOCK_CHARS for d in docs)
    assert " ".join(docs) == words  # cut between words, never inside one


def test_huge_single_line_without_spaces_is_cut_at_sentence_ends(tmp_path: Path) -> None:
    chinese = "".join(SENTENCES[5:7]) * 4000  # ~120,000 characters, no space, no newline
    _write(tmp_path / "zh.txt", chinese)
    docs = _read(tmp_path, "zh.txt")
    assert len(docs) > 100 and all(len(d) <= BLOCK_CHARS for d in docs)
    assert all(d.endswith("。") for d in docs)
    assert "".join(docs) == chinese


@pytest.mark.parametrize("text", [_sentence_file(20_000), "word " * 200_000])
def test_text_file_is_streamed(text: str) -> None:
    # the first document comes after reading about one block, not the whole file
    fh = io.StringIO(text)
    first = next(_txt_documents(fh, "paragraphs", BLOCK_CHARS))
    assert len(first) <= BLOCK_CHARS
    assert fh.tell() < 3 * BLOCK_CHARS  # characters read so far


def test_paragraph_files_are_still_grouped_by_paragraph(tmp_path: Path) -> None:
    # the old rule, unchanged where it worked: short paragraphs are kept whole and joined
    paragraphs = [f"Paragraph {i}.\n" + SENTENCES[i % len(SENTENCES)] for i in range(60)]
    _write(tmp_path / "p.md", "\n\n".join(paragraphs) + "\n")
    docs = _read(tmp_path, "p.md")
    assert 1 < len(docs) < 60
    assert [p for d in docs for p in d.split("\n\n")] == paragraphs


QUIET = CleanConfig(
    min_chars=1,
    max_chars=100_000,
    gopher_repetition=GopherRepetitionConfig(enabled=False),
    gopher_quality=GopherQualityConfig(enabled=False),
    c4=C4Config(enabled=False),
    minhash=MinhashConfig(enabled=False),
)


def test_sentence_corpus_survives_the_length_filter(tmp_path: Path) -> None:
    # the case: a 550 KB line-per-sentence file was one document, too long to keep
    _write(tmp_path / "corpus.txt", _sentence_file(9000))
    kept, report = clean_sources(parse_sources(["corpus.txt"], tmp_path), QUIET, tmp_path)
    assert len(kept) > 300
    assert report["docs_out"] == report["docs_in"]


def test_too_long_documents_name_max_chars(tmp_path: Path) -> None:
    _write(tmp_path / "corpus.txt", _sentence_file(200))
    sources = parse_sources(["corpus.txt"], tmp_path)
    cfg = replace(QUIET, max_chars=100)
    stats = IngestStats()
    documents = iter_source_documents(sources, stats, txt_split="file", root=tmp_path)
    with pytest.raises(LmopsError) as err:
        run_clean(
            documents, cfg, tmp_path / "work", executor=DataExecutorConfig(workers=1), ingest=stats
        )
    message = str(err.value)
    assert "raise clean.max_chars" in message and "\n" not in message
    assert "clean.min_chars" not in message  # too long: lowering the minimum would not help


# ------------------------------------------------------------------------------ tables

# GLUE's original CoLA files: source, label, original label, sentence; no header row
COLA = (
    "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
    "gj04\t0\t*\tThey drank the pub.\n"
    "gj04\t1\t\tA chuva parou antes do jantar.\n"
    'gj04\t1\t\tHe said "hi there.\n'  # TSV keeps quote characters as text, headerless too
)


def test_headerless_tsv_corpus_columns_by_position(tmp_path: Path) -> None:
    _write(tmp_path / "cola.tsv", COLA)
    texts = _read(tmp_path, "cola.tsv", header=False, text_column="3")
    assert texts[0].startswith("Our friends")  # the first row is data, not a header
    assert texts[1:] == [
        "They drank the pub.",
        "A chuva parou antes do jantar.",
        'He said "hi there.',
    ]
    _write(tmp_path / "plain.csv", "first text,1\n\nsecond text,0\n")
    assert _read(tmp_path, "plain.csv", header=False, text_column="0") == [
        "first text",
        "second text",
    ]


def test_headerless_corpus_with_a_named_column_says_columns_are_positions(
    tmp_path: Path,
) -> None:
    _write(tmp_path / "cola.tsv", COLA)
    with pytest.raises(LmopsError) as err:
        _read(tmp_path, "cola.tsv", header=False, text_column="sentence")
    message = str(err.value)
    assert "data.corpus_text_column" in message and "data.corpus_header is false" in message
    assert "\n" not in message


def test_header_row_that_looks_like_data_hints_at_the_header_param(tmp_path: Path) -> None:
    _write(tmp_path / "cola.tsv", COLA)
    with pytest.raises(LmopsError) as err:
        _read(tmp_path, "cola.tsv", text_column="sentence")
    message = str(err.value)
    assert "looks like data" in message and "data.corpus_header: false" in message
    assert "\n" not in message and len(message) < 400
    with pytest.raises(LmopsError) as err:
        read_labeled(tmp_path / "cola.tsv", "sentence", "label")
    message = str(err.value)
    assert "looks like data" in message and "data.labeled_header: false" in message
    assert "\n" not in message


def test_real_header_with_a_wrong_column_gets_no_header_hint(tmp_path: Path) -> None:
    _write(tmp_path / "l.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(LmopsError) as err:
        read_labeled(tmp_path / "l.tsv", "text", "label")
    assert "data.labeled_text_column" in str(err.value)
    assert "labeled_header" not in str(err.value) and "looks like data" not in str(err.value)


def test_headerless_labeled_tsv(tmp_path: Path) -> None:
    _write(tmp_path / "train.tsv", COLA)
    _write(tmp_path / "dev.tsv", "cj99\t0\t*\tThe more the book.\ncj99\t1\t\tA fine one.\n")
    data = DataConfig(
        source="local",
        corpus_paths=["c.txt"],
        labeled_train_path="train.tsv",
        labeled_test_path="dev.tsv",
        labeled_text_column="3",
        labeled_label_column="1",
        labeled_header=False,
    )
    labeled = load_labeled(data, tmp_path)
    assert labeled.train == [
        ("Our friends won't buy this analysis, let alone the next one we propose.", "1"),
        ("They drank the pub.", "0"),
        ("A chuva parou antes do jantar.", "1"),
        ('He said "hi there.', "1"),
    ]
    assert labeled.test == [("The more the book.", "0"), ("A fine one.", "1")]
    # the same files with a header expected: the hint, before anything is trained
    with pytest.raises(LmopsError, match="data.labeled_header: false"):
        load_labeled(replace(data, labeled_header=True), tmp_path)


def test_headerless_csv_for_sft(tmp_path: Path) -> None:
    _write(tmp_path / "sft.csv", 'What is 2+2?,4\n"Say hi, please",hi\n')
    data = DataConfig(
        source="local",
        corpus_paths=["c.txt"],
        labeled_train_path="sft.csv",
        labeled_prompt_column="0",
        labeled_response_column="1",
        labeled_header=False,
    )
    labeled = load_labeled(data, tmp_path, task="sft")
    assert labeled.train == [("What is 2+2?", "4"), ("Say hi, please", "hi")]


def test_positions_are_written_as_plain_numbers_in_params(tmp_path: Path) -> None:
    # params.yaml says `labeled_text_column: 3`: a YAML int, read as the column named "3"
    _write(tmp_path / "train.tsv", COLA)
    params = load_params(
        REPO / "params.yaml",
        [
            "data.source=local",
            "data.corpus_paths=[cola.tsv]",
            "data.corpus_header=false",
            "data.corpus_text_column=3",
            "data.labeled_train_path=train.tsv",
            "data.labeled_header=false",
            "data.labeled_text_column=3",
            "data.labeled_label_column=1",
        ],
    )
    assert params.data.corpus_text_column == "3"
    assert len(load_labeled(params.data, tmp_path).train) == 4
