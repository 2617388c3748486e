"""Atomic writes: a failure inside leaves the previous output untouched and no temp files."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmops.io import (
    atomic_dir,
    atomic_write_json,
    read_json,
    read_jsonl,
    sha256_path,
    write_csv,
    write_jsonl,
)


def test_atomic_dir_replaces_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_dir_keeps_old_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "half.txt").write_text("half")
        raise RuntimeError("crash")
    assert (target / "old.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_jsonl_roundtrip_keeps_unicode(tmp_path: Path) -> None:
    rows = [{"id": "a", "text": "naïve café 日本語 🙂"}, {"id": "b", "text": "x\ny"}]
    assert write_jsonl(tmp_path / "r.jsonl", rows) == 2
    assert list(read_jsonl(tmp_path / "r.jsonl")) == rows


def test_failed_jsonl_write_keeps_previous(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    write_jsonl(path, [{"a": 1}])

    def broken():
        yield {"a": 2}
        raise ValueError("boom")

    with pytest.raises(ValueError):
        write_jsonl(path, broken())
    assert list(read_jsonl(path)) == [{"a": 1}]
    assert [p.name for p in tmp_path.iterdir()] == ["r.jsonl"]


def test_hash_changes_with_content_and_name(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_text("1")
    h1 = sha256_path(d)
    (d / "a").write_text("2")
    h2 = sha256_path(d)
    (d / "a").rename(d / "b")
    assert len({h1, h2, sha256_path(d)}) == 3


def test_json_and_csv(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "m.json", {"b": 1.5})
    assert read_json(tmp_path / "m.json") == {"b": 1.5}
    write_csv(tmp_path / "h.csv", [{"step": 1, "train/loss": 2.0}, {"step": 2, "val/loss": 1.0}])
    assert (tmp_path / "h.csv").read_text().splitlines() == [
        "step,train/loss,val/loss",
        "1,2.0,",
        "2,,1.0",
    ]
