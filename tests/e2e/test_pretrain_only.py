"""`finetune.task: none`: a pipeline for people who only pretrain. Every stage runs; evaluate,
export and register handle the LM alone, and the folders that would hold a fine-tuned model
say why they are empty."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .project import make_project, run

pytestmark = pytest.mark.e2e


def test_pretrain_only_pipeline(tmp_path: Path) -> None:
    root = make_project(tmp_path / "proj", {"finetune": {"task": "none"}})
    run(["dvc", "repro"], root)
    skipped = {
        folder: json.loads((root / folder / "skipped.json").read_text())["skipped"]
        for folder in ("data/clean/labeled", "models/finetune/model", "models/export/finetuned")
    }
    assert "finetune.task is none" in skipped["data/clean/labeled"]
    assert "finetune.task is none" in skipped["models/finetune/model"]
    assert "holds no model" in skipped["models/export/finetuned"]
    metrics = json.loads((root / "reports/eval/metrics.json").read_text())
    assert set(metrics) == {"val/loss", "val/ppl"}
    registered = json.loads((root / "models/registry/registered.json").read_text())
    assert set(registered) == {"lm"}
    assert registered["lm"]["name"] == "lmops-classifier-lm"
    assert (root / "models/export/lm/pyfunc/MLmodel").is_file()
