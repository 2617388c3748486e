"""Executors from params: local processes, slurm and ray; a failed task is one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from datatrove.executor import LocalPipelineExecutor, RayPipelineExecutor, SlurmPipelineExecutor
from datatrove.pipeline.base import PipelineStep

from lmops.config import DataExecutorConfig, LmopsError
from lmops.data.executors import Pass, build_executor, cpu_count, run_passes


class Boom(PipelineStep):
    name = "boom"

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        raise RuntimeError("kaput")


class Touch(PipelineStep):
    name = "touch"

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        Path(self.folder, f"{rank}.done").write_text("x")


def test_local_executor_uses_all_cores_by_default(tmp_path: Path) -> None:
    p = Pass("x", "x", [Touch(str(tmp_path))], tasks=64)
    executor = build_executor(p, DataExecutorConfig(), tmp_path / "logs")
    assert isinstance(executor, LocalPipelineExecutor)
    assert executor.workers == min(64, cpu_count())
    assert build_executor(p, DataExecutorConfig(workers=1), tmp_path / "l2").workers == 1
    one = Pass("y", "y", [Touch(str(tmp_path))], tasks=5, max_workers=1)
    assert build_executor(one, DataExecutorConfig(), tmp_path / "l3").workers == 1


def test_slurm_and_ray_executors_from_params(tmp_path: Path) -> None:
    p = Pass("x", "x", [Touch(str(tmp_path))], tasks=8)
    cfg = DataExecutorConfig(
        type="slurm", slurm_partition="cpu", slurm_time="01:00:00", slurm_cpus_per_task=4
    )
    slurm = build_executor(p, cfg, tmp_path / "slurm")
    assert isinstance(slurm, SlurmPipelineExecutor)
    assert (slurm.partition, slurm.tasks, slurm.cpus_per_task, slurm.time) == (
        "cpu",
        8,
        4,
        "01:00:00",
    )
    ray = build_executor(p, DataExecutorConfig(type="ray", ray_cpus_per_task=2), tmp_path / "ray")
    assert isinstance(ray, RayPipelineExecutor) and (ray.tasks, ray.cpus_per_task) == (8, 2)


def test_passes_run_every_task_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    passes = [Pass("touch", "touch", [Touch(str(out))], tasks=3)]
    run_passes(passes, DataExecutorConfig(workers=1), tmp_path / "logs", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["0.done", "1.done", "2.done"]
    for p in out.iterdir():
        p.unlink()
    run_passes(passes, DataExecutorConfig(workers=1), tmp_path / "logs", progress=False)
    assert not list(out.iterdir())  # finished tasks are skipped on a rerun


def test_a_failing_task_is_one_line_naming_the_logs(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    passes = [Pass("boom", "explode", [Boom()], tasks=1)]
    with pytest.raises(LmopsError, match=r"'explode' pass failed \(RuntimeError: kaput\)") as err:
        run_passes(passes, DataExecutorConfig(workers=1), tmp_path / "logs", progress=False)
    assert str(tmp_path / "logs" / "boom" / "logs") in str(err.value)
    assert "kaput" in (tmp_path / "logs" / "boom" / "logs" / "task_00000.log").read_text()
    assert "kaput" not in capfd.readouterr().err  # the traceback went to the task log
