"""Registry: idempotent registration by export hash, guarded promotion, rollback by alias swap."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lmops.config import LmopsError
from lmops.export.pyfunc import log_pyfunc, save_pyfunc
from lmops.tracking.registry import (
    list_models,
    list_versions,
    promote,
    register_model,
    rollback,
)
from tests.unit.test_bundle import LABELS, make_classifier_bundle, make_lm_bundle
from tests.unit.test_runs import sqlite_store


@pytest.fixture(scope="module")
def pyfunc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pyfunc")
    out = root / "pyfunc"
    save_pyfunc(make_classifier_bundle(root), out)
    return out


@pytest.fixture(scope="module")
def lm_pyfunc_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lm")
    out = root / "pyfunc"
    save_pyfunc(make_lm_bundle(root), out, max_new_tokens=3)
    return out


@pytest.fixture
def run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh store with one experiment (artifacts under tmp_path) and one finished run."""
    uri = sqlite_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient()
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    client.set_terminated(run.info.run_id)
    yield run.info.run_id
    mlflow.set_tracking_uri(None)


def reg(
    source: Path | str,
    run_id: str,
    export_hash: str,
    acc: float,
    name: str = "clf",
    metric: str = "test/acc",
    higher: bool = True,
) -> int:
    return register_model(
        source,
        name,
        export_hash=export_hash,
        metrics={"test/acc": acc, "val/ppl": 10.0 - acc},
        run_id=run_id,
        promote_metric=metric,
        higher_is_better=higher,
    )


def aliases(name: str = "clf") -> dict[str, int]:
    return {k: int(v) for k, v in MlflowClient().get_registered_model(name).aliases.items()}


def test_register_logs_the_folder_to_the_run_and_is_idempotent(
    pyfunc_dir: Path, run_id: str, tmp_path: Path
) -> None:
    assert reg(pyfunc_dir, run_id, "h1", 0.8) == 1
    client = MlflowClient()
    mv = client.get_model_version("clf", "1")
    assert mv.run_id == run_id
    assert mv.source.startswith((tmp_path / "artifacts").as_uri())  # the run's store, not the dir
    assert mv.tags["lmops.export_hash"] == "h1"
    assert float(mv.tags["lmops.metric.test/acc"]) == 0.8
    assert mv.tags["lmops.promote_metric"] == "test/acc"
    assert mv.tags["lmops.higher_is_better"] == "true"
    assert aliases() == {"challenger": 1}

    # the same export again: no new version; its metric tags follow the latest evaluation
    assert reg(pyfunc_dir, run_id, "h1", 0.85) == 1
    assert len(client.search_model_versions("name='clf'")) == 1
    assert float(client.get_model_version("clf", "1").tags["lmops.metric.test/acc"]) == 0.85

    assert reg(pyfunc_dir, run_id, "h2", 0.9) == 2
    assert aliases() == {"challenger": 2}

    model = mlflow.pyfunc.load_model("models:/clf@challenger")
    answers = model.predict(["a good film", "not good"])
    assert len(answers) == 2 and all(a["label"] in LABELS for a in answers)


def test_two_models_registered_from_one_run_stay_apart(
    pyfunc_dir: Path, lm_pyfunc_dir: Path, run_id: str
) -> None:
    reg(pyfunc_dir, run_id, "same-hash", 0.8, name="clf")
    reg(lm_pyfunc_dir, run_id, "same-hash", 0.8, name="clf-lm", metric="val/ppl", higher=False)
    client = MlflowClient()
    assert (
        client.get_model_version("clf", "1").source
        != client.get_model_version("clf-lm", "1").source
    )
    labels = mlflow.pyfunc.load_model("models:/clf@challenger").predict(["a good film"])
    assert labels[0]["label"] in LABELS
    text = mlflow.pyfunc.load_model("models:/clf-lm@challenger").predict(["the cat"])
    assert isinstance(text, list) and isinstance(text[0], str)


