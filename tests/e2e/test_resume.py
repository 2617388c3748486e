"""A pretrain stage killed with SIGKILL resumes from its last checkpoint when it runs again (here
through ``dvc repro``), continues the same MLflow run, and ends with the very model an
uninterrupted run writes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.project import env, make_project, run

pytestmark = pytest.mark.e2e

STEPS = 80  # tests/e2e/project.py TINY_PARAMS


def kill_after_first_checkpoint(project: Path) -> tuple[int, str]:
    """Start the stage, SIGKILL it as soon as a checkpoint is complete; (step, MLflow run id)."""
    store = project / ".lmops" / "pretrain" / "checkpoints"
    proc = subprocess.Popen(
        [sys.executable, "pipeline/pretrain.py"],
        cwd=project,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    try:
        while not list(store.glob("*/latest.json")):
            assert proc.poll() is None, f"stage ended before a checkpoint: {proc.stderr.read()}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    (latest,) = store.glob("*/latest.json")
    step = json.loads(latest.read_text())["step"]
    run_id = json.loads((latest.parent / "run.json").read_text())["run_id"]
    return step, run_id


def pretrain_runs(project: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(project / "mlflow.db") as db:
        return db.execute(
            "SELECT runs.run_uuid, runs.status FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid"
            " WHERE tags.key = 'lmops.stage' AND tags.value = 'pretrain'"
        ).fetchall()


def logged_steps(project: Path, run_id: str, metric: str) -> set[int]:
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute(
            "SELECT step FROM metrics WHERE run_uuid = ? AND key = ?", (run_id, metric)
        ).fetchall()
    return {step for (step,) in rows}


def test_killed_pretrain_resumes_in_the_same_run_and_ends_like_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    # every step logged: the test checks that none is missing from the one MLflow run
    project = make_project(
        tmp_path / "p",
        {"hardware": {"checkpoint_every": 10}, "tracking": {"log_every_n_steps": 1}},
    )
    run(["dvc", "repro", "tokenize"], project)

    step, run_id = kill_after_first_checkpoint(project)
    assert 10 <= step < STEPS
    assert not (project / "models" / "pretrain" / "model").exists()

    resumed = run(["dvc", "repro", "pretrain"], project)
    log = resumed.stdout + resumed.stderr
    assert f"resuming from checkpoint at step {step}" in log
    assert f"reattached to MLflow run {run_id}" in log

    out = project / "models" / "pretrain"
    assert (out / "model" / "model.safetensors").is_file()
    assert json.loads((out / "metrics.json").read_text())["train/steps"] == STEPS
    assert json.loads((out / "run.json").read_text())["run_id"] == run_id
    assert pretrain_runs(project) == [(run_id, "FINISHED")]  # one run, not one per attempt
    # the losses from before the kill and every one after the resume in the one run (Lightning
    # logs optimizer step n as MLflow step n - 1; the last few before a SIGKILL may be lost)
    logged = logged_steps(project, run_id, "train/loss")
    assert 0 in logged and set(range(step, STEPS)) <= logged
    assert not list((project / ".lmops" / "pretrain").glob("checkpoints/*"))  # cleaned up

    # the same stage uninterrupted writes byte-identical weights
    resumed_weights = (out / "model" / "model.safetensors").read_bytes()
    run([sys.executable, "pipeline/pretrain.py"], project)
    assert (out / "model" / "model.safetensors").read_bytes() == resumed_weights
