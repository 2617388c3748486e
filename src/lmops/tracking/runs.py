"""One MLflow run per stage, tagged so one pipeline execution can be followed run to run.

Every stage opens its run through :func:`stage_run`. Lineage travels through the stage outputs,
not through MLflow: each stage writes ``run.json`` (run id, pipeline id) into its out folder, and
the next stage reads it from the folders it consumed. So the links stay right under ``dvc repro``
skipping stages, across machines, and with a remote tracking server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from lmops.config import LmopsError, Params, repo_root, to_flat_dict
from lmops.io import atomic_write_json, read_json, sha256_path

__all__ = [
    "RUN_INFO",
    "STAGE_SECTIONS",
    "check_tracking_server",
    "end_abandoned_runs",
    "ensure_experiment",
    "finish_stage",
    "git_sha",
    "log_datasets",
    "log_new_params",
    "prefixed",
    "process_gone",
    "read_run_info",
    "redact_uri",
    "stage_run",
    "store_root",
    "tracking_uri",
    "write_run_info",
]

log = logging.getLogger(__name__)

RUN_INFO = "run.json"

# The params.yaml sections a stage logs: the ones it declares in dvc.yaml (never tracking or
# hardware, which change how a stage runs, not what it computes). A stage missing here logs the
# section of its own name when there is one.
STAGE_SECTIONS: dict[str, tuple[str, ...]] = {
    "clean": ("data", "clean"),
    "tokenize": ("tokenize",),
    "pretrain": ("pretrain",),
    "finetune": ("finetune",),
    "evaluate": ("evaluate",),
    "export": ("export",),
    "register": ("register",),
}

TAG_STAGE = "lmops.stage"
TAG_PIPELINE = "lmops.pipeline_id"
TAG_GIT = "lmops.git_sha"
TAG_DVC_EXP = "lmops.dvc_exp"
# Who holds a RUNNING run: a stage killed with SIGKILL (or a lost machine) cannot end its run, so
# the next run of the stage ends it as FAILED once these show that its process is gone.
TAG_PID = "lmops.pid"
TAG_HOST = "lmops.host"
TAG_PID_STARTED = "lmops.pid_started"  # the process's start time: a reused pid is not the owner
TAG_ENDED = "lmops.ended"
# MLflow keeps a dataset digest in 36 characters (String(36)); the full SHA-256 rides along as the
# input's TAG_DATASET_SHA256 tag, the same value as the run's lmops.input.<name>.sha256 tag.
DATASET_DIGEST_CHARS = 16
TAG_DATASET_SHA256 = "lmops.sha256"


def tracking_uri(root: str | os.PathLike[str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else ``sqlite:///<absolute root>/mlflow.db``.

    Absolute on purpose: MLflow's own default is relative to the current folder, so runs would
    land in whatever folder a stage or a test happened to start in.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(store_root(root) / 'mlflow.db').resolve()}"


def store_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the local store (``mlflow.db``, ``mlartifacts/``): ``root``, except in a
    queued or temp DVC experiment.

    ``dvc exp run --queue`` / ``--temp`` runs the stages in a clone under
    ``<repo>/.dvc/tmp/exps/``, deleted when the experiment ends, and names the repo it was queued
    from in ``DVC_ROOT``: the runs go to that repo's store, beside the others, where
    ``mlflow ui`` and a filter on ``lmops.dvc_exp`` find them.
    """
    root = (Path(root) if root is not None else repo_root()).resolve()
    parent = os.environ.get("DVC_ROOT")
    if parent and Path(parent).resolve() / ".dvc" / "tmp" / "exps" in root.parents:
        return Path(parent).resolve()
    return root


# Seconds to wait for a TCP connection, then for /health's answer. The connection is what tells
# "down" from "up"; the answer may be slow on a busy server, so it gets longer.
PROBE_TIMEOUT = (5.0, 30.0)


