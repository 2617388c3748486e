"""Resume checkpoints: a killed training run (pretrain or finetune) restarts where it stopped and
ends exactly as an uninterrupted run would.

A checkpoint holds everything the next step depends on: model, optimizer and LR scheduler
(Lightning), loop counters (Lightning), the data position (the DataModule's ``state_dict``), the
random number generators of every rank, and the state of every callback that keeps one. They live
in a :class:`CheckpointStore` folder outside the stage's DVC outputs (DVC deletes those before it
runs a stage), named by a hash of what determines the result (the stage's params and the input
tokens, or the pretrained model and the labeled set) so a checkpoint of other params is never
resumed. :class:`ResumePoint` is what a stage does with them: find the checkpoint to resume,
remember the MLflow run, add the saving callback, clear the store once the outputs are written.

Writes are atomic: Lightning writes into a temp name, which is renamed into place only when
complete (a file, or a folder for sharded FSDP / DeepSpeed checkpoints); ``latest.json`` names the
newest complete one. A SIGKILL at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

from lmops.config import HardwareConfig, Params, to_flat_dict
from lmops.io import atomic_write_json, read_json, sha256_file, sha256_path
from lmops.tracking.runs import RUN_INFO
from lmops.training.strategies import env_is_global_zero, expected_world_size

__all__ = [
    "CheckpointStore",
    "ResumeCheckpoint",
    "ResumePoint",
    "checkpoint_key",
    "finetune_checkpoint_store",
    "pretrain_checkpoint_store",
]

log = logging.getLogger(__name__)

LATEST = "latest.json"
RUN = "run.json"
_TMP_PREFIX = ".tmp-"
_TOKEN_FILES = ("train.bin", "val.bin", "meta.json", "tokenizer.json")


def checkpoint_key(*parts: Any) -> str:
    """A short hash of JSON-able ``parts`` (params, input hashes): the folder a run's checkpoints
    go to. Any change in them gives a new folder, so a stale checkpoint is never resumed."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckpointStore:
    """The checkpoint folder of one run, ``<base>/<key>/``: ``step-00000100.ckpt`` files (or
    folders), ``latest.json`` naming the newest, ``run.json`` with the MLflow run id.

    Only global rank 0 writes or deletes; every rank may read.
    """

    def __init__(self, base: str | os.PathLike[str], key: str) -> None:
        self.base = Path(base)
        self.key = key
        self.dir = self.base / key

    # ------------------------------------------------------------------ lifecycle (rank 0)

    def prepare(self) -> None:
        """Create the folder; discard checkpoints of other params or inputs and half-written
        temp checkpoints left by a kill."""
        if self.base.is_dir():
            for other in sorted(self.base.iterdir()):
                if other.name != self.key:
                    log.info(
                        "discarding stale checkpoints %s (written with other params or input data)",
                        other,
                    )
                    _remove(other)
        self.dir.mkdir(parents=True, exist_ok=True)
        for leftover in self.dir.glob(f"{_TMP_PREFIX}*"):
            _remove(leftover)

    def clear(self) -> None:
        """Remove this run's checkpoints: called once the stage's outputs are written."""
        _remove(self.dir)
        if self.base.is_dir() and not any(self.base.iterdir()):
            self.base.rmdir()

    # ------------------------------------------------------------------ reading

    def latest(self) -> tuple[Path, int] | None:
        """``(path, step)`` of the newest complete checkpoint, or ``None``."""
        pointer = self.dir / LATEST
        if not pointer.is_file():
            return None
        try:
            info = read_json(pointer)
            path = self.dir / str(info["name"])
            step = int(info["step"])
        except (ValueError, KeyError, TypeError):
            log.info("ignoring unreadable %s", pointer)
            return None
        if not path.exists():
            log.info("ignoring %s: %s is missing", pointer, path.name)
            return None
        return path, step

    def run_id(self) -> str | None:
        """The MLflow run id stored by :meth:`save_run_id`, if any."""
        path = self.dir / RUN
        if not path.is_file():
            return None
        try:
            return str(read_json(path)["run_id"])
        except (ValueError, KeyError, TypeError):
            return None

    def save_run_id(self, run_id: str) -> None:
        atomic_write_json(self.dir / RUN, {"run_id": run_id})

    # ------------------------------------------------------------------ writing (all ranks)

    def save(self, trainer: L.Trainer) -> Path:
        """Write a checkpoint of ``trainer`` at its current step, atomically. Collective: every
        rank calls it (sharded strategies write a part each)."""
        step = trainer.global_step
        name = f"step-{step:08d}.ckpt"
        tmp = self.dir / f"{_TMP_PREFIX}{name}"
        final = self.dir / name
        if trainer.is_global_zero:
            _remove(tmp)
        trainer.strategy.barrier("lmops.checkpoint.start")
        trainer.save_checkpoint(tmp)  # ends with a barrier: every rank has written its part
        if trainer.is_global_zero:
            _fsync_tree(tmp)
            _remove(final)
            os.replace(tmp, final)
            atomic_write_json(self.dir / LATEST, {"name": name, "step": step})
            for old in self.dir.glob("step-*.ckpt"):
                if old.name != name:
                    _remove(old)
        trainer.strategy.barrier("lmops.checkpoint.end")
        return final