def test_register_a_logged_model_uri(pyfunc_dir: Path, run_id: str) -> None:
    bundle = next(pyfunc_dir.glob("artifacts/*"))
    with mlflow.start_run(run_id=run_id):
        info = log_pyfunc(bundle, name="model")
    assert info.model_uri.startswith("models:/")
    assert reg(info.model_uri, run_id, "h-logged", 0.7) == 1
    assert list_versions("clf")[0]["export_hash"] == "h-logged"


def test_promote_refuses_worse_unless_forced_and_rollback_swaps(
    pyfunc_dir: Path, run_id: str
) -> None:
    reg(pyfunc_dir, run_id, "h1", 0.8)
    first = promote("clf")
    assert (first.version, first.previous, first.changed) == (1, None, True)
    assert aliases() == {"champion": 1}  # the challenger became champion

    reg(pyfunc_dir, run_id, "h2", 0.6)
    with pytest.raises(LmopsError) as err:
        promote("clf")
    message = str(err.value)
    assert "\n" not in message and "worse" in message and "--force" in message
    assert aliases() == {"champion": 1, "challenger": 2}  # nothing moved

    forced = promote("clf", force=True)
    assert (forced.version, forced.previous, forced.forced) == (2, 1, True)
    assert aliases() == {"champion": 2, "previous-champion": 1}

    back = rollback("clf")
    assert (back.version, back.previous) == (1, 2)
    assert aliases() == {"champion": 1, "previous-champion": 2}
    assert rollback("clf").version == 2  # a rollback is itself undone by rolling back

    # a better challenger needs no force; a tie promotes too
    reg(pyfunc_dir, run_id, "h3", 0.6)
    result = promote("clf")
    assert (result.version, result.previous) == (3, 2)
    assert "was 2" in result.describe()


def test_promote_again_is_a_no_op_that_keeps_previous(pyfunc_dir: Path, run_id: str) -> None:
    reg(pyfunc_dir, run_id, "h1", 0.8)
    reg(pyfunc_dir, run_id, "h2", 0.9)
    promote("clf", version=1)
    promote("clf", version=2)
    reg(pyfunc_dir, run_id, "h2", 0.9)  # the champion's export registered again
    assert aliases() == {"champion": 2, "previous-champion": 1, "challenger": 2}
    again = promote("clf")
    assert not again.changed and "already champion" in again.describe()
    assert aliases() == {"champion": 2, "previous-champion": 1}


def test_lower_is_better_metric(pyfunc_dir: Path, run_id: str) -> None:
    # val/ppl = 10 - acc in reg(): acc 0.8 -> ppl 9.2, acc 0.9 -> ppl 9.1 (better)
    reg(pyfunc_dir, run_id, "a", 0.8, name="lm", metric="val/ppl", higher=False)
    promote("lm")
    reg(pyfunc_dir, run_id, "b", 0.5, name="lm", metric="val/ppl", higher=False)
    with pytest.raises(LmopsError, match="lower is better"):
        promote("lm")
    # judged on another metric by request: test/acc is worse too (higher is better, by its name)
    with pytest.raises(LmopsError, match="test/acc 0.5 is worse .* higher is better"):
        promote("lm", metric="test/acc")
    # ... unless the caller says lower is better for it
    assert promote("lm", metric="test/acc", higher_is_better=False).version == 2
    rollback("lm")
    reg(pyfunc_dir, run_id, "c", 0.9, name="lm", metric="val/ppl", higher=False)
    assert promote("lm").version == 3


def test_user_errors_are_one_line(pyfunc_dir: Path, run_id: str) -> None:
    with pytest.raises(LmopsError, match="no registered model named 'nope'"):
        promote("nope")
    with pytest.raises(LmopsError, match="not among the evaluated metrics"):
        reg(pyfunc_dir, run_id, "h1", 0.8, metric="test/f1")
    reg(pyfunc_dir, run_id, "h1", 0.8)
    with pytest.raises(LmopsError, match="no 'previous-champion'"):
        rollback("clf")
    promote("clf")
    with pytest.raises(LmopsError, match="no 'challenger'"):
        promote("clf")
    with pytest.raises(LmopsError, match="no version 7"):
        promote("clf", version=7)
    reg(pyfunc_dir, run_id, "h2", 0.9)
    with pytest.raises(LmopsError, match="no metric 'test/bleu'"):
        promote("clf", metric="test/bleu")
    assert promote("clf", metric="test/bleu", force=True).version == 2


