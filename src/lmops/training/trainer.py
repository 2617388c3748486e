"""One place that turns the ``hardware`` section and a stage's loop settings into a Trainer.

Training is counted in optimizer steps, not epochs: the pretraining set is an effectively
endless stream of random windows, so "an epoch" means nothing and validation runs every
``val_every`` steps across epoch boundaries.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ProgressBar
from lightning.pytorch.loggers import Logger

from lmops.config import HardwareConfig, LmopsError
from lmops.training.progress import StepProgressBar
from lmops.training.strategies import build_strategy, expected_world_size, resolve_devices

__all__ = ["accumulation", "build_trainer", "expected_world_size", "resolve_devices"]


def accumulation(batch_size: int, micro_batch_size: int, world_size: int) -> int:
    """Micro-batches each process accumulates so one optimizer step sees ``batch_size`` sequences.

    The global batch is a result-changing param; micro-batch and device count only change speed,
    so they must divide it exactly or the run would silently train with a different batch.
    """
    per_step = micro_batch_size * world_size
    if micro_batch_size <= 0 or world_size <= 0 or batch_size % per_step != 0:
        raise LmopsError(
            f"batch_size {batch_size} is not a multiple of micro_batch_size {micro_batch_size} x "
            f"{world_size} device(s); change the micro_batch_size or the number of devices"
        )
    return batch_size // per_step


def build_trainer(
    hw: HardwareConfig,
    *,
    max_steps: int,
    precision: str,
    val_every: int,
    limit_val_batches: int | float,
    grad_clip: float,
    accumulate: int,
    default_root_dir: str | Path,
    logger: Logger | Iterable[Logger] | bool | None = None,
    callbacks: Iterable[Callback] = (),
    enable_checkpointing: bool = False,
    **overrides: Any,
) -> L.Trainer:
    """A step-based Trainer: ``max_steps`` optimizer steps, validation every ``val_every`` steps.

    ``logger=None`` means no logger (Lightning's default would write ``lightning_logs/`` inside
    stage outputs). ``overrides`` go straight to ``L.Trainer`` for the rare extra knob. With
    ``hardware.progress_bar`` the bar counts optimizer steps of ``max_steps`` and shows loss and
    tokens/s (:class:`~lmops.training.progress.StepProgressBar`) unless a bar is passed in.
    """
    if accumulate < 1:
        raise LmopsError(f"gradient accumulation must be >= 1, got {accumulate}")
    callbacks = list(callbacks)
    if hw.progress_bar and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(StepProgressBar())
    kwargs: dict[str, Any] = {
        "accelerator": hw.accelerator,
        "devices": resolve_devices(hw),
        "num_nodes": hw.num_nodes,
        "strategy": build_strategy(hw, precision),
        "precision": precision,
        "max_steps": max_steps,
        "max_epochs": -1,  # epochs never end training: max_steps does
        # val_check_interval counts micro-batches; scale so validation follows optimizer steps,
        # and let it run across epoch boundaries (check_val_every_n_epoch=None)
        "val_check_interval": val_every * accumulate,
        "check_val_every_n_epoch": None,
        "num_sanity_val_steps": 0,
        "limit_val_batches": limit_val_batches,
        "gradient_clip_val": grad_clip if grad_clip > 0 else None,
        "accumulate_grad_batches": accumulate,
        "log_every_n_steps": 1,
        "logger": False if logger is None else logger,
        "callbacks": callbacks,
        "enable_checkpointing": enable_checkpointing,
        "enable_progress_bar": hw.progress_bar,
        "enable_model_summary": False,
        "default_root_dir": str(default_root_dir),
    }
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