def redact_uri(uri: str) -> str:
    """``uri`` without the password of ``user:password@host``: what may be printed or logged."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparsable tracking URI>"
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def check_tracking_server(uri: str, timeout: tuple[float, float] = PROBE_TIMEOUT) -> None:
    """Raise a one-line :class:`LmopsError` when ``uri`` is an MLflow server that does not answer.

    Without this, a stage pointed at a server that is down spends minutes in the MLflow client's
    retries (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, 7 by default, with exponential backoff) and
    ends in chained tracebacks. Only http(s) URIs are probed (database and file stores fail fast
    on their own). Any HTTP answer counts as reachable, since a proxy or an auth layer may answer
    ``/health`` with 401 or 404; so does a TLS error, which the client reports itself with the
    TLS settings (``MLFLOW_TRACKING_INSECURE_TLS`` ...) the probe does not apply.
    """
    if not uri.lower().startswith(("http://", "https://")):
        return
    import requests

    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=timeout, allow_redirects=False)
    except requests.exceptions.SSLError:
        return
    except requests.exceptions.RequestException as exc:
        raise LmopsError(
            f"MLflow tracking server {redact_uri(uri)} is unreachable ({_why(exc)}); start it, "
            "fix MLFLOW_TRACKING_URI, or unset it to track into <repo root>/mlflow.db"
        ) from None


def _why(exc: Exception) -> str:
    """``Connection refused`` rather than requests' three nested exception reprs."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "no connection within the timeout"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "no answer to /health within the timeout"
    found = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def ensure_experiment(name: str, root: str | os.PathLike[str] | None = None) -> str:
    """The id of experiment ``name``, created when missing.

    With a local store its artifacts go to ``<root>/mlartifacts/<name>`` (absolute), never the
    current folder; a tracking server keeps its own artifact location.
    """
    root = Path(root) if root is not None else repo_root()
    uri = tracking_uri(root)
    client = MlflowClient(tracking_uri=uri)
    existing = client.get_experiment_by_name(name)
    if existing is not None:
        if existing.lifecycle_stage == "deleted":
            raise LmopsError(
                f"MLflow experiment {name!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {existing.experiment_id}) "
                "or set tracking.experiment to another name"
            )
        return existing.experiment_id
    local = _is_local_store(uri)
    location = (store_root(root) / "mlartifacts" / name).as_uri() if local else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except MlflowException:  # created meanwhile by a concurrent stage
        again = client.get_experiment_by_name(name)
        if again is None:
            raise
        return again.experiment_id


