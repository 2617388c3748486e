"""Stage pretrain: a GPT decoder trained as a causal LM on the token files, tracked in MLflow."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning as L
import mlflow

from lmops.config import LmopsError, Params
from lmops.data.datamodules import TokenDataModule
from lmops.export.bundle import save_lm_bundle
from lmops.io import atomic_dir, atomic_write_json, read_json, write_csv
from lmops.models.gpt import GPTConfig
from lmops.stage import require, stage_main
from lmops.tracking.lightning_logger import training_logger
from lmops.tracking.runs import stage_run, write_run_info
from lmops.training.callbacks import MetricHistory, ThroughputLogger
from lmops.training.lm_module import CausalLMModule
from lmops.training.trainer import accumulation, build_trainer, expected_world_size

log = logging.getLogger(__name__)


@stage_main("pretrain")
def main(params: Params, root: Path) -> None:
    cfg = params.pretrain
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
    accum = accumulation(cfg.batch_size, cfg.micro_batch_size, expected_world_size(params.hardware))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    gpt = GPTConfig(vocab_size=meta["padded_vocab_size"], **vars(cfg.model))
    data = TokenDataModule(
        tokens,
        block_size=cfg.model.block_size,
        batch_size=cfg.micro_batch_size,
        seed=cfg.seed,
        train_samples=cfg.max_steps * cfg.batch_size,
        val_samples=cfg.val_batches * cfg.micro_batch_size,
        num_workers=params.hardware.num_workers,
    )
    module = CausalLMModule(gpt, cfg)

    with stage_run(
        "pretrain",
        params,
        inputs={"tokens": tokens},
        upstream={"tokenize": tokens},
        out_dir=out,
        root=root,
    ) as run:
        mlflow.log_params(
            {"pretrain.n_params": module.model.num_params(), "pretrain.accumulate": accum}
        )
        history = MetricHistory()
        trainer = build_trainer(
            params.hardware,
            max_steps=cfg.max_steps,
            precision=cfg.precision,
            val_every=cfg.val_every * accum,
            limit_val_batches=cfg.val_batches,
            grad_clip=cfg.grad_clip,
            accumulate=accum,
            default_root_dir=str(root / ".lmops" / "pretrain"),
            logger=training_logger(run, root),
            callbacks=[history, ThroughputLogger(cfg.micro_batch_size * cfg.model.block_size)],
        )
        trainer.fit(module, datamodule=data)
        val = trainer.validate(module, datamodule=data, verbose=False)[0]

        val_losses = [r["val/loss"] for r in history.rows if "val/loss" in r]
        metrics = {
            "val/loss": float(val["val/loss"]),
            "val/ppl": float(math.exp(val["val/loss"])),
            "val/loss_first": float(val_losses[0]) if val_losses else float(val["val/loss"]),
            "train/steps": int(trainer.global_step),
            "n_params": int(module.model.num_params()),
        }
        with atomic_dir(out / "model") as tmp:
            save_lm_bundle(
                tmp, module.model, tokens / "tokenizer.json", meta["eos_id"], meta["pad_id"]
            )
        atomic_write_json(out / "metrics.json", metrics)
        write_csv(out / "history.csv", history.rows)
        mlflow.log_metrics(
            {"final/val_loss": metrics["val/loss"], "final/val_ppl": metrics["val/ppl"]}
        )
        mlflow.log_artifact(str(out / "history.csv"))
        write_run_info(out, run)
    log.info(
        "val loss %.4f (ppl %.2f) after %d steps",
        metrics["val/loss"],
        metrics["val/ppl"],
        metrics["train/steps"],
    )


if __name__ == "__main__":
    main()
