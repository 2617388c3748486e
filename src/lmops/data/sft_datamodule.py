"""Batches for prompt -> response fine-tuning from ``labeled/{train,val}.jsonl``.

Rows are ``{"prompt", "response"}`` (the clean stage writes them for ``finetune.task: sft``);
they are encoded with the prompt template and masked prompt loss (:mod:`lmops.data.sft`), then
either packed (``packing``: several examples per row, block-diagonal attention) or padded one
example per row. The counts of kept / truncated / dropped examples go to the stage's report.
The train rows are reshuffled every epoch, and a resumed run continues with exactly the rows the
interrupted one would have read next (:class:`~lmops.data.datamodules.ShuffledTrainData`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from lmops.config import LmopsError
from lmops.data.datamodules import ShuffledTrainData
from lmops.data.sft import (
    SFTCounts,
    collate_packed,
    collate_padded,
    encode_examples,
    pack,
    read_pairs,
)
from lmops.data.tokenizer import load_tokenizer

__all__ = ["SFTDataModule"]


class SFTDataModule(ShuffledTrainData):
    """Train (reshuffled every epoch from ``seed``, resumable) and val loaders of SFT batches:
    ``{"input_ids", "labels"}`` plus ``{"position_ids", "segment_ids"}`` when packed."""

    def __init__(
        self,
        labeled_dir: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        *,
        max_length: int,
        batch_size: int,
        eos_id: int,
        pad_id: int,
        template: str,
        overflow: str,
        packing: bool,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.labeled_dir = Path(labeled_dir)
        self.tokenizer_path = Path(tokenizer_path)
        self.max_length = max_length
        self.batch_size = batch_size
        self.eos_id = eos_id
        self.pad_id = pad_id
        self.template = template
        self.overflow = overflow
        self.packing = packing
        self.seed = seed
        self.num_workers = num_workers
        self.items: dict[str, list[Any]] = {}
        self.counts: dict[str, SFTCounts] = {}

    def _load(self, split: str) -> list[Any]:
        if split not in self.items:
            tokenizer = load_tokenizer(self.tokenizer_path)
            examples, counts = encode_examples(
                tokenizer,
                read_pairs(self.labeled_dir / f"{split}.jsonl"),
                eos_id=self.eos_id,
                max_length=self.max_length,
                template=self.template,
                overflow=self.overflow,
            )
            if not examples:
                raise LmopsError(
                    f"no {split} example fits finetune.max_length ({self.max_length} tokens) "
                    f"({counts.dropped} dropped); raise it or shorten the prompts"
                )
            self.counts[split] = counts
            if self.packing:
                self.items[split] = pack(examples, self.max_length, pad_id=self.pad_id)
            else:
                self.items[split] = examples
        return self.items[split]

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):
            self._load(split)

    def _collate(self, items: list[Any]) -> dict[str, torch.Tensor]:
        if self.packing:
            return collate_packed(items)
        return collate_padded(items, pad_id=self.pad_id)

    def train_dataloader(self) -> DataLoader:
        return self._shuffled_loader(
            self._load("train"), collate_fn=self._collate, num_workers=self.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self._load("val"),
            batch_size=self.batch_size,
            collate_fn=self._collate,
            num_workers=self.num_workers,
        )

    def report(self) -> dict[str, Any]:
        """Examples kept / truncated / dropped per split, and rows after packing."""
        return {
            split: {**counts.as_dict(), "rows": len(self.items[split])}
            for split, counts in self.counts.items()
        }
