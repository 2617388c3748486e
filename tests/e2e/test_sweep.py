"""A sweep the DVC way, compared in MLflow: two queued experiments (``dvc exp run --queue -S``),
run from the queue, must land as two complete, distinguishable pipelines in the project's own
MLflow store.

DVC runs queued experiments in clones under ``.dvc/tmp/exps/`` (deleted afterwards) with
``DVC_ROOT`` naming the repo they were queued from; the stages must read the clone's params
(with the ``-S`` values) and log to the repo's ``mlflow.db``, tagged with the experiment's name
(``lmops.dvc_exp``). Only up to pretrain (``dvc exp run ... pretrain``) and tiny: what is under
test is where the runs land and how they are told apart, not training.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .project import make_project, run

pytestmark = pytest.mark.e2e

SWEEP_PARAMS = {
    "data": {"sample": {"n_documents": 200, "n_labeled_train": 200, "n_labeled_test": 100}},
    "pretrain": {"max_steps": 4, "val_every": 2, "val_batches": 2, "warmup_steps": 1},
}
LRS = ("0.001", "0.004")
UPSTREAM = {"pretrain": "tokenize", "tokenize": "clean"}  # the lineage tags to follow


def experiments_by_lr(root: Path) -> dict[str, str]:
    """``dvc exp show --json``: experiment name -> its pretrain.lr, as DVC records them."""
    shown = json.loads(run(["dvc", "exp", "show", "--json"], root).stdout)
    names: dict[str, str] = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp["revs"]:
                params = rev["data"]["params"]["params.yaml"]["data"]
                names[rev["name"]] = str(params["pretrain"]["lr"])
    return names


def lineage(client: Any, pretrain_run: Any) -> dict[str, Any]:
    """The stage runs one pretrain run was built from, found through its upstream run ids."""
    chain = {"pretrain": pretrain_run}
    stage = "pretrain"
    while stage in UPSTREAM:
        upstream = UPSTREAM[stage]
        chain[upstream] = client.get_run(
            chain[stage].data.tags[f"lmops.upstream.{upstream}.run_id"]
        )
        stage = upstream
    return chain


def test_queued_sweep_lands_as_two_pipelines_in_mlflow(tmp_path: Path) -> None:
    import mlflow

    root = make_project(tmp_path / "proj", SWEEP_PARAMS)
    for lr in LRS:
        run(["dvc", "exp", "run", "--queue", "-S", f"pretrain.lr={lr}", "pretrain"], root)
    # the blocking form of `dvc queue start` + waiting; it exits 0 even when an experiment
    # failed, so what counts is what DVC and MLflow hold afterwards
    done = run(["dvc", "exp", "run", "--run-all"], root)
    output = done.stdout + done.stderr

    exps = experiments_by_lr(root)
    assert sorted(map(float, exps.values())) == sorted(map(float, LRS)), f"{exps}\n{output[-3000:]}"
    assert not (root / ".lmops").exists(), "a queued stage wrote into the workspace"

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lmops")
    assert experiment is not None, f"no MLflow runs in the repo's store:\n{output[-3000:]}"
    assert experiment.artifact_location.startswith((root / "mlartifacts").as_uri())
    pipelines = {}
    for name, lr in exps.items():
        tagged = client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`lmops.dvc_exp` = '{name}'"
        )
        pretrain = [r for r in tagged if r.data.tags["lmops.stage"] == "pretrain"]
        assert len(pretrain) == 1, (name, [r.info.run_name for r in tagged])
        assert float(pretrain[0].data.params["pretrain.lr"]) == float(lr)
        assert pretrain[0].info.run_name == f"pretrain-{name}"  # the same commit: named apart
        pipelines[name] = lineage(client, pretrain[0])

    assert len(pipelines) == 2
    for name, chain in pipelines.items():
        assert sorted(chain) == ["clean", "pretrain", "tokenize"], name
        assert all(r.info.status == "FINISHED" for r in chain.values()), name
        assert "final/val_loss" in chain["pretrain"].data.metrics, name
        # runs the experiment ran itself carry its name; stages DVC restored from its run cache
        # (unchanged by the sweep) are the runs of the experiment that ran them first
        assert {r.data.tags.get("lmops.dvc_exp") for r in chain.values()} <= set(pipelines)
    first, second = pipelines.values()
    assert first["pretrain"].info.run_id != second["pretrain"].info.run_id
    assert (
        first["pretrain"].data.metrics["final/val_loss"]
        != second["pretrain"].data.metrics["final/val_loss"]
    )
