"""Stages that do not train never import the training stack (issue #16).

``import lightning`` alone costs seconds and hundreds of MB at start-up; a stage that only reads
files, scores a saved model or talks to MLflow must not pay it. Each stage module is imported in
a fresh interpreter (the way ``dvc repro`` starts it) and its ``sys.modules`` inspected.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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


@functools.cache
def imported(module: str) -> dict[str, list[str]]:
    """What importing ``module`` in a new interpreter loads: ``packages`` (top-level names in
    ``sys.modules``) and ``files`` (repo-relative files of the ``lmops`` modules)."""
    code = (
        f"import sys, json; sys.path.insert(0, {str(ROOT)!r}); import {module}; "
        "mods = list(sys.modules.items()); "
        "print(json.dumps({'packages': sorted({n.split('.')[0] for n, _ in mods}), "
        "'files': sorted(m.__file__ for n, m in mods "
        "if n.split('.')[0] == 'lmops' and getattr(m, '__file__', None))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def imported_packages(module: str) -> set[str]:
    return set(imported(module)["packages"])


def lmops_files(module: str) -> list[str]:
    return [Path(f).resolve().relative_to(ROOT).as_posix() for f in imported(module)["files"]]


@pytest.mark.parametrize("module", sorted(FORBIDDEN))
def test_stage_does_not_import_the_training_stack(module: str) -> None:
    leaked = FORBIDDEN[module] & imported_packages(module)
    assert not leaked, f"{module} imports {sorted(leaked)}"


def test_training_stages_do_import_lightning() -> None:
    """The check itself sees an import when there is one (the pretrain stage trains)."""
    assert "lightning" in imported_packages("pipeline.pretrain")


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_the_code_it_imports(stage: str) -> None:
    """A stage re-runs when its code changes only if ``dvc.yaml`` lists that code: every
    ``lmops`` module the stage script imports is a dep (itself or a folder above it);
    ``__init__.py`` files hold docstrings only."""
    spec = STAGES[stage]
    script = spec["cmd"].split()[-1]
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    assert script in deps
    module = script.removesuffix(".py").replace("/", ".")
    missing = [
        f
        for f in lmops_files(module)
        if not f.endswith("/__init__.py")
        and not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)
    ]
    assert not missing, f"dvc.yaml stage {stage!r} does not list {missing}"