def test_list_versions_and_models(pyfunc_dir: Path, run_id: str) -> None:
    reg(pyfunc_dir, run_id, "h1", 0.8)
    reg(pyfunc_dir, run_id, "h2", 0.9)
    promote("clf")
    rows = list_versions("clf")
    assert [r["version"] for r in rows] == [2, 1]
    assert rows[0]["aliases"] == ["champion"] and rows[1]["aliases"] == []
    assert rows[0]["metrics"] == {"test/acc": 0.9, "val/ppl": pytest.approx(9.1)}
    assert rows[0]["export_hash"] == "h2" and rows[0]["run_id"] == run_id
    assert list_models() == ["clf"]


# Run by each of two processes in test_two_promotes_at_once: every alias write waits 0.25 s, so
# a promotion's read of the aliases and its writes are far apart, and two promotions started
# together would interleave (both reading champion 1) unless the registry lock orders them.
RACING_PROMOTE = """
import contextlib, os, sys, time
from pathlib import Path
from mlflow import MlflowClient
import lmops.tracking.registry as registry
from lmops.cli import main

set_alias = MlflowClient.set_registered_model_alias
def slow_set_alias(self, *args, **kwargs):
    time.sleep(0.25)
    return set_alias(self, *args, **kwargs)
MlflowClient.set_registered_model_alias = slow_set_alias
if os.environ.get("LMOPS_TEST_NO_LOCK"):
    registry.registry_lock = lambda *args, **kwargs: contextlib.nullcontext()
version, barrier = sys.argv[1], Path(sys.argv[2])
(barrier / f"ready-{version}").touch()
while not (barrier / "go").exists():
    time.sleep(0.01)
sys.exit(main(["promote", "clf", "--version", version]))
"""


def race_two_promotes(tmp_path: Path, lock: bool) -> list[str]:
    """Start ``lmops promote clf --version 2`` and ``--version 3`` in two processes, release
    them together once both have imported everything; their stdout lines."""
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if not lock:
        env["LMOPS_TEST_NO_LOCK"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", RACING_PROMOTE, version, str(barrier)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for version in ("2", "3")
    ]
    deadline = time.monotonic() + 120
    while len(list(barrier.glob("ready-*"))) < 2:
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.monotonic() < deadline, "the promote processes did not start"
        time.sleep(0.05)
    (barrier / "go").touch()
    lines = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        lines.append(out.strip())
    return lines


@pytest.mark.parametrize("lock", [True, False], ids=["locked", "without-lock"])
def test_two_promotes_at_once_leave_one_champion_and_the_previous_one(
    pyfunc_dir: Path, run_id: str, tmp_path: Path, lock: bool
) -> None:
    for version, export_hash in enumerate(("h1", "h2", "h3"), start=1):
        reg(pyfunc_dir, run_id, export_hash, 0.8)  # equal metrics: each promotion succeeds
        if version == 1:
            promote("clf")
    lines = race_two_promotes(tmp_path, lock)
    final = aliases()
    assert final["champion"] in (2, 3) and "lmops" not in " ".join(list_models())
    first = 5 - final["champion"]  # the other of 2 and 3 was promoted first
    chained = final["previous-champion"] == first and sorted(lines) == sorted(
        [
            f"clf: champion is now version {first} (was 1); test/acc 0.8 vs 0.8",
            f"clf: champion is now version {final['champion']} (was {first}); test/acc 0.8 vs 0.8",
        ]
    )
    # With the lock the promotions take turns: the second replaces the first and records it.
    # Without it (the control) both read champion 1 and version `first` is lost from the record:
    # the test sees the race it guards against.
    assert chained is lock, (final, lines)
