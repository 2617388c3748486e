"""Helpers for end-to-end tests: a throw-away copy of the project with its own git, DVC and MLflow."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
COPY = ["dvc.yaml", "params.yaml", "pipeline", "src", "data/raw", ".dvcignore", ".gitignore"]

# Small enough for a 2-core CI machine, large enough that learning shows in the metrics.
TINY_PARAMS = {
    "data": {"sample": {"n_documents": 500, "n_labeled_train": 600, "n_labeled_test": 200}},
    "tokenize": {"vocab_size": 384},
    "pretrain": {
        "model": {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 64},
        "max_steps": 80,
        "batch_size": 16,
        "micro_batch_size": 16,
        "warmup_steps": 10,
        "val_every": 20,
        "val_batches": 4,
        "lr": 0.003,
    },
    "finetune": {"max_steps": 60, "batch_size": 32, "val_every": 30, "max_length": 48},
    "evaluate": {"ppl_max_batches": 4},
    "tracking": {"log_every_n_steps": 2, "system_metrics_interval": 1},
    "hardware": {"accelerator": "cpu", "devices": "1", "progress_bar": False},
}


def deep_update(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.pop("MLFLOW_TRACKING_URI", None)
    e.pop("DVC_ROOT", None)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e.get('PATH', '')}"
    e["DVC_NO_ANALYTICS"] = "1"
    e["GIT_PYTHON_REFRESH"] = "quiet"
    e["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "1"
    e["OMP_NUM_THREADS"] = e.get("OMP_NUM_THREADS", "2")
    return e


def run(
    cmd: list[str], cwd: Path, check: bool = True, timeout: float = 1200
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
        )
    return proc


def make_project(dest: Path, params: dict | None = None, git: bool = True) -> Path:
    """Copy the project's pipeline into ``dest`` and write params (defaults + TINY + ``params``)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        elif src.exists():
            shutil.copy2(src, dest / name)
    write_params(dest, deep_update(copy.deepcopy(TINY_PARAMS), copy.deepcopy(params or {})))
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "config", "user.email", "ci@lmops.test"], dest)
        run(["git", "config", "user.name", "ci"], dest)
        run(["dvc", "init", "-q"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-q", "-m", "init"], dest)
    return dest


def write_params(dest: Path, overrides: dict) -> None:
    base = yaml.safe_load((dest / "params.yaml").read_text())
    (dest / "params.yaml").write_text(yaml.safe_dump(deep_update(base, overrides), sort_keys=False))
