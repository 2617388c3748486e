"""What every stage script shares: params first, then work, and one clear line on a user error.

A stage script is ``@stage_main("pretrain")`` over a function ``(params, root) -> None``; this
module turns :class:`~lmops.config.LmopsError` into ``error: <one line>`` and exit status 1, so
a bad param never shows a traceback and never starts expensive work.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from lmops.config import LmopsError, Params, load_params, repo_root

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


def require(path: Path, hint: str) -> Path:
    """Fail early, with the stage to run, when an input of this stage is missing."""
    if not path.exists():
        raise LmopsError(f"{path} is missing; {hint}")
    return path
