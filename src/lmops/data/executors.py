"""Run datatrove pipelines on this machine (processes), on slurm, or on ray, from one config.

Why a wrapper: the clean and tokenize stages describe their work as a list of *passes* (a
datatrove pipeline and a task count each); how those passes run is
``hardware.data_executor``, which never changes results, so no stage declares it. The wrapper
also keeps datatrove's per-task logs in files (a stage prints a progress bar and a short table,
not thousands of log lines), shows one progress bar per pass, and turns a failed task into one
line naming the log to read.

Passes run one after another. Within a pass, datatrove's ``skip_completed`` skips tasks that an
earlier, interrupted run already finished, so a killed stage resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from datatrove.executor import LocalPipelineExecutor
from datatrove.executor.base import PipelineExecutor
from loguru import logger

from lmops.config import DataExecutorConfig, LmopsError

__all__ = ["Pass", "cpu_count", "datatrove_logs_to", "run_passes"]

_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {name}:{function}:{line} - {message}"


def cpu_count() -> int:
    """CPU cores this process may use (the affinity mask, not the machine's total)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS
        return max(1, os.cpu_count() or 1)


@dataclass
class Pass:
    """One datatrove pipeline run over ``tasks`` tasks; ``name`` names its log folder."""

    name: str
    description: str
    pipeline: list[Any]
    tasks: int
    max_workers: int | None = None  # e.g. 1 for a step that must run alone
    seconds: float = 0.0  # wall time, filled in by run_passes


# ----------------------------------------------------------------------------- quiet logging


def _file_only_task_logger(logging_dir: Any, rank: int, local_rank: int = 0, node_rank: int = -1):
    """datatrove's per-task logger, minus the copy on stderr."""
    logger.remove()
    logfile = logging_dir.open(f"logs/task_{rank:05d}.log", "w")
    logger.add(logfile, colorize=False, level="DEBUG", format=_FORMAT)
    logger.info(f"Launching pipeline for {rank=}")
    return logfile


def _close_file_task_logger(logfile: Any) -> None:
    logger.complete()
    logger.remove()
    logfile.close()


def _quiet_tqdm(*args: Any, **kwargs: Any) -> Any:
    from tqdm import tqdm

    kwargs["disable"] = True
    return tqdm(*args, **kwargs)


def _silence_datatrove_bars() -> list[tuple[Any, Any]]:
    """Swap the ``tqdm`` that datatrove's step modules imported for a disabled one.

    Some steps (exact dedup, MinHash clustering) draw bars of their own on stderr; a task's
    output belongs in its log file. Returns what to put back.
    """
    from tqdm import tqdm

    swapped = []
    for name, module in list(sys.modules.items()):
        if name.startswith("datatrove.") and getattr(module, "tqdm", None) is tqdm:
            swapped.append((module, tqdm))
            module.tqdm = _quiet_tqdm
    return swapped


class _QuietTasks:
    """Mixin for datatrove executors: task logs go to their files only."""

    def _run_for_rank(self, rank: int, local_rank: int = 0, node_rank: int = -1):
        import datatrove.executor.base as base

        saved = base.add_task_logger, base.close_task_logger
        base.add_task_logger, base.close_task_logger = (
            _file_only_task_logger,
            _close_file_task_logger,
        )
        bars = _silence_datatrove_bars()
        try:
            return super()._run_for_rank(rank, local_rank, node_rank)  # type: ignore[misc]
        finally:
            base.add_task_logger, base.close_task_logger = saved
            for module, original in bars:
                module.tqdm = original


class QuietLocalExecutor(_QuietTasks, LocalPipelineExecutor):
    """datatrove's LocalPipelineExecutor without per-task logging on stderr."""

    def run(self) -> Any:
        if self.workers > 1 and self.start_method == "forkserver":
            _preload_forkserver()
        return super().run()


# What every clean / tokenize task imports. The forkserver imports them once, and each pool
# worker forked from it starts with them loaded: ~0.8 s less per pass on this 2-core box.
_PRELOAD = [
    "numpy",
    "datatrove.pipeline.readers",
    "datatrove.pipeline.writers",
    "datatrove.pipeline.dedup",
    "datatrove.pipeline.filters",
    "lmops.data.filters",
    "lmops.data.dedup",
    "lmops.data.report",
    "lmops.data.ingest",
    "lmops.data.shards",
]


def _preload_forkserver() -> None:
    """Ask the forkserver to import ``_PRELOAD``; no effect once it has started."""
    import multiprocess

    multiprocess.get_context("forkserver").set_forkserver_preload(_PRELOAD)


@contextlib.contextmanager
def datatrove_logs_to(path: Path) -> Iterator[None]:
    """Send datatrove's own (loguru) messages in this process to ``path`` while inside."""
    path.parent.mkdir(parents=True, exist_ok=True)
    logger.remove()
    logger.add(str(path), level="INFO", format=_FORMAT, colorize=False)
    try:
        yield
    finally:
        logger.remove()  # in-process tasks may have replaced our sink already
        logger.add(sys.stderr, level="WARNING", format=_FORMAT)


# ----------------------------------------------------------------------------- executors


def _workers(cfg: DataExecutorConfig, p: Pass) -> int:
    limit = cfg.workers if cfg.workers > 0 else cpu_count()
    if p.max_workers:
        limit = min(limit, p.max_workers)
    return max(1, min(limit, p.tasks))


def build_executor(p: Pass, cfg: DataExecutorConfig, logging_dir: Path) -> PipelineExecutor:
    """The datatrove executor for one pass, as ``cfg.type`` says."""
    if cfg.type == "local":
        return QuietLocalExecutor(
            pipeline=p.pipeline,
            tasks=p.tasks,
            workers=_workers(cfg, p),
            logging_dir=str(logging_dir),
            skip_completed=True,
        )
    if cfg.type == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        # task logs on stderr are fine there: slurm writes them to its own log files
        return SlurmPipelineExecutor(
            pipeline=p.pipeline,
            tasks=p.tasks,
            workers=cfg.workers if cfg.workers > 0 else -1,
            time=cfg.slurm_time,
            partition=cfg.slurm_partition,
            cpus_per_task=cfg.slurm_cpus_per_task,
            mem_per_cpu_gb=cfg.slurm_mem_per_cpu_gb,
            env_command=cfg.slurm_env_command,
            job_name=f"lmops-{p.name}",
            logging_dir=str(logging_dir),
            skip_completed=True,
        )
    if cfg.type == "ray":
        from datatrove.executor import RayPipelineExecutor

        return RayPipelineExecutor(
            pipeline=p.pipeline,
            tasks=p.tasks,
            workers=cfg.workers if cfg.workers > 0 else -1,
            cpus_per_task=cfg.ray_cpus_per_task,
            mem_per_cpu_gb=cfg.ray_mem_per_cpu_gb,
            logging_dir=str(logging_dir),
            skip_completed=True,
        )
    raise LmopsError(f"hardware.data_executor.type is {cfg.type!r}; use local, slurm or ray")


def _completed(logging_dir: Path) -> int:
    folder = logging_dir / "completions"
    return len(os.listdir(folder)) if folder.is_dir() else 0


def _wait_for_slurm(executor: Any, logging_dir: Path, tasks: int, poll_s: float = 10.0) -> None:
    """Slurm jobs run after ``run()`` returns: wait until every task left its completion mark."""
    job_id = getattr(executor, "job_id", None)
    while _completed(logging_dir) < tasks:
        time.sleep(poll_s)
        if job_id:
            queued = subprocess.run(
                ["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True, check=False
            )
            if queued.returncode == 0 and not queued.stdout.strip():
                time.sleep(poll_s)  # the last marks may still be landing on shared storage
                if _completed(logging_dir) < tasks:
                    raise LmopsError(
                        f"slurm job {job_id} ended with {_completed(logging_dir)}/{tasks} tasks "
                        f"done; see the task logs in {logging_dir / 'logs'}"
                    )


def _progress(
    logging_dir: Path, total: int, description: str, enabled: bool
) -> tuple[Callable[[], None], threading.Event]:
    """A tqdm bar over finished tasks, updated by a thread that watches the completion marks."""
    from tqdm.auto import tqdm

    done = threading.Event()
    bar = tqdm(total=total, desc=description, unit="task", disable=None if enabled else True)

    def watch() -> None:
        while not done.wait(0.5):
            bar.n = min(total, _completed(logging_dir))
            bar.refresh()
        bar.n = min(total, _completed(logging_dir))
        bar.close()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()

    def stop() -> None:
        done.set()
        thread.join()

    return stop, done


def run_passes(
    passes: Sequence[Pass],
    cfg: DataExecutorConfig,
    logs: Path,
    *,
    progress: bool = True,
    label: str = "clean",
) -> dict[str, Path]:
    """Run ``passes`` in order; returns each pass's datatrove logging folder (stats, logs)."""
    folders: dict[str, Path] = {}
    for i, p in enumerate(passes, 1):
        started = time.perf_counter()
        folder = logs / p.name
        folders[p.name] = folder
        executor = build_executor(p, cfg, folder)
        stop, _ = _progress(folder, p.tasks, f"{label} {i}/{len(passes)} {p.description}", progress)
        try:
            executor.run()
            if cfg.type == "slurm":
                _wait_for_slurm(executor, folder, p.tasks)
        except LmopsError:
            raise
        except Exception as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LmopsError(
                f"{label}: the '{p.description}' pass failed ({type(exc).__name__}: {first}); "
                f"see the task logs in {folder / 'logs'}"
            ) from exc
        finally:
            stop()
        if _completed(folder) < p.tasks:
            raise LmopsError(
                f"{label}: the '{p.description}' pass finished {_completed(folder)}/{p.tasks} "
                f"tasks; see the task logs in {folder / 'logs'}"
            )
        p.seconds = time.perf_counter() - started
    return folders
