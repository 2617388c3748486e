"""The pretrain stage's work, cut as litgpt cuts it: set up, attach to the run, fit, save.

:meth:`Pretraining.setup` does everything that can fail on bad input (token files too short for
the block, a resume checkpoint to find) before any MLflow run or training starts; the stage
script only opens the run around :meth:`Pretraining.fit` and writes what it returns.

Every process of a multi-device run builds the same :class:`Pretraining` (Lightning's launcher
re-runs the stage for ranks > 0; torchrun and srun start all of them); only global rank 0 has an
MLflow run and writes outputs. A run killed midway resumes from its last checkpoint, in the same
MLflow run, and ends with the same model as an uninterrupted run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import mlflow

from lmops.config import LmopsError, Params
from lmops.data.datamodules import TokenDataModule
from lmops.export.bundle import save_lm_bundle
from lmops.io import read_json
from lmops.models.gpt import GPT
from lmops.tracking.lightning_logger import training_logger
from lmops.tracking.runs import log_new_params
from lmops.training.callbacks import pretrain_callbacks
from lmops.training.checkpointing import (
    CheckpointStore,
    ResumeCheckpoint,
    pretrain_checkpoint_store,
)
from lmops.training.lm_module import CausalLMModule
from lmops.training.strategies import env_is_global_zero, full_state_dict, parallelize_for
from lmops.training.trainer import accumulation, build_trainer, expected_world_size

__all__ = ["Pretraining", "PretrainResult"]

log = logging.getLogger(__name__)


@dataclass
class PretrainResult:
    """What rank 0 writes: the final metrics, the loss history and the trained weights."""

    metrics: dict[str, float | int]
    history: list[dict[str, Any]]
    model: GPT


@dataclass
class Pretraining:
    """One pretraining run, built from params and the tokenize stage's folder."""

    params: Params
    root: Path
    tokens: Path
    meta: dict[str, Any]
    module: CausalLMModule
    data: TokenDataModule
    accumulate: int
    store: CheckpointStore | None
    resume_from: tuple[Path, int] | None
    is_main: bool

    @classmethod
    def setup(cls, params: Params, root: Path, tokens: Path) -> Pretraining:
        """Check the inputs against the params, find a checkpoint to resume, build the model."""
        cfg, hw = params.pretrain, params.hardware
        meta = read_json(tokens / "meta.json")
        shortest = min(meta["train_tokens"], meta["val_tokens"])
        if shortest <= cfg.model.block_size + 1:
            raise LmopsError(
                f"the token files ({meta['train_tokens']} train / {meta['val_tokens']} val "
                f"tokens) are shorter than pretrain.model.block_size ({cfg.model.block_size}); "
                "lower it or add data"
            )
        is_main = env_is_global_zero()
        store = pretrain_checkpoint_store(params, root, tokens)
        if store is not None and is_main:
            store.prepare()
        latest = store.latest() if store is not None else None
        if latest is not None and is_main:
            log.info("resuming from checkpoint at step %d (%s)", latest[1], latest[0])

        L.seed_everything(cfg.seed, workers=True, verbose=False)
        model_config = cfg.model.with_vocab(meta["vocab_size"], meta["padded_vocab_size"])
        data = TokenDataModule(
            tokens,
            block_size=cfg.model.block_size,
            batch_size=cfg.micro_batch_size,
            seed=cfg.seed,
            train_samples=cfg.max_steps * cfg.batch_size,
            # val_batches global batches, whatever the device count and micro-batch: every
            # configuration validates on the same windows
            val_samples=cfg.val_batches * cfg.batch_size,
            num_workers=hw.num_workers,
        )
        module = CausalLMModule(
            model_config, cfg, compile=hw.compile, parallelize=parallelize_for(hw)
        )
        accumulate = accumulation(cfg.batch_size, cfg.micro_batch_size, expected_world_size(hw))
        return cls(params, root, tokens, meta, module, data, accumulate, store, latest, is_main)

    @property
    def resume_run_id(self) -> str | None:
        """The MLflow run the interrupted attempt opened, to continue its metric history."""
        if self.store is None or self.resume_from is None:
            return None
        return self.store.run_id()

    def _attach(self, run: mlflow.ActiveRun) -> None:
        """Rank 0, inside the stage's run: remember the run for a resume, log derived params."""
        if self.store is not None:
            self.store.save_run_id(run.info.run_id)
        if self.resume_from is not None:
            mlflow.set_tag("lmops.resumed_from_step", str(self.resume_from[1]))
        log_new_params(
            {
                "pretrain.n_params": self.module.model.num_params(),
                "pretrain.accumulate": self.accumulate,
            }
        )

    def fit(self, run: mlflow.ActiveRun | None) -> PretrainResult | None:
        """Train, keep the weights with the lowest validation loss, measure them.

        Every rank takes part (the final validation and gathering sharded weights are
        collective); rank 0, the one with ``run``, gets the result, the others ``None``.
        """
        cfg, hw = self.params.pretrain, self.params.hardware
        if run is not None:
            self._attach(run)
        model = self.module.model
        cbs = pretrain_callbacks(
            cfg,
            hw,
            tokens_per_step=cfg.batch_size * cfg.model.block_size,
            flops_per_token=model.flops_per_token(),
            log_every_n_steps=self.params.tracking.log_every_n_steps,
        )
        callbacks: list[L.Callback] = list(cbs.all)
        if self.store is not None:
            val_every = cfg.val_every if cfg.val_batches > 0 else None
            callbacks.append(ResumeCheckpoint(self.store, hw.checkpoint_every, val_every))
        trainer = build_trainer(
            hw,
            max_steps=cfg.max_steps,
            precision=cfg.precision,
            val_every=cfg.val_every,
            limit_val_batches=cfg.val_batches * self.accumulate,  # per process, micro-batches
            grad_clip=cfg.grad_clip,
            accumulate=self.accumulate,
            default_root_dir=str(self.root / ".lmops" / "pretrain"),
            logger=training_logger(run, self.root) if run is not None else None,
            callbacks=callbacks,
            enable_checkpointing=self.store is not None,
            log_every_n_steps=self.params.tracking.log_every_n_steps,
        )
        ckpt = str(self.resume_from[0]) if self.resume_from else None
        # weights_only: a checkpoint is data (tensors, counters, RNG states), never code to run
        trainer.fit(self.module, datamodule=self.data, ckpt_path=ckpt, weights_only=True)
        # the stage's model is the one with the lowest validation loss (every rank loads its
        # part), and the final metrics are measured on it
        cbs.best.load_best(model)
        val_loss = float(
            trainer.validate(self.module, datamodule=self.data, verbose=False)[0]["val/loss"]
        )
        weights = full_state_dict(model)  # every rank takes part under FSDP
        if run is None:
            return None
        val_losses = [r["val/loss"] for r in cbs.history.rows if "val/loss" in r]
        metrics = {
            "val/loss": val_loss,
            "val/ppl": float(math.exp(val_loss)),
            "val/loss_first": float(val_losses[0]) if val_losses else val_loss,
            "train/steps": int(trainer.global_step),
            "train/best_step": int(cbs.best.best_step or trainer.global_step),
            "n_params": int(model.num_params()),
        }
        final = GPT(model.config)
        final.load_state_dict(weights)
        return PretrainResult(metrics, cbs.history.rows, final)

    def save_model(self, folder: Path, model: GPT) -> None:
        """The model folder: weights, config and the tokenizer it was trained with."""
        save_lm_bundle(
            folder, model, self.tokens / "tokenizer.json", self.meta["eos_id"], self.meta["pad_id"]
        )

    def finish(self, result: PretrainResult) -> None:
        """The outputs are written: nothing is left to resume; say how it went."""
        if self.store is not None:
            self.store.clear()
        m = result.metrics
        log.info(
            "val loss %.4f (ppl %.2f) after %d steps", m["val/loss"], m["val/ppl"], m["train/steps"]
        )
