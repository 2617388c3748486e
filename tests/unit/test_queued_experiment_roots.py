"""Where a stage's files and runs go inside a queued DVC experiment.

``dvc exp run --queue`` / ``--temp`` runs the stages in a clone under
``<repo>/.dvc/tmp/exps/<tmp>/`` and sets ``DVC_ROOT`` to ``<repo>``: params and outs must be the
clone's (else the ``-S`` values are lost and the outs land in the user's workspace), the MLflow
store the repo's (else the runs vanish with the clone). The e2e proof is tests/e2e/test_sweep.py;
these pin the rule in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lmops.config import repo_root
from lmops.tracking.runs import store_root, tracking_uri


@pytest.fixture
def queued(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A repo and a DVC experiment clone inside it, the clone the current folder."""
    repo = tmp_path / "repo"
    clone = repo / ".dvc" / "tmp" / "exps" / "tmpabc123"
    for folder in (repo, clone):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.setenv("DVC_ROOT", str(repo))
    monkeypatch.setenv("DVC_EXP_NAME", "brisk-lr")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(clone)
    return repo.resolve(), clone.resolve()


def test_a_queued_stage_works_in_its_clone(queued: tuple[Path, Path]) -> None:
    _, clone = queued
    assert repo_root() == clone


def test_a_queued_stage_tracks_into_the_repo_it_was_queued_from(
    queued: tuple[Path, Path],
) -> None:
    repo, clone = queued
    assert store_root(clone) == repo
    assert tracking_uri(clone) == f"sqlite:///{repo / 'mlflow.db'}"


def test_outside_an_experiment_clone_dvc_root_rules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert repo_root() == tmp_path.resolve()
    assert store_root() == tmp_path.resolve()
    assert tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
