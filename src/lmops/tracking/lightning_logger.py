"""Lightning's MLFlowLogger attached to the stage's own run, so training metrics land beside its tags."""

from __future__ import annotations

from pathlib import Path

import mlflow
from lightning.pytorch.loggers import MLFlowLogger

from lmops.tracking.runs import tracking_uri


def training_logger(run: mlflow.ActiveRun, root: Path) -> MLFlowLogger:
    """Log per-step metrics asynchronously into ``run``; models are logged by the stage, not here."""
    return MLFlowLogger(
        experiment_name=mlflow.get_experiment(run.info.experiment_id).name,
        run_id=run.info.run_id,
        tracking_uri=tracking_uri(root),
        log_model=False,
        synchronous=False,
    )
