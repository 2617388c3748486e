"""A resumed stage continues the MLflow run of the interrupted attempt (one run per stage run)."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lmops.config import Params
from lmops.tracking.runs import log_new_params, stage_run
from tests.unit.test_runs import repo  # noqa: F401  (the fixture: git repo + sqlite store)


class Killed(Exception):
    pass


def pretrain_runs() -> list:
    return MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("lmops").experiment_id],
        filter_string="tags.`lmops.stage` = 'pretrain'",
    )


def test_resumed_stage_reattaches_to_the_interrupted_run(repo: Path) -> None:  # noqa: F811
    params = Params()
    with pytest.raises(Killed), stage_run("pretrain", params, root=repo) as run:
        first = run.info.run_id
        log_new_params({"pretrain.accumulate": 2})
        mlflow.log_metric("train/loss", 3.0, step=1)
        raise Killed

    with stage_run("pretrain", params, root=repo, resume_run_id=first) as run:
        assert run.info.run_id == first
        # a param that differs on resume (another device count) keeps its first value
        log_new_params({"pretrain.accumulate": 4, "pretrain.n_params": 10})
        mlflow.log_metric("train/loss", 2.0, step=2)

    (only,) = pretrain_runs()
    assert only.info.run_id == first and only.info.status == "FINISHED"
    assert only.data.params["pretrain.accumulate"] == "2"
    assert only.data.params["pretrain.n_params"] == "10"
    assert only.data.params["pretrain.lr"] == str(params.pretrain.lr)
    history = MlflowClient().get_metric_history(first, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 3.0), (2, 2.0)]


def test_unknown_run_id_opens_a_new_run(repo: Path, caplog) -> None:  # noqa: F811
    missing = "0" * 32
    with (
        caplog.at_level(logging.INFO),
        stage_run("pretrain", Params(), root=repo, resume_run_id=missing) as run,
    ):
        assert run.info.run_id != missing
    assert "starting a new run" in caplog.text
    assert len(pretrain_runs()) == 1
