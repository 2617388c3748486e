"""A stage killed with SIGKILL cannot end its MLflow run; the next run of the stage ends it as
FAILED, unless it re-attaches it (a resumed pretrain or finetune), and never touches a run whose
process may still be alive (issue 14, item 6)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
from mlflow import MlflowClient

from lmops.config import Params
from lmops.tracking.runs import (
    TAG_ENDED,
    TAG_HOST,
    TAG_PID,
    TAG_PID_STARTED,
    TAG_STAGE,
    ensure_experiment,
    process_gone,
    stage_run,
    tracking_uri,
)
from tests.unit.test_runs import repo  # noqa: F401  (the fixture: git repo + sqlite store)


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def left_running(root: Path, stage: str, tags: dict[str, str]) -> str:
    """A RUNNING run of ``stage`` as a killed process leaves it: started, never ended."""
    mlflow.set_tracking_uri(tracking_uri(root))
    client = MlflowClient()
    exp = ensure_experiment("lmops", root)
    run = client.create_run(exp, tags={TAG_STAGE: stage, **tags})
    return run.info.run_id


def status(run_id: str) -> str:
    return MlflowClient().get_run(run_id).info.status


def test_run_of_a_dead_process_ends_failed(repo: Path) -> None:  # noqa: F811
    host = socket.gethostname()
    orphan = left_running(repo, "finetune", {TAG_PID: str(dead_pid()), TAG_HOST: host})
    other_stage = left_running(repo, "clean", {TAG_PID: str(dead_pid()), TAG_HOST: host})
    with stage_run("finetune", Params(), root=repo) as run:
        assert status(orphan) == "FAILED"
        assert run.info.run_id != orphan
    run = MlflowClient().get_run(orphan)
    assert "was gone" in run.data.tags[TAG_ENDED] and run.info.end_time is not None
    assert status(other_stage) == "RUNNING"  # only the stage that starts sweeps its own runs


def test_runs_that_may_be_alive_are_left_alone(repo: Path) -> None:  # noqa: F811
    host = socket.gethostname()
    alive = left_running(repo, "clean", {TAG_PID: str(os.getpid()), TAG_HOST: host})
    elsewhere = left_running(repo, "clean", {TAG_PID: str(dead_pid()), TAG_HOST: "other-host"})
    untagged = left_running(repo, "clean", {})  # written by an older lmops
    with stage_run("clean", Params(), root=repo):
        pass
    assert [status(r) for r in (alive, elsewhere, untagged)] == ["RUNNING"] * 3


def test_a_reused_pid_is_not_the_owner(repo: Path) -> None:  # noqa: F811
    """Our own pid, but started at another time: the owner died and the pid was reused."""
    tags = {TAG_PID: str(os.getpid()), TAG_HOST: socket.gethostname(), TAG_PID_STARTED: "1"}
    orphan = left_running(repo, "evaluate", tags)
    with stage_run("evaluate", Params(), root=repo):
        pass
    assert status(orphan) == "FAILED"


def test_resume_reattaches_instead_of_ending(repo: Path) -> None:  # noqa: F811
    host = socket.gethostname()
    interrupted = left_running(repo, "pretrain", {TAG_PID: str(dead_pid()), TAG_HOST: host})
    with stage_run("pretrain", Params(), root=repo, resume_run_id=interrupted) as run:
        assert run.info.run_id == interrupted and status(interrupted) == "RUNNING"
        assert run.data.tags.get(TAG_PID) in (None, str(os.getpid()))
    assert status(interrupted) == "FINISHED"
    assert MlflowClient().get_run(interrupted).data.tags[TAG_PID] == str(os.getpid())


def test_stage_killed_with_sigkill_leaves_a_run_the_next_one_ends(repo: Path) -> None:  # noqa: F811
    """The real fault: a stage process SIGKILLs itself inside its run."""
    code = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from lmops.config import Params
        from lmops.tracking.runs import stage_run
        with stage_run("finetune", Params(), root=Path({str(repo)!r})) as run:
            print(run.info.run_id, flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    killed = proc.stdout.split()[0]
    assert status(killed) == "RUNNING"
    assert process_gone(int(MlflowClient().get_run(killed).data.tags[TAG_PID]))
    with stage_run("finetune", Params(), root=repo):
        pass
    assert status(killed) == "FAILED"
