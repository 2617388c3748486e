"""The tiny pipeline against a real, shared MLflow tracking server, as a team runs it.

``mlflow server`` with ``--serve-artifacts`` on a free loopback port, its backend store a
throw-away PostgreSQL cluster (or, the same test shape, an SQLite file); ``dvc repro`` runs with
``MLFLOW_TRACKING_URI=http://...`` and tracking credentials in its environment. The client then
reads back what a colleague would see: runs, metrics, artifacts, registered versions and
aliases; ``lmops promote`` moves the champion; no credential reached the store. The DVC remote
round trip (push, fresh clone, pull, nothing to re-run) reuses the SQLite run's project: one
pipeline run per backend is the expensive part of this module.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from .project import env, make_project
from .servers import free_port, mlflow_server, pg_dump, postgres_database

pytestmark = pytest.mark.e2e

# Smaller than TINY_PARAMS: this module checks plumbing (runs, artifacts, registry), not learning.
FAST = {
    "data": {"sample": {"n_documents": 200, "n_labeled_train": 200, "n_labeled_test": 100}},
    "pretrain": {"max_steps": 20, "val_every": 10},
    "finetune": {"max_steps": 10, "val_every": 10, "warmup_steps": 2},
}
STAGES = ["clean", "tokenize", "pretrain", "finetune", "evaluate", "export", "register"]

# Credentials as a team sets them: in the environment of every stage. None may reach the store.
SECRETS = {
    "MLFLOW_TRACKING_USERNAME": "lmops-ci",
    "MLFLOW_TRACKING_PASSWORD": "s3cr3t-xyz-tracking-pw",
    "AWS_ACCESS_KEY_ID": "AKIALMOPSTESTKEY0042",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-xyz-aws/Secret+Key0123456789",
}
SECRET_VALUES = [SECRETS["MLFLOW_TRACKING_PASSWORD"], SECRETS["AWS_SECRET_ACCESS_KEY"]]


@dataclass
class Served:
    """One pipeline run against one tracking server."""

    backend: str
    store: str  # the server's backend store URI
    uri: str  # MLFLOW_TRACKING_URI of the stages
    artifacts: Path  # the server's --artifacts-destination
    root: Path  # the project
    output: str  # dvc repro's stdout + stderr


def run_with(
    cmd: list[str], cwd: Path, uri: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """``cmd`` in ``cwd`` with the tracking server and the credentials in its environment."""
    proc = subprocess.run(
        cmd,
        cwd=cwd,
        env={**env(), **SECRETS, "MLFLOW_TRACKING_URI": uri},
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    backend = request.param
    base = tmp_path_factory.mktemp(f"server-{backend}")
    with ExitStack() as stack:
        if backend == "postgresql":
            store = stack.enter_context(postgres_database())
        else:
            store = f"sqlite:///{base / 'server.db'}"
        artifacts = base / "artifacts"
        uri = stack.enter_context(mlflow_server(store, artifacts, base / "server.log"))
        root = make_project(base / "proj", FAST)
        proc = run_with(["dvc", "repro"], root, uri)
        yield Served(backend, store, uri, artifacts, root, proc.stdout + proc.stderr)


def client(served: Served):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=served.uri, registry_uri=served.uri)


def all_runs(served: Served) -> list:
    c = client(served)
    experiments = [e.experiment_id for e in c.search_experiments()]
    return c.search_runs(experiments, max_results=1000)


BOTH = pytest.mark.parametrize("served", ["sqlite", "postgresql"], indirect=True)


@BOTH
def test_runs_metrics_and_artifacts_read_back_from_the_server(
    served: Served, tmp_path: Path
) -> None:
    ran = re.findall(r"Running stage '(\w+)'", served.output)
    assert [s for s in ran if s in STAGES] == STAGES
    assert not (served.root / "mlflow.db").exists()  # everything went to the server
    runs = all_runs(served)
    by_stage = {r.data.tags["lmops.stage"]: r for r in runs}
    assert set(STAGES) <= set(by_stage) and len(runs) == len(by_stage)  # one run per stage
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.tags["lmops.pipeline_id"] for r in runs}) == 1
    pretrain = by_stage["pretrain"]
    assert pretrain.data.params["pretrain.max_steps"] == "20"
    assert by_stage["finetune"].data.tags["lmops.upstream.pretrain.run_id"] == pretrain.info.run_id

    history = client(served).get_metric_history(pretrain.info.run_id, "train/loss")
    assert len(history) >= 5 and max(m.step for m in history) >= 18
    assert "test/acc" in by_stage["evaluate"].data.metrics

    # the artifact went through the server's proxy into --artifacts-destination and comes back
    # byte for byte
    names = [a.path for a in client(served).list_artifacts(pretrain.info.run_id)]
    assert "history.csv" in names, names
    local = client(served).download_artifacts(pretrain.info.run_id, "history.csv", str(tmp_path))
    expected = (served.root / "models" / "pretrain" / "history.csv").read_bytes()
    assert Path(local).read_bytes() == expected
    stored = [p.read_bytes() for p in served.artifacts.rglob("history.csv")]
    assert expected in stored


@BOTH
def test_registered_versions_and_aliases_then_promote(served: Served, tmp_path: Path) -> None:
    import mlflow.artifacts

    c = client(served)
    for name in ("lmops-classifier", "lmops-classifier-lm"):
        version = c.get_model_version_by_alias(name, "challenger")
        assert int(version.version) == 1
        assert version.tags.get("lmops.export_hash")
        # the version's files, through the server (a models:/ URI would need the process-wide
        # registry URI set)
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=c.get_model_version_download_uri(name, version.version),
            dst_path=str(tmp_path / name),
            tracking_uri=served.uri,
        )
        assert (Path(folder) / "MLmodel").is_file()

    lmops = str(Path(sys.executable).parent / "lmops")
    proc = run_with([lmops, "promote", "lmops-classifier"], served.root, served.uri)
    assert "champion is now version 1" in proc.stdout
    assert int(c.get_model_version_by_alias("lmops-classifier", "champion").version) == 1
    # the promoted challenger gives up that alias
    aliases = c.get_registered_model("lmops-classifier").aliases
    assert aliases == {"champion": "1"}, aliases
    listed = run_with([lmops, "models", "lmops-classifier"], served.root, served.uri).stdout
    assert re.search(r"v1\s+champion\s", listed), listed


@BOTH
def test_credentials_in_the_environment_reach_no_run(served: Served) -> None:
    """The stages ran with a tracking password and an AWS secret key in their environment:
    neither is in any param, tag, run name, registry entry, artifact, or the store itself."""
    c = client(served)
    texts: list[str] = [served.output]
    for r in all_runs(served):
        texts += [r.info.run_name or "", *r.data.params.keys(), *r.data.params.values()]
        texts += [*r.data.tags.keys(), *r.data.tags.values()]
    for model in c.search_registered_models():
        texts += [model.description or "", *model.tags.values()]
        for v in c.search_model_versions(f"name='{model.name}'"):
            texts += [v.description or "", v.source or "", *v.tags.values()]
    for secret in SECRET_VALUES:
        assert not [t for t in texts if secret in t]

    # every byte the server stored: artifact files and the whole backend database
    blobs = [p for p in served.artifacts.rglob("*") if p.is_file()]
    assert len(blobs) > 10
    if served.backend == "postgresql":
        database = pg_dump(served.store).encode()
    else:
        database = Path(served.store.removeprefix("sqlite:///")).read_bytes()
    assert len(database) > 10_000
    for secret in SECRET_VALUES:
        assert secret.encode() not in database
        leaked = [p for p in blobs if secret.encode() in p.read_bytes()]
        assert not leaked, leaked


@pytest.mark.parametrize("served", ["sqlite"], indirect=True)
def test_dvc_remote_push_then_fresh_clone_pull_restores_everything(
    served: Served, tmp_path: Path
) -> None:
    """``dvc push`` to a local-directory remote; a fresh ``git clone`` + ``dvc pull`` restores
    every output byte for byte, and ``dvc repro`` then has nothing to run."""
    root = served.root

    def sh(*cmd: str, cwd: Path = root) -> str:
        return run_with(list(cmd), cwd, served.uri).stdout

    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "pipeline run")
    sh("dvc", "remote", "add", "-d", "storage", str(tmp_path / "remote"))
    sh("git", "commit", "-q", "-am", "dvc remote")
    sh("dvc", "push")

    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(root), str(clone))
    sh("dvc", "pull", cwd=clone)

    outs = declared_outs(root)
    assert len(outs) > 20
    missing = [o for o in outs if not (clone / o).exists()]
    assert not missing, f"not restored by dvc pull: {missing}"
    differ = [o for o in outs if tree_hash(clone / o) != tree_hash(root / o)]
    assert not differ, differ
    assert "Data and pipelines are up to date" in sh("dvc", "status", cwd=clone)
    repro = sh("dvc", "repro", cwd=clone)
    assert "Running stage" not in repro
    assert not (clone / "mlflow.db").exists()  # and no stage opened a run anywhere


def declared_outs(root: Path) -> list[str]:
    """Every out, metric and plot file ``dvc.yaml`` declares, as paths relative to ``root``."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    found: list[str] = []
    for stage in stages.values():
        for key in ("outs", "metrics", "plots"):
            for entry in stage.get(key, []):
                found.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return found


def tree_hash(path: Path) -> str:
    """A hash of a file's bytes, or of a folder's file names and bytes."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        digest.update(str(f.relative_to(path)).encode() if f != path else b"")
        digest.update(f.read_bytes())
    return digest.hexdigest()


def test_unreachable_server_stops_a_stage_in_one_line(tmp_path: Path) -> None:
    """A stage pointed at a server that is down says so in one line, in seconds, having made
    nothing (without the probe: minutes of client retries, then chained tracebacks)."""
    root = make_project(tmp_path / "p", FAST, git=False)
    port = free_port()  # nothing listens there
    start = time.monotonic()
    proc = run_with(
        [sys.executable, "pipeline/clean.py"], root, f"http://127.0.0.1:{port}", check=False
    )
    elapsed = time.monotonic() - start
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"127.0.0.1:{port} is unreachable (Connection refused)" in errors[0]
    assert elapsed < 60
    assert not (root / "data" / "clean").exists()
