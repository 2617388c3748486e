"""Stage pretrain: a GPT decoder trained as a causal LM on the token files, tracked in MLflow.

Every process of a multi-device run executes this script (Lightning's launcher re-runs it for
ranks > 0; torchrun and srun start all of them); only global rank 0 opens the MLflow run and
writes the outputs. A run killed midway resumes from its last checkpoint when the stage runs
again, in the same MLflow run, and ends with the same model as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path

import lightning as L
import mlflow

from lmops.config import LmopsError, Params
from lmops.data.datamodules import TokenDataModule
from lmops.export.bundle import save_lm_bundle
from lmops.io import atomic_dir, atomic_write_json, read_json, write_csv
from lmops.models.gpt import GPT, GPTConfig
from lmops.stage import require, stage_main
from lmops.tracking.lightning_logger import training_logger
from lmops.tracking.runs import log_new_params, stage_run, write_run_info
from lmops.training.callbacks import pretrain_callbacks
from lmops.training.checkpointing import ResumeCheckpoint, pretrain_checkpoint_store
from lmops.training.lm_module import CausalLMModule
from lmops.training.strategies import (
    configure_threads,
    env_is_global_zero,
    full_state_dict,
    parallelize_for,
)
from lmops.training.trainer import accumulation, build_trainer, expected_world_size

log = logging.getLogger(__name__)


@stage_main("pretrain")
def main(params: Params, root: Path) -> None:
    configure_threads()
    cfg, hw = params.pretrain, params.hardware
    tokens = require(root / "data" / "tokens" / "meta.json", "run the tokenize stage first").parent
    out = root / "models" / "pretrain"
    meta = read_json(tokens / "meta.json")
    if (
        meta["train_tokens"] <= cfg.model.block_size + 1
        or meta["val_tokens"] <= cfg.model.block_size + 1
    ):
        raise LmopsError(
            f"the token files ({meta['train_tokens']} train / {meta['val_tokens']} val tokens) are "
            f"shorter than pretrain.model.block_size ({cfg.model.block_size}); lower it or add data"
        )
    accum = accumulation(cfg.batch_size, cfg.micro_batch_size, expected_world_size(hw))
    is_main = env_is_global_zero()

    store = pretrain_checkpoint_store(params, root, tokens)
    if store is not None and is_main:
        store.prepare()
    latest = store.latest() if store is not None else None
    if latest is not None and is_main:
        log.info("resuming from checkpoint at step %d (%s)", latest[1], latest[0])

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    gpt = GPTConfig(vocab_size=meta["padded_vocab_size"], **vars(cfg.model))
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
    module = CausalLMModule(gpt, cfg, compile=hw.compile, parallelize=parallelize_for(hw))

    tracked = (
        stage_run(
            "pretrain",
            params,
            inputs={"tokens": tokens},
            upstream={"tokenize": tokens},
            out_dir=out,
            root=root,
            resume_run_id=store.run_id() if store is not None and latest is not None else None,
            system_metrics=True,
        )
        if is_main
        else contextlib.nullcontext(None)
    )
    with tracked as run:
        if run is not None:
            if store is not None:
                store.save_run_id(run.info.run_id)
            if latest is not None:
                mlflow.set_tag("lmops.resumed_from_step", str(latest[1]))
            log_new_params(
                {"pretrain.n_params": module.model.num_params(), "pretrain.accumulate": accum}
            )
        cbs = pretrain_callbacks(
            cfg,
            hw,
            tokens_per_step=cfg.batch_size * cfg.model.block_size,
            flops_per_token=module.model.flops_per_token(),
            log_every_n_steps=params.tracking.log_every_n_steps,
        )
        callbacks: list[L.Callback] = list(cbs.all)
        if store is not None:
            val_every = cfg.val_every if cfg.val_batches > 0 else None
            callbacks.append(ResumeCheckpoint(store, hw.checkpoint_every, val_every))
        trainer = build_trainer(
            hw,
            max_steps=cfg.max_steps,
            precision=cfg.precision,
            val_every=cfg.val_every,
            limit_val_batches=cfg.val_batches * accum,  # per process, micro-batches
            grad_clip=cfg.grad_clip,
            accumulate=accum,
            default_root_dir=str(root / ".lmops" / "pretrain"),
            logger=training_logger(run, root) if run is not None else None,
            callbacks=callbacks,
            enable_checkpointing=store is not None,
            log_every_n_steps=params.tracking.log_every_n_steps,
        )
        trainer.fit(module, datamodule=data, ckpt_path=str(latest[0]) if latest else None)
        # the stage's model is the one with the lowest validation loss (every rank loads its
        # part), and the final metrics are measured on it
        cbs.best.load_best(module.model)
        val = trainer.validate(module, datamodule=data, verbose=False)[0]
        weights = full_state_dict(module.model)  # every rank takes part under FSDP
        if run is None:
            return  # ranks > 0: training done, rank 0 writes the outputs

        val_losses = [r["val/loss"] for r in cbs.history.rows if "val/loss" in r]
        metrics = {
            "val/loss": float(val["val/loss"]),
            "val/ppl": float(math.exp(val["val/loss"])),
            "val/loss_first": float(val_losses[0]) if val_losses else float(val["val/loss"]),
            "train/steps": int(trainer.global_step),
            "train/best_step": int(cbs.best.best_step or trainer.global_step),
            "n_params": int(module.model.num_params()),
        }
        model = GPT(gpt)
        model.load_state_dict(weights)
        with atomic_dir(out / "model") as tmp:
            save_lm_bundle(tmp, model, tokens / "tokenizer.json", meta["eos_id"], meta["pad_id"])
        atomic_write_json(out / "metrics.json", metrics)
        write_csv(out / "history.csv", cbs.history.rows)
        mlflow.log_metrics(
            {"final/val_loss": metrics["val/loss"], "final/val_ppl": metrics["val/ppl"]}
        )
        mlflow.log_artifact(str(out / "history.csv"))
        write_run_info(out, run)
    if store is not None:
        store.clear()  # the outputs are written: nothing left to resume
    log.info(
        "val loss %.4f (ppl %.2f) after %d steps",
        metrics["val/loss"],
        metrics["val/ppl"],
        metrics["train/steps"],
    )


if __name__ == "__main__":
    main()