def pretrain_checkpoint_store(
    params: Params, root: str | os.PathLike[str], tokens: str | os.PathLike[str]
) -> CheckpointStore | None:
    """Where this run's resume checkpoints go, keyed by what decides the result (the pretrain
    params and the input tokens) and by the layout a checkpoint is only valid for (strategy and
    process count: the loop counters count per-process micro-batches)."""
    if params.hardware.checkpoint_every <= 0:
        return None
    # the token data itself, not the folder's run.json: a re-run of tokenize that wrote the same
    # tokens leaves the checkpoints valid
    data = {name: sha256_path(Path(tokens) / name) for name in _TOKEN_FILES}
    key = checkpoint_key(to_flat_dict(params.pretrain), data, _layout(params.hardware))
    return CheckpointStore(Path(root) / ".lmops" / "pretrain" / "checkpoints", key)


def finetune_checkpoint_store(
    params: Params,
    root: str | os.PathLike[str],
    pretrained: str | os.PathLike[str],
    labeled: str | os.PathLike[str],
) -> CheckpointStore | None:
    """Where the finetune stage's resume checkpoints go, keyed like pretraining's: the finetune
    params, the pretrained model folder and the labeled set it trains on, and the layout.
    ``None`` when checkpoints are off or nothing trains (``finetune.task: none``)."""
    if params.hardware.checkpoint_every <= 0 or params.finetune.task == "none":
        return None
    data = {"pretrained": _content_hash(Path(pretrained)), "labeled": _content_hash(Path(labeled))}
    key = checkpoint_key(to_flat_dict(params.finetune), data, _layout(params.hardware))
    return CheckpointStore(Path(root) / ".lmops" / "finetune" / "checkpoints", key)


def _layout(hw: HardwareConfig) -> dict[str, str]:
    """What a checkpoint is only valid for: the strategy and the process count (the loop
    counters count per-process micro-batches), and how sharded strategies write their files."""
    layout = {"strategy": hw.strategy, "processes": str(expected_world_size(hw))}
    if hw.strategy == "fsdp":
        layout["fsdp_checkpoint"] = hw.fsdp_checkpoint
    if hw.strategy == "deepspeed":
        layout["deepspeed_stage"] = str(hw.deepspeed_stage)
    return layout


def _content_hash(folder: Path) -> dict[str, str]:
    """Each file's hash below ``folder`` but a stage's ``run.json``: a re-run upstream that wrote
    the same data leaves the checkpoints valid."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != RUN_INFO)
    return {str(p.relative_to(folder)): sha256_file(p) for p in files}


class ResumePoint:
    """A stage's resume checkpoints, from setup to cleanup: ``store`` (``None``: checkpoints off)
    and :attr:`latest`, the checkpoint to resume from (``None``: a fresh start).

    Creating one prepares the store on global rank 0 (stale and half-written checkpoints go);
    :attr:`run_id` is the MLflow run to reattach when resuming, :meth:`attach` records the run
    for the next attempt, :meth:`callbacks` saves checkpoints during ``fit``, :attr:`ckpt_path`
    is Lightning's ``ckpt_path``, and :meth:`finish` deletes the checkpoints once the stage's
    outputs are written.
    """

    def __init__(self, store: CheckpointStore | None) -> None:
        self.store = store
        self.is_main = env_is_global_zero()
        if store is not None and self.is_main:
            store.prepare()
        self.latest = store.latest() if store is not None else None
        if self.latest is not None and self.is_main:
            log.info("resuming from checkpoint at step %d (%s)", self.latest[1], self.latest[0])

    @property
    def run_id(self) -> str | None:
        """The MLflow run the interrupted attempt opened, to continue its metric history."""
        if self.store is None or self.latest is None:
            return None
        return self.store.run_id()

    @property
    def ckpt_path(self) -> str | None:
        return str(self.latest[0]) if self.latest is not None else None

    def attach(self, run: mlflow.ActiveRun) -> None:
        """Rank 0, inside the stage's run: remember the run for a resume, tag a resumed run."""
        if self.store is not None:
            self.store.save_run_id(run.info.run_id)
        if self.latest is not None:
            mlflow.set_tag("lmops.resumed_from_step", str(self.latest[1]))

    def callbacks(self, every_n_steps: int, val_every: int | None) -> list[L.Callback]:
        """The checkpoint-saving callback (none when checkpoints are off)."""
        if self.store is None:
            return []
        return [ResumeCheckpoint(self.store, every_n_steps, val_every)]

    def finish(self) -> None:
        """The outputs are written: nothing is left to resume."""
        if self.store is not None and self.is_main:
            self.store.clear()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _fsync_tree(path: Path) -> None:
    """Flush a checkpoint file (or every file of a checkpoint folder) to disk before the rename
    makes it visible, so a power cut cannot leave a complete-looking name over partial data."""
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for f in files:
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


