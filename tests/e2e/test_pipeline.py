"""`dvc repro` on the built-in sample, tiny params: every stage, MLflow runs, registry, promotion."""

from __future__ import annotations

import csv
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .project import env, make_project, run, write_params

pytestmark = pytest.mark.e2e


def mlflow_runs(root: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    exps = client.search_experiments()
    return client.search_runs([e.experiment_id for e in exps], max_results=1000)


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = make_project(tmp_path_factory.mktemp("e2e") / "proj")
    proc = run(["dvc", "repro"], root)
    return root, proc.stdout + proc.stderr


def test_every_stage_runs_and_writes_its_outputs(project: tuple[Path, str]) -> None:
    root, output = project
    assert stages_run(output) == [
        "check",
        "clean",
        "tokenize",
        "pretrain",
        "finetune",
        "evaluate",
        "export",
        "register",
    ]
    for rel in [
        "data/clean/corpus/train.jsonl",
        "data/clean/labeled/test.jsonl",
        "data/tokens/tokenizer.json",
        "data/tokens/train.bin",
        "models/pretrain/model/model.safetensors",
        "models/finetune/model/config.json",
        "reports/eval/figures/confusion.png",
        "models/export/finetuned/bundle/tokenizer.json",
        "models/export/finetuned/pyfunc/MLmodel",
        "models/export/lm/pyfunc/MLmodel",
        "models/registry/registered.json",
    ]:
        assert (root / rel).exists(), rel


def test_metrics_are_finite_and_learning_happened(project: tuple[Path, str]) -> None:
    root, _ = project
    ev = json.loads((root / "reports/eval/metrics.json").read_text())
    assert 0.0 <= ev["test/acc"] <= 1.0 and 0.0 <= ev["test/f1"] <= 1.0
    assert math.isfinite(ev["val/ppl"]) and 1.0 < ev["val/ppl"] < 384 * 2

    with open(root / "models/pretrain/history.csv") as fh:
        val = [float(r["val/loss"]) for r in csv.DictReader(fh) if r.get("val/loss")]
    assert len(val) >= 2 and val[-1] < val[0], f"val loss did not fall: {val}"

    ft = json.loads((root / "models/finetune/metrics.json").read_text())
    assert math.isfinite(ft["val/loss"]) and 0.0 <= ft["val/acc"] <= 1.0

    dvc = run(["dvc", "metrics", "show", "--json"], root)
    assert "test/acc" in dvc.stdout


def test_one_run_per_stage_with_lineage(project: tuple[Path, str]) -> None:
    root, _ = project
    runs = mlflow_runs(root)
    by_stage = {r.data.tags["lmops.stage"]: r for r in runs}
    assert sorted(by_stage) == sorted(
        ["clean", "tokenize", "pretrain", "finetune", "evaluate", "export", "register"]
    )
    assert len(runs) == 7
    assert len({r.data.tags["lmops.pipeline_id"] for r in runs}) == 1
    assert (
        by_stage["tokenize"].data.tags["lmops.upstream.clean.run_id"]
        == by_stage["clean"].info.run_id
    )
    assert by_stage["pretrain"].data.params["pretrain.model.n_layer"] == "2"
    history = mlflow_client(root).get_metric_history(by_stage["pretrain"].info.run_id, "train/loss")
    # per-step metrics, not just a final figure, every tracking.log_every_n_steps (2) steps
    steps = sorted(m.step for m in history)
    assert len(steps) >= 40 and set(np.diff(steps)) == {2}, steps
    pretrain_metrics = by_stage["pretrain"].data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in pretrain_metrics)


def mlflow_client(root: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")


def test_registry_serves_and_promotes(project: tuple[Path, str]) -> None:
    root, _ = project
    client = mlflow_client(root)
    version = client.get_model_version_by_alias("lmops-classifier", "challenger")
    assert int(version.version) == 1

    # a fresh process, as a serving process would load it
    code = (
        "import json, sys, mlflow\n"
        "mlflow.set_tracking_uri('sqlite:///' + sys.argv[1])\n"
        "model = mlflow.pyfunc.load_model('models:/lmops-classifier@challenger')\n"
        "print(json.dumps(model.predict(['the food was not good', 'a wonderful, friendly hotel'])))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(root / "mlflow.db")],
        cwd=root,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(answers) == 2
    for answer in answers:
        assert answer["label"] in ("negative", "positive")
        assert 0.5 <= answer["probability"] <= 1.0

    lmops = str(Path(sys.executable).parent / "lmops")
    proc = run([lmops, "promote", "lmops-classifier"], root)
    champion = client.get_model_version_by_alias("lmops-classifier", "champion")
    assert int(champion.version) == 1


def test_nothing_changed_runs_nothing_then_finetune_param_reruns_downstream(
    project: tuple[Path, str],
) -> None:
    root, _ = project
    before = len(mlflow_runs(root))
    proc = run(["dvc", "repro"], root)
    assert stages_run(proc.stdout) == []
    assert len(mlflow_runs(root)) == before

    params = __import__("yaml").safe_load((root / "params.yaml").read_text())
    write_params(root, {"finetune": {"lr": params["finetune"]["lr"] * 2}})
    proc = run(["dvc", "repro"], root)
    # the check stage re-runs on any params change; its out does not change, so nothing else
    assert stages_run(proc.stdout) == ["check", "finetune", "evaluate", "export", "register"]
    assert len(mlflow_runs(root)) == before + 4
    versions = mlflow_client(root).search_model_versions("name='lmops-classifier'")
    assert len(versions) == 2
    lm_versions = mlflow_client(root).search_model_versions("name='lmops-classifier-lm'")
    assert len(lm_versions) == 1  # the LM export did not change: no new version
