"""Stage runs: absolute tracking URI, experiment artifacts under the root, lineage tags, flat params."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lmops.config import LmopsError, Params
from lmops.io import sha256_path
from lmops.tracking.runs import (
    ensure_experiment,
    finish_stage,
    git_sha,
    prefixed,
    read_run_info,
    stage_run,
    tracking_uri,
    write_run_info,
)

_TEMPLATE_DB: list[Path] = []


def sqlite_store(folder: Path) -> str:
    """``sqlite:///<folder>/mlflow.db``, a copy of a database MLflow initialized once per process.

    Creating MLflow's tables takes seconds; copying an initialized file takes milliseconds.
    """
    if not _TEMPLATE_DB:
        tmp = Path(tempfile.mkdtemp(prefix="lmops-test-mlflow-"))
        atexit.register(shutil.rmtree, tmp, True)
        MlflowClient(f"sqlite:///{tmp / 'mlflow.db'}").search_experiments()
        _TEMPLATE_DB.append(tmp / "mlflow.db")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE_DB[0], folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


def git(root: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t")
    env["GIT_COMMITTER_EMAIL"] = "t@t"
    out = subprocess.run(
        ["git", "-C", str(root), *args], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repo with one commit; the store is its mlflow.db; the cwd is elsewhere."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    (root / "params.yaml").write_text("{}\n")
    (root / ".gitignore").write_text("mlflow.db\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "init")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", sqlite_store(root))
    yield root
    mlflow.set_tracking_uri(None)
    assert list(cwd.iterdir()) == []  # nothing (mlruns, mlflow.db, artifacts) landed in the cwd


def test_tracking_uri_env_wins_else_absolute_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5999"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert tracking_uri(Path("sub")) == f"sqlite:///{tmp_path.resolve()}/sub/mlflow.db"


def test_ensure_experiment_puts_artifacts_under_root(repo: Path) -> None:
    exp_id = ensure_experiment("demo", repo)
    assert ensure_experiment("demo", repo) == exp_id
    exp = MlflowClient(tracking_uri(repo)).get_experiment(exp_id)
    assert exp.artifact_location == (repo / "mlartifacts" / "demo").as_uri()


def test_git_sha(repo: Path, tmp_path: Path) -> None:
    assert git_sha(repo) == git(repo, "rev-parse", "HEAD")
    assert git_sha(tmp_path / "cwd") is None  # not a repo
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    git(fresh, "init", "-q")
    assert git_sha(fresh) is None  # no commit yet


def test_stage_runs_carry_lineage_tags_and_only_their_params(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DVC_EXP_NAME", "exp-123")
    params = Params()
    params.tracking.experiment = "lineage"
    data = repo / "data" / "clean"
    data.mkdir(parents=True)
    (data / "train.jsonl").write_text('{"id": "1", "text": "hello"}\n')
    sha = git(repo, "rev-parse", "HEAD")

    with stage_run("clean", params, inputs={"raw": data}, out_dir=data, root=repo) as first:
        mlflow.log_metric("docs", 1.0)
    info = read_run_info(data)
    assert info is not None and info["run_id"] == first.info.run_id and info["stage"] == "clean"

    tokens = repo / "data" / "tokens"
    tokens.mkdir()
    tokens_hash = sha256_path(tokens)  # before run.json lands there
    with stage_run(
        "pretrain",
        params,
        inputs={"tokens": tokens, "corpus": data / "train.jsonl"},
        upstream={"clean": data, "tokens": tokens},  # tokens has no run.json: no link, no error
        out_dir=None,
        root=repo,
    ) as second:
        write_run_info(tokens, second)

    client = MlflowClient(tracking_uri(repo))
    r1, r2 = client.get_run(first.info.run_id), client.get_run(second.info.run_id)
    t1, t2 = r1.data.tags, r2.data.tags
    assert t1["lmops.stage"] == "clean" and t2["lmops.stage"] == "pretrain"
    assert t2["mlflow.source.git.commit"] == sha and t2["lmops.git_sha"] == sha
    assert t2["lmops.dvc_exp"] == "exp-123"
    assert t2["mlflow.runName"] == "pretrain-exp-123"  # in a DVC experiment: its name
    assert t2["lmops.input.corpus.sha256"] == sha256_path(data / "train.jsonl")
    assert t2["lmops.input.tokens.sha256"] == tokens_hash
    assert t2["lmops.upstream.clean.run_id"] == r1.info.run_id
    assert "lmops.upstream.tokens.run_id" not in t2
    assert len(t1["lmops.pipeline_id"]) == 32
    assert t2["lmops.pipeline_id"] == t1["lmops.pipeline_id"]  # inherited downstream
    assert read_run_info(tokens)["pipeline_id"] == t1["lmops.pipeline_id"]

    p1, p2 = r1.data.params, r2.data.params
    assert p2["pretrain.model.n_layer"] == str(params.pretrain.model.n_layer)
    assert p2["pretrain.lr"] == str(params.pretrain.lr)
    assert all(k.startswith("pretrain.") for k in p2)  # no hardware, tracking or finetune
    assert {k.split(".")[0] for k in p1} == {"data", "clean"}
    assert p1["data.labeled_train_path"] == "None"
    assert r1.info.experiment_id == r2.info.experiment_id == ensure_experiment("lineage", repo)


def test_two_first_stages_get_different_pipeline_ids(repo: Path) -> None:
    ids = []
    for _ in range(2):
        with stage_run("clean", Params(), root=repo) as run:
            pass
        ids.append(MlflowClient().get_run(run.info.run_id).data.tags["lmops.pipeline_id"])
    assert ids[0] != ids[1]


def test_system_metrics_land_in_the_run_when_asked(repo: Path) -> None:
    params = Params()
    params.tracking.system_metrics_interval = 0.2
    with stage_run("pretrain", params, root=repo, system_metrics=True) as run:
        time.sleep(1.0)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert any(k.startswith("system/cpu_utilization") for k in metrics), sorted(metrics)
    assert any(k.startswith("system/system_memory_usage") for k in metrics)

    params.tracking.system_metrics = False  # the param turns it off
    with stage_run("pretrain", params, root=repo, system_metrics=True) as run:
        time.sleep(0.5)
    metrics = MlflowClient().get_run(run.info.run_id).data.metrics
    assert not any(k.startswith("system/") for k in metrics)


def test_failing_stage_marks_run_failed_and_writes_no_run_json(repo: Path) -> None:
    out = repo / "out"
    with (
        pytest.raises(RuntimeError, match="boom"),
        stage_run("finetune", Params(), out_dir=out, root=repo) as run,
    ):
        raise RuntimeError("boom")
    assert MlflowClient().get_run(run.info.run_id).info.status == "FAILED"
    assert read_run_info(out) is None


def test_missing_input_is_a_one_line_error(repo: Path) -> None:
    with (
        pytest.raises(LmopsError, match="input tokens .* is missing"),
        stage_run("pretrain", Params(), inputs={"tokens": repo / "nope"}, root=repo),
    ):
        pass


def test_read_run_info_on_bad_json(tmp_path: Path) -> None:
    assert read_run_info(tmp_path) is None
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(LmopsError, match="not valid JSON"):
        read_run_info(tmp_path)


def test_finish_stage_writes_metrics_logs_them_and_the_artifacts(repo: Path) -> None:
    out = repo / "out"
    out.mkdir()
    (out / "report.md").write_text("# report\n")
    metrics = {"docs_in": 5, "dropped": {"length": 2}}
    with stage_run("clean", Params(), out_dir=out, root=repo) as run:
        finish_stage(
            out, metrics=metrics, logged=prefixed(metrics, "clean"), artifacts=[out / "report.md"]
        )
    assert json.loads((out / "metrics.json").read_text()) == metrics
    logged = MlflowClient().get_run(run.info.run_id).data.metrics
    assert logged == {"clean/docs_in": 5.0, "clean/dropped.length": 2.0}
    names = [a.path for a in MlflowClient().list_artifacts(run.info.run_id)]
    assert names == ["report.md"]
    # run.json comes from stage_run alone, after the body, naming this run
    assert read_run_info(out)["run_id"] == run.info.run_id


def test_training_inputs_are_mlflow_datasets_with_their_digest(repo: Path) -> None:
    tokens = repo / "data" / "tokens"
    tokens.mkdir(parents=True)
    (tokens / "train.bin").write_bytes(b"\x01\x02" * 64)
    (tokens / "meta.json").write_text('{"dtype": "uint16"}')
    model = repo / "models" / "pretrain" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    inputs = {"tokens": tokens, "pretrained": model}
    with stage_run(
        "finetune", Params(), inputs=inputs, datasets={"tokens": "training"}, root=repo
    ) as run:
        pass
    sha = sha256_path(tokens)
    got = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert len(got) == 1  # the model input is not a dataset
    dataset, input_tags = got[0].dataset, {t.key: t.value for t in got[0].tags}
    assert (dataset.name, dataset.digest) == ("data/tokens", sha[:16])
    assert json.loads(dataset.source) == {"uri": str(tokens.resolve())}
    assert dataset.source_type == "local"
    assert input_tags == {"mlflow.data.context": "training", "lmops.sha256": sha}

    # a resumed run logs its dataset again: still one input
    with stage_run(
        "finetune",
        Params(),
        inputs=inputs,
        datasets={"tokens": "training"},
        root=repo,
        resume_run_id=run.info.run_id,
    ):
        pass
    assert len(MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs) == 1
    with (
        pytest.raises(ValueError, match="not among its inputs"),
        stage_run("pretrain", Params(), datasets={"tokens": "training"}, root=repo),
    ):
        pass