# --------------------------------------------------------------------------- RNG


def _rng_state() -> dict[str, Any]:
    """This process's generators as plain tensors and lists (loadable with weights_only)."""
    np_state = np.random.get_state()
    py_version, py_state, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            str(np_state[0]),
            torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
            *[float(x) if isinstance(x, float) else int(x) for x in np_state[2:]],
        ],
        "python": [py_version, list(py_state), py_gauss],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))


def _gather(obj: Any) -> list[Any]:
    """``obj`` of every rank, in rank order (just ``[obj]`` without a process group)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [obj]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


# --------------------------------------------------------------------------- callback


class ResumeCheckpoint(Checkpoint):
    """Saves a resume checkpoint into ``store`` every ``every_n_steps`` optimizer steps, and
    carries every rank's RNG state in it.

    When validation runs at the same step, the checkpoint is written after it (and after the
    callbacks that react to it, since Lightning runs checkpoint callbacks last): Lightning does
    not repeat a validation that comes after the checkpoint it resumes from, so saving before it
    would lose that validation (its metrics, its vote in early stopping and best-weights
    selection). ``val_every`` tells which steps validate (``None``: none).

    The RNG states are restored when training starts, after the data loaders are built, i.e.
    just where the uninterrupted run was when it wrote them.
    """

    def __init__(self, store: CheckpointStore, every_n_steps: int, val_every: int | None) -> None:
        if every_n_steps <= 0:
            raise ValueError("every_n_steps must be > 0")
        self.store = store
        self.every_n_steps = every_n_steps
        self.val_every = val_every
        self._pending = False
        self._last_step = -1
        self._rng_to_restore: list[dict[str, Any]] | None = None
        self.saved_steps: list[int] = []

    # ------------------------------------------------------------------ saving

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        step = trainer.global_step
        if step == self._last_step:
            return  # still accumulating micro-batches
        self._last_step = step
        last = trainer.max_steps > 0 and step >= trainer.max_steps
        if step % self.every_n_steps or last:
            return  # not due, or the last step: the stage writes its outputs right after
        if self.val_every and step % self.val_every == 0:
            self._pending = True  # after this step's validation
        else:
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending and not trainer.sanity_checking:
            self._pending = False
            self._save(trainer)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self._pending:  # validation was expected but did not run (e.g. no val batches)
            self._pending = False
            log.info("step %d: validation did not run; checkpoint skipped", trainer.global_step)

    def _save(self, trainer: L.Trainer) -> None:
        path = self.store.save(trainer)
        self.saved_steps.append(trainer.global_step)
        if trainer.is_global_zero:
            log.info("checkpoint at step %d: %s", trainer.global_step, path)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        # called on every rank while the checkpoint is assembled: a collective is safe here
        return {"rng": _gather(_rng_state())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_step = trainer.global_step
        states, self._rng_to_restore = self._rng_to_restore, None
        if not states:
            return
        rank = trainer.global_rank
        if len(states) != trainer.world_size:
            log.info(
                "checkpoint has RNG states of %d processes, this run has %d: every rank takes "
                "rank 0's (the run stays reproducible, not bit-identical to an uninterrupted one)",
                len(states),
                trainer.world_size,
            )
            rank = 0
        _set_rng_state(states[rank])
