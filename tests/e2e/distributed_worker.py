"""Trains a tiny GPT with one ``hardware.strategy`` and saves what each rank ended with.

Run by tests/e2e/test_distributed.py as ``python distributed_worker.py ...`` (Lightning's own
launcher re-runs this script for the other ranks) or under ``torchrun``. Writes
``<out>/rank<r>.pt`` per rank: its local parameters (shards under FSDP), the full weights
(rank 0), the sample indices its sampler yields, the loss history and its thread count.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import lightning as L
import numpy as np
import torch

from lmops.config import HardwareConfig, ModelConfig, PretrainConfig
from lmops.data.datamodules import TokenDataModule
from lmops.training.callbacks import MetricHistory
from lmops.training.lm_module import CausalLMModule
from lmops.training.strategies import (
    configure_threads,
    full_state_dict,
    is_sharded,
    parallelize_for,
)
from lmops.training.trainer import accumulation, build_trainer, expected_world_size

CFG = PretrainConfig(
    model=ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16),
    max_steps=10,
    batch_size=8,
    micro_batch_size=4,
    warmup_steps=2,
    val_every=2,
    val_batches=2,
    lr=3e-3,
)


def write_tokens(folder: Path) -> Path:
    """A repeated random sequence: learnable within ten steps."""
    folder.mkdir(parents=True, exist_ok=True)
    seq = np.random.default_rng(0).integers(0, 50, 100)
    np.tile(seq, 40).astype(np.uint16).tofile(folder / "train.bin")
    np.tile(seq, 6).astype(np.uint16).tofile(folder / "val.bin")
    (folder / "meta.json").write_text(json.dumps({"dtype": "uint16"}))
    return folder


def local_tensor(p: torch.Tensor) -> torch.Tensor:
    """This rank's part of a parameter (a DTensor's local shard, or the tensor itself)."""
    return p.to_local() if hasattr(p, "to_local") else p


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--devices", required=True)
    parser.add_argument("--micro", type=int, required=True)
    parser.add_argument("--tokens", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    threads = configure_threads()

    cfg = dataclasses.replace(CFG, micro_batch_size=args.micro)
    hw = HardwareConfig(
        accelerator="cpu", devices=args.devices, strategy=args.strategy, progress_bar=False
    )
    accum = accumulation(cfg.batch_size, cfg.micro_batch_size, expected_world_size(hw))
    L.seed_everything(cfg.seed, verbose=False)
    module = CausalLMModule(
        dataclasses.replace(cfg.model, vocab_size=64), cfg, parallelize=parallelize_for(hw)
    )
    data = TokenDataModule(
        args.tokens,
        block_size=cfg.model.block_size,
        batch_size=cfg.micro_batch_size,
        seed=cfg.seed,
        train_samples=cfg.max_steps * cfg.batch_size,
        val_samples=cfg.val_batches * cfg.batch_size,
    )
    history = MetricHistory()
    trainer = build_trainer(
        hw,
        max_steps=cfg.max_steps,
        precision="32-true",
        val_every=cfg.val_every,
        limit_val_batches=cfg.val_batches * accum,
        grad_clip=1.0,
        accumulate=accum,
        default_root_dir=args.out,
        callbacks=[history],
    )
    trainer.fit(module, datamodule=data)

    if is_sharded(module.model):  # put every FSDP unit back in its sharded state
        for m in module.model.modules():
            if hasattr(m, "reshard"):
                m.reshard()
    result = {
        "world_size": trainer.world_size,
        "sharded": is_sharded(module.model),
        "threads": torch.get_num_threads(),
        "threads_set": threads,
        "indices": list(trainer.train_dataloader.sampler),
        "local": {
            n: local_tensor(p).detach().cpu().clone() for n, p in module.model.named_parameters()
        },
        "full_numel": {n: p.numel() for n, p in module.model.named_parameters()},
        "weights": full_state_dict(module.model),  # collective; empty dict on ranks > 0
        "val_loss": history.series("val/loss"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(result, args.out / f"rank{trainer.global_rank}.pt")


if __name__ == "__main__":
    main()