def git_sha(root: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out at ``root``; ``None`` outside git or before the first commit."""
    root = Path(root) if root is not None else repo_root()
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--verify", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def read_run_info(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``run.json`` a stage left in its out folder, or ``None`` when there is none."""
    path = Path(folder) / RUN_INFO
    if not path.is_file():
        return None
    try:
        info = read_json(path)
    except ValueError as exc:
        raise LmopsError(f"{path} is not valid JSON; re-run the stage that wrote it") from exc
    return info if isinstance(info, dict) else None


def write_run_info(out_dir: str | os.PathLike[str], run: Any) -> Path:
    """Write ``run.json`` (``run_id``, ``pipeline_id``, ``experiment_id``, ``stage``) atomically.

    ``run`` is the object :func:`stage_run` yielded (any MLflow ``Run``); the pipeline id and
    stage are read back from its tags in the tracking store.
    """
    run_id = run.info.run_id
    tags = MlflowClient().get_run(run_id).data.tags
    info = {
        "run_id": run_id,
        "pipeline_id": tags.get(TAG_PIPELINE),
        "experiment_id": run.info.experiment_id,
        "stage": tags.get(TAG_STAGE),
    }
    return atomic_write_json(Path(out_dir) / RUN_INFO, info)


def finish_stage(
    out_dir: str | os.PathLike[str],
    *,
    metrics: Mapping[str, Any] | None = None,
    logged: Mapping[str, float] | None = None,
    artifacts: Iterable[str | os.PathLike[str]] = (),
) -> None:
    """The end every stage shares, inside its :func:`stage_run`: ``metrics.json`` for
    ``dvc metrics`` (written atomically), ``logged`` metrics and ``artifacts`` in the MLflow run.

    ``run.json`` is not written here: :func:`stage_run` writes it once the body has succeeded,
    so a stage that fails after this call still leaves no lineage pointing at a failed run.
    """
    if metrics is not None:
        atomic_write_json(Path(out_dir) / "metrics.json", dict(metrics))
    if logged:
        mlflow.log_metrics({k: float(v) for k, v in logged.items()})
    for path in artifacts:
        mlflow.log_artifact(str(path))


def prefixed(metrics: Mapping[str, Any], prefix: str) -> dict[str, float]:
    """``{"clean/docs_in": 5.0, "clean/dropped.length": 3.0}``: a stage's nested metrics as the
    flat, numeric names MLflow compares across runs."""
    return {f"{prefix}/{k}": float(v) for k, v in to_flat_dict(dict(metrics)).items()}


def _stage_params(stage: str, params: Params) -> dict[str, Any]:
    sections = STAGE_SECTIONS.get(stage, (stage,) if hasattr(params, stage) else ())
    flat: dict[str, Any] = {}
    for section in sections:
        flat.update(to_flat_dict(getattr(params, section), section))
    return {k: "None" if v is None else v for k, v in flat.items()}


def log_new_params(values: Mapping[str, Any]) -> None:
    """Log the params the active run does not have yet. MLflow refuses to change a logged
    param, and a resumed run (:func:`stage_run` with ``resume_run_id``) has its params already;
    one that differs now (say the accumulation, after a change of device count) keeps its first
    value."""
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_new_params needs an active MLflow run")
    logged = MlflowClient().get_run(run.info.run_id).data.params
    new = {k: v for k, v in values.items() if k not in logged}
    if new:
        mlflow.log_params(new)


def _resumable_run(experiment_id: str, run_id: str | None) -> str | None:
    """``run_id`` when it names a live run of this experiment in the tracking store, else None."""
    if not run_id:
        return None
    try:
        run = MlflowClient().get_run(run_id)
    except MlflowException:
        log.info(
            "MLflow run %s is not in %s: starting a new run",
            run_id,
            redact_uri(mlflow.get_tracking_uri()),
        )
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        log.info("MLflow run %s is deleted or in another experiment: starting a new run", run_id)
        return None
    return run_id


def _process_started(pid: int) -> str | None:
    """When process ``pid`` started, as an opaque string (Linux: clock ticks after boot, from
    ``/proc``); ``None`` when it cannot be read (no such process, another OS)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # field 22; the command name (field 2) may hold spaces, so count after its closing ")"
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_gone(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host has ended; ``started`` (from
    :func:`_process_started` when the run began) tells a reused pid from the original owner."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        pass
    except OSError:
        return False
    now = _process_started(pid)
    return bool(started and now and now != started)


def _owner_tags() -> dict[str, str]:
    pid = os.getpid()
    tags = {TAG_PID: str(pid), TAG_HOST: socket.gethostname()}
    started = _process_started(pid)
    if started:
        tags[TAG_PID_STARTED] = started
    return tags


def end_abandoned_runs(experiment_id: str, stage: str, keep: str | None = None) -> list[str]:
    """End as FAILED the RUNNING runs of ``stage`` whose process is gone; return their ids.

    A stage killed with SIGKILL, by the OOM killer or with its machine cannot end its own run,
    which would then show as RUNNING forever. Only runs whose owner is provably dead are ended:
    same host (from the tags :func:`stage_run` sets) and no live process with that pid and start
    time. A run of another host, or one without the tags, may be alive and is left alone.
    ``keep`` is the run about to be re-attached (a resumed pretrain or finetune continues it).
    """
    client = MlflowClient()
    host = socket.gethostname()
    ended = []
    running = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_STAGE}` = '{stage}' and attributes.status = 'RUNNING'",
        max_results=100,
    )
    for run in running:
        tags = run.data.tags
        pid = tags.get(TAG_PID, "")
        if run.info.run_id == keep or tags.get(TAG_HOST) != host or not pid.isdigit():
            continue
        if not process_gone(int(pid), tags.get(TAG_PID_STARTED)):
            continue
        client.set_tag(
            run.info.run_id,
            TAG_ENDED,
            f"process {pid} on {host} was gone (killed?); ended as FAILED by the next {stage} run",
        )
        client.set_terminated(run.info.run_id, status="FAILED")
        log.warning(
            "MLflow run %s of stage %s was left RUNNING by process %s, which is gone: "
            "marked FAILED",
            run.info.run_id,
            stage,
            pid,
        )
        ended.append(run.info.run_id)
    return ended


def log_datasets(
    datasets: Mapping[str, tuple[str | os.PathLike[str], str, str]],
    root: str | os.PathLike[str] | None = None,
) -> None:
    """Log each ``{name: (path, sha256, context)}`` as an MLflow dataset input of the active run.

    Through MLflow's dataset tracking (not only the ``lmops.input.*`` tags) so that the runs
    table's Dataset column and the run page show what a run trained on, and runs can be searched
    by it. A :class:`~mlflow.data.meta_dataset.MetaDataset`: the data stays where DVC keeps it;
    MLflow records its name (the path relative to ``root``, as in ``dvc.yaml``), its source (the
    absolute path) and its digest (the SHA-256's first 16 hex digits; the whole hash is the
    input's ``lmops.sha256`` tag). Logging the same dataset again (a resumed run) adds nothing.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    root = Path(root) if root is not None else repo_root()
    for path, sha, context in datasets.values():
        full = Path(path).resolve()
        try:
            name = full.relative_to(root.resolve()).as_posix()
        except ValueError:
            name = str(full)
        dataset = MetaDataset(
            LocalArtifactDatasetSource(str(full)), name=name, digest=sha[:DATASET_DIGEST_CHARS]
        )
        mlflow.log_input(dataset, context=context, tags={TAG_DATASET_SHA256: sha})


def _system_metrics_ok(params: Params) -> bool:
    """Whether to sample system metrics: asked for in params, and psutil importable."""
    if not params.tracking.system_metrics:
        return False
    try:
        import psutil  # noqa: F401  (MLflow's sampler needs it; MLflow does not depend on it)
    except ImportError:
        log.warning("tracking.system_metrics: psutil is not installed; pip install psutil")
        return False
    mlflow.system_metrics.set_system_metrics_sampling_interval(
        params.tracking.system_metrics_interval
    )
    return True


@contextlib.contextmanager
def stage_run(
    stage: str,
    params: Params,
    *,
    inputs: Mapping[str, str | os.PathLike[str]] | None = None,
    upstream: Mapping[str, str | os.PathLike[str]] | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
    resume_run_id: str | None = None,
    system_metrics: bool = False,
    datasets: Mapping[str, str] | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """Open the stage's MLflow run with its lineage tags and flat params; yield the active run.

    ``inputs`` (name → file or folder) are hashed into ``lmops.input.<name>.sha256``;
    ``upstream`` (name → out folder of the stage consumed) links ``lmops.upstream.<name>.run_id``
    and passes on ``lmops.pipeline_id`` (from the first upstream that has one; a new id when
    there is none, as for the first stage). When ``out_dir`` is given, ``run.json`` is written
    there after the body succeeds; a failing body leaves the run FAILED and writes nothing.

    ``resume_run_id`` reattaches to that run (a stage resuming from a checkpoint continues the
    run that the interrupted attempt opened: one run, one metric history); when the tracking
    store does not have it, a new run is opened, with a log line. Any other RUNNING run of this
    stage whose process is gone (killed with SIGKILL, say) is ended as FAILED first
    (:func:`end_abandoned_runs`; the run's ``lmops.pid`` / ``lmops.host`` tags name its process).

    ``system_metrics`` samples CPU, memory, disk and network (GPU too with ``pynvml``) into the
    run every ``tracking.system_metrics_interval`` seconds while the body runs; for the long
    stages (training), where a user asks "was the GPU busy, did memory grow".

    ``datasets`` (input name → context, e.g. ``{"tokens": "training"}``) names the inputs that
    are data: each is logged as an MLflow dataset (:func:`log_datasets`) with the hash just
    computed, so the MLflow UI shows what the run consumed.
    """
    root = Path(root) if root is not None else repo_root()
    uri = tracking_uri(root)
    check_tracking_server(uri)  # one line now, not minutes of client retries
    mlflow.set_tracking_uri(uri)
    experiment_id = ensure_experiment(params.tracking.experiment, root)

    tags: dict[str, str] = {TAG_STAGE: stage, **_owner_tags()}
    sha = git_sha(root)
    if sha:
        tags["mlflow.source.git.commit"] = sha
        tags[TAG_GIT] = sha
    dvc_exp = os.environ.get("DVC_EXP_NAME")
    if dvc_exp:
        tags[TAG_DVC_EXP] = dvc_exp
    unknown = sorted(set(datasets or {}) - set(inputs or {}))
    if unknown:
        raise ValueError(f"stage {stage}: datasets {unknown} are not among its inputs")
    data: dict[str, tuple[str | os.PathLike[str], str, str]] = {}
    for name, path in (inputs or {}).items():
        if not Path(path).exists():
            raise LmopsError(f"stage {stage}: input {name} ({path}) is missing; run dvc repro")
        tags[f"lmops.input.{name}.sha256"] = sha256_path(path)
        if name in (datasets or {}):
            data[name] = (path, tags[f"lmops.input.{name}.sha256"], (datasets or {})[name])
    pipeline_id = None
    for name, folder in (upstream or {}).items():
        info = read_run_info(folder)
        if info is None:  # produced outside the pipeline (or by an older version): no link
            continue
        if info.get("run_id"):
            tags[f"lmops.upstream.{name}.run_id"] = str(info["run_id"])
        pipeline_id = pipeline_id or info.get("pipeline_id")
    tags[TAG_PIPELINE] = str(pipeline_id or uuid.uuid4().hex)

    # the experiments of a sweep share the commit: their runs are told apart by the DVC name
    suffix = dvc_exp or (sha[:7] if sha else time.strftime("%Y%m%d-%H%M%S"))
    run_name = f"{stage}-{suffix}"
    resume = _resumable_run(experiment_id, resume_run_id)
    end_abandoned_runs(experiment_id, stage, keep=resume)
    sysm = _system_metrics_ok(params) if system_metrics else False
    if resume:
        start = mlflow.start_run(run_id=resume, tags=tags, log_system_metrics=sysm)
        log.info("reattached to MLflow run %s", resume)
    else:
        start = mlflow.start_run(
            experiment_id=experiment_id, run_name=run_name, tags=tags, log_system_metrics=sysm
        )
    with start as run:
        flat = _stage_params(stage, params)
        if flat:
            log_new_params(flat)
        if data:
            log_datasets(data, root)
        yield run
        if out_dir is not None:
            write_run_info(out_dir, run)
