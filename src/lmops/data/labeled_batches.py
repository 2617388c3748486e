"""Labeled classification rows as tensors, without Lightning.

The evaluate stage and the exported model read labeled sets too; keeping the encoding,
padding and split loading here lets them do so without importing the training stack
(``lightning`` alone costs seconds at start-up). :class:`~lmops.data.datamodules.LabeledDataModule`
wraps these for training.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from lmops.config import LmopsError
from lmops.data.tokenizer import load_tokenizer
from lmops.io import read_json, read_jsonl


def _encode_ids(
    tokenizer: Any, texts: Sequence[str], max_length: int, pad_id: int
) -> list[list[int]]:
    """Token ids of each text, the first ``max_length`` kept; an empty text becomes ``[pad_id]``
    so that every row has a last real position for the classifier to pool."""
    if max_length < 1:
        raise LmopsError("finetune.max_length must be >= 1")
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [enc.ids[:max_length] or [pad_id] for enc in encodings]


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    width = int(lengths.max()) if len(seqs) else 0
    out = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths


def encode_labeled(
    tokenizer: Any, texts: Sequence[str], max_length: int, pad_id: int
) -> dict[str, torch.Tensor]:
    """``{"input_ids": [N, T] right-padded with pad_id, "lengths": [N]}`` for inference.

    Same truncation (first ``max_length`` tokens) and padding as training batches; ``T`` is the
    longest row (at most ``max_length``).
    """
    input_ids, lengths = _pad(_encode_ids(tokenizer, texts, max_length, pad_id), pad_id)
    return {"input_ids": input_ids, "lengths": lengths}


class LabeledDataset(Dataset):
    """Pre-encoded ``(ids, label)`` rows; padding happens per batch in :func:`collate_labeled`."""

    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        if len(ids) != len(labels):
            raise ValueError("ids and labels differ in length")
        self.ids = ids
        self.labels = labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[list[int], int]:
        return self.ids[index], self.labels[index]


def collate_labeled(batch: list[tuple[list[int], int]], pad_id: int) -> dict[str, torch.Tensor]:
    input_ids, lengths = _pad([ids for ids, _ in batch], pad_id)
    labels = torch.tensor([label for _, label in batch], dtype=torch.long)
    return {"input_ids": input_ids, "lengths": lengths, "labels": labels}


class LabeledCollate:
    """A picklable collate function bound to ``pad_id`` (lambdas break spawned workers)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        return collate_labeled(batch, self.pad_id)


class LabeledSplits:
    """``labeled_dir/{train,val,test}.jsonl`` and ``labels.json``, encoded once per split."""

    def __init__(
        self,
        labeled_dir: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        max_length: int,
        pad_id: int,
    ) -> None:
        self.labeled_dir = Path(labeled_dir)
        self.tokenizer_path = Path(tokenizer_path)
        self.max_length = max_length
        self.pad_id = pad_id
        self.datasets: dict[str, LabeledDataset] = {}
        self._labels: list[str] | None = None

    @property
    def labels(self) -> list[str]:
        """Label names from ``labels.json`` (index = label id)."""
        if self._labels is None:
            path = self.labeled_dir / "labels.json"
            if not path.is_file():
                raise LmopsError(f"{path}: not found; run the clean stage (dvc repro clean)")
            self._labels = [str(x) for x in read_json(path)]
        return self._labels

    def load(self, split: str) -> LabeledDataset:
        """The split's rows, token ids truncated to ``max_length`` (cached)."""
        if split in self.datasets:
            return self.datasets[split]
        path = self.labeled_dir / f"{split}.jsonl"
        if not path.is_file():
            raise LmopsError(f"{path}: not found; run the clean stage (dvc repro clean)")
        rows = list(read_jsonl(path))
        n = len(self.labels)
        labels = [int(r["label"]) for r in rows]
        bad = [x for x in labels if not 0 <= x < n]
        if bad:
            raise LmopsError(f"{path}: label id {bad[0]} outside labels.json (0..{n - 1})")
        tokenizer = load_tokenizer(self.tokenizer_path)
        ids = _encode_ids(tokenizer, [r["text"] for r in rows], self.max_length, self.pad_id)
        self.datasets[split] = LabeledDataset(ids, labels)
        return self.datasets[split]

    def loader(self, split: str, batch_size: int) -> DataLoader:
        """The split in file order, batched and padded like training batches."""
        return DataLoader(
            self.load(split), batch_size=batch_size, collate_fn=LabeledCollate(self.pad_id)
        )
