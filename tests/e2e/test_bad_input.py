"""Bad input ends a stage with one clear line and a non-zero exit, before any work or output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .project import make_project, run


def _clean(root: Path):
    return run([sys.executable, "pipeline/clean.py"], root, check=False)


def _error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"pretrain": {"model": {"n_layr": 3}}}, "unknown key 'pretrain.model.n_layr'"),
        ({"finetune": {"max_steps": "many"}}, "wrong type for 'finetune.max_steps'"),
        (
            {"pretrain": {"model": {"n_embd": 100, "n_head": 3}}},
            "divisible by pretrain.model.n_head",
        ),
    ],
)
def test_bad_params_fail_with_one_line(tmp_path: Path, params: dict, expected: str) -> None:
    root = make_project(tmp_path / "p", params, git=False)
    line = _error_line(_clean(root))
    assert expected in line
    assert not (root / "data" / "clean").exists()  # nothing was produced


def test_corpus_empty_after_cleaning(tmp_path: Path) -> None:
    raw = tmp_path / "p" / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "tiny.txt").write_text("short\n\nalso short\n\n   \n")
    (raw / "labels.tsv").write_text(
        "text\tlabel\n" + "".join(f"good film {i}\t1\nbad film {i}\t0\n" for i in range(30))
    )
    root = make_project(
        tmp_path / "p",
        {
            "data": {
                "source": "local",
                "corpus_paths": ["data/raw/tiny.txt"],
                "labeled_train_path": "data/raw/labels.tsv",
            },
            "clean": {"min_chars": 50},
        },
        git=False,
    )
    line = _error_line(_clean(root))
    assert "empty after cleaning" in line and "clean.min_chars" in line
    assert not (root / "data" / "clean" / "corpus").exists()
