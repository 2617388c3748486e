"""Stages that do not train never import the training stack (issue #16).

``import lightning`` alone costs seconds and hundreds of MB at start-up; a stage that only reads
files, scores a saved model or talks to MLflow must not pay it. Each stage module is imported in
a fresh interpreter (the way ``dvc repro`` starts it) and its ``sys.modules`` inspected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# stage module -> top-level packages it must not import
FORBIDDEN = {
    "pipeline.clean": {"lightning", "torch", "torchmetrics"},
    "pipeline.tokenize_corpus": {"lightning", "torch", "torchmetrics"},
    "pipeline.evaluate": {"lightning"},
    "pipeline.export": {"lightning", "torch"},
    "pipeline.register": {"lightning", "torch"},
    "lmops.cli": {"lightning", "torch", "mlflow"},
}


def imported_packages(module: str) -> set[str]:
    """Top-level names in ``sys.modules`` after importing ``module`` in a new interpreter."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_stage_does_not_import_the_training_stack(module: str) -> None:
    leaked = FORBIDDEN[module] & imported_packages(module)
    assert not leaked, f"{module} imports {sorted(leaked)}"


def test_training_stages_do_import_lightning() -> None:
    """The check itself sees an import when there is one (the pretrain stage trains)."""
    assert "lightning" in imported_packages("pipeline.pretrain")
