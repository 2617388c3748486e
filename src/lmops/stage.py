"""What every stage script shares: params first, then work, and one clear line on a user error.

A stage script is ``@stage_main("pretrain")`` over a function ``(params, root) -> None``; this
module turns :class:`~lmops.config.LmopsError` into ``error: <one line>`` and exit status 1, so
a bad param never shows a traceback and never starts expensive work.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import shutil
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from lmops.config import LmopsError, Params, load_params, repo_root
from lmops.io import atomic_write_text

StageFn = Callable[[Params, Path], None]


def _quiet_libraries() -> None:
    """Keep stage output readable: progress bars and our summary, not library chatter."""
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    for name in ("mlflow", "alembic", "lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # "Passing a Python object as python_model ... CloudPickle": our pyfunc classes live in the
    # package shipped with the model (code_paths), so the warning has no action for the user.
    logging.getLogger("mlflow.pyfunc").setLevel(logging.ERROR)


def stage_main(name: str) -> Callable[[StageFn], Callable[[], None]]:
    """Decorate a stage body: load and validate params, run it, map user errors to exit 1."""

    def wrap(fn: StageFn) -> Callable[[], None]:
        @functools.wraps(fn)
        def main() -> None:
            _quiet_libraries()
            logging.basicConfig(level=logging.INFO, format=f"[{name}] %(message)s")
            try:
                root = repo_root()
                params = load_params(root / "params.yaml")
                fn(params, root)
            except LmopsError as exc:
                print(f"error: {name}: {exc}", file=sys.stderr)
                raise SystemExit(1) from None
            except KeyboardInterrupt:
                print(f"error: {name}: interrupted", file=sys.stderr)
                raise SystemExit(130) from None

        return main

    return wrap


# The check stage's out (dvc.yaml): every other stage depends on it, so `dvc repro` runs the
# check first and stops there on a bad param, before DVC removes any other stage's outputs. Its
# content never changes while the params are valid, so a valid change re-runs only the stages
# that declare the changed params, not everything downstream of the check.
PARAMS_OK = Path(".lmops") / "params.ok"
PARAMS_OK_TEXT = "params.yaml is valid (written by pipeline/check.py; the content never changes)\n"

# Optional extras a param asks for: (param that asks, is it on, import names, pip extra)
_EXTRAS: tuple[tuple[str, Callable[[Params], bool], tuple[str, ...], str], ...] = (
    ("export.onnx", lambda p: p.export.onnx, ("onnx", "onnxscript", "onnxruntime"), "onnx"),
    ("export.hf", lambda p: p.export.hf, ("transformers",), "hf"),
    (
        "hardware.data_executor.type",
        lambda p: p.hardware.data_executor.type == "ray",
        ("ray",),
        "cluster",
    ),
)


def cross_check(params: Params, root: Path) -> None:
    """The cheap checks beyond the schema that the check stage adds: the local input files
    exist and the extras the params ask for are installed.

    Each stage checks these again itself; doing it first means a missing file or package stops
    `dvc repro` before any stage's outputs are removed. Reads no data and imports no heavy
    package (the check stage runs on every params change).
    """
    data = params.data
    if data.source == "local":
        from lmops.data.sources import corpus_sources  # ~0.2 s; only for local corpora

        corpus_sources(data, root)  # the clean stage's own check: exists, known extension
        if params.finetune.task != "none":
            for name in ("labeled_train_path", "labeled_test_path"):
                value = getattr(data, name)
                path = Path(value) if value else None
                if path is not None and not (path if path.is_absolute() else root / path).exists():
                    raise LmopsError(f"params.yaml: data.{name} {value}: no such file; fix it")
    for key, wanted, modules, extra in _EXTRAS:
        if wanted(params):
            missing = [m for m in modules if importlib.util.find_spec(m) is None]
            if missing:
                raise LmopsError(
                    f"params.yaml: {key} needs the '{extra}' extra (missing {', '.join(missing)}): "
                    f"pip install -e '.[{extra}]', or change {key}"
                )
    if params.hardware.data_executor.type == "slurm" and shutil.which("sbatch") is None:
        raise LmopsError(
            "params.yaml: hardware.data_executor.type is slurm but sbatch is not on the PATH; "
            "run on a SLURM login node or use type local"
        )


def check_params(params: Params, root: Path) -> Path:
    """What the check stage does after :func:`stage_main` validated ``params``: cross-check
    them, then write :data:`PARAMS_OK` (the same bytes every time, atomically) for the other
    stages to depend on."""
    cross_check(params, root)
    return atomic_write_text(root / PARAMS_OK, PARAMS_OK_TEXT)


def require(path: Path, hint: str) -> Path:
    """Fail early, with the stage to run, when an input of this stage is missing."""
    if not path.exists():
        raise LmopsError(f"{path} is missing; {hint}")
    return path
