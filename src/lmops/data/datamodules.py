"""LightningDataModules: random token windows for pretraining, padded labeled batches for fine-tuning.

Why windows keyed by (seed, index): sample ``i`` is always the same window for a given seed, so
a run is reproducible whatever the number of workers or devices (a distributed sampler only
decides *which* indices a rank gets), and validation sees the same windows at every check.
Token files are memory maps, so workers share the page cache instead of copying the corpus.

Every train loader can resume mid-run: the data position (samples consumed) is the DataModule's
``state_dict``, saved in resume checkpoints, and its sampler starts from it. Pretraining reads
one pass of windows (:class:`WindowSampler`); fine-tuning loops over a small set several times,
reshuffled each epoch (:class:`ShuffleSampler`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from lmops.config import LmopsError
from lmops.data.labeled_batches import (
    LabeledCollate,
    LabeledDataset,
    LabeledSplits,
    collate_labeled,
    encode_labeled,
)
from lmops.data.shards import open_tokens
from lmops.io import read_json

__all__ = [
    "LabeledDataModule",
    "LabeledDataset",
    "ShuffleSampler",
    "ShuffledTrainData",
    "TokenDataModule",
    "TokenWindowDataset",
    "WindowSampler",
    "collate_labeled",
    "encode_labeled",
]

_MASK64 = (1 << 64) - 1


def _mix64(x: int) -> int:
    """SplitMix64 finalizer: a fast, well-spread, platform-independent integer hash."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK64
    return x ^ (x >> 31)


def window_offset(seed: int, index: int, n_offsets: int) -> int:
    """The start of window ``index`` for ``seed``, uniform over ``range(n_offsets)``."""
    h = _mix64((seed & _MASK64) * 0x9E3779B97F4A7C15 + index + 1 & _MASK64)
    return _mix64(h ^ 0xD1B54A32D192ED03) % n_offsets


class TokenWindowDataset(Dataset):
    """``num_samples`` windows ``x = tokens[o:o+T]``, ``y = tokens[o+1:o+T+1]`` (int64).

    The offset ``o`` of sample ``i`` depends only on ``(seed, i)``.
    """

    def __init__(self, tokens: np.ndarray, block_size: int, num_samples: int, seed: int) -> None:
        if block_size <= 0:
            raise LmopsError("pretrain.model.block_size must be > 0")
        if len(tokens) < block_size + 1:
            raise LmopsError(
                f"only {len(tokens)} tokens but a window needs block_size + 1 = {block_size + 1}; "
                "lower pretrain.model.block_size or add text (data.*, clean.val_fraction)"
            )
        self.tokens = tokens
        self.block_size = block_size
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.n_offsets = len(tokens) - block_size

    def __len__(self) -> int:
        return self.num_samples

    def offset(self, index: int) -> int:
        return window_offset(self.seed, index, self.n_offsets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= index < self.num_samples:
            raise IndexError(index)
        o = self.offset(index)
        chunk = torch.from_numpy(np.asarray(self.tokens[o : o + self.block_size + 1], np.int64))
        return chunk[:-1], chunk[1:]

    # A memmap would be pickled as a full copy for each spawned worker: reopen it instead.
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        tokens = self.tokens
        if isinstance(tokens, np.memmap) and tokens.filename is not None:
            state["tokens"] = ("__memmap__", tokens.filename, tokens.dtype.str, tokens.offset)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        tokens = state["tokens"]
        if isinstance(tokens, tuple) and tokens and tokens[0] == "__memmap__":
            _, filename, dtype, offset = tokens
            state["tokens"] = np.memmap(filename, dtype=np.dtype(dtype), mode="r", offset=offset)
        self.__dict__.update(state)


class WindowSampler(DistributedSampler):
    """Sample indices for one rank of ``num_replicas``, from global sample ``start`` on.

    Rank ``r`` takes ``start + r, start + r + W, ...``: the micro-batches of all ranks in one
    optimizer step together are exactly the global samples ``[s*B, (s+1)*B)`` of a global batch
    ``B``, whatever the number of devices and the accumulation, so a 2-process run trains on the
    same batches as a 1-process run and ranks never share a window. ``start`` (a multiple of
    ``B``) is where a resumed run picks up. ``len()`` stays the full count, as Lightning expects
    of a loader resumed mid-epoch (its progress counters already include the consumed batches).

    A ``DistributedSampler`` so that Lightning does not wrap it in another one.
    """

    def __init__(self, dataset: Dataset, num_replicas: int = 1, rank: int = 0, start: int = 0):
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=True
        )
        if start % num_replicas:
            raise ValueError(f"start {start} is not a multiple of num_replicas {num_replicas}")
        self.start = start

    def __iter__(self):  # type: ignore[override]
        return iter(range(self.start + self.rank, self.total_size, self.num_replicas))


class ShuffleSampler(DistributedSampler):
    """Seeded shuffled indices, epoch after epoch, for one rank of ``num_replicas``; a run resumed
    after ``consumed`` samples continues with exactly the indices the interrupted run would have
    read next, in this epoch and the ones after.

    The order is the one fine-tuning has always trained on (a fresh run is unchanged by
    resuming), and does not depend on ``num_workers``:

    - one process: what ``DataLoader(shuffle=True, generator=Generator().manual_seed(seed))``
      yields (with ``num_workers=0``). That loader draws from its one generator, every epoch,
      the workers' base seed (when its iterator is created), the epoch's permutation, and a
      second permutation that ``RandomSampler`` draws for its (empty) remainder when the epoch
      runs out; epoch ``e`` replays those draws from the seed, so it does not depend on how many
      epochs this process has iterated.
    - several processes: what Lightning's ``DistributedSampler(shuffle=True, seed=seed)``
      yields: epoch ``e`` is the permutation of ``seed + e``, padded to a multiple of the
      processes, rank ``r`` taking every ``num_replicas``-th index from ``r``.

    ``consumed`` counts global samples (all ranks; an epoch is :attr:`total_size`), so the
    resumed epoch is ``consumed // total_size``. Lightning sets the epoch (``set_epoch``); the
    skip applies to the resumed epoch only. ``len()`` stays a full epoch, as Lightning expects
    of a loader resumed mid-epoch (its progress counters already include the consumed batches).

    A ``DistributedSampler`` so that Lightning does not replace it with one.
    """

    def __init__(
        self, dataset: Dataset, seed: int, num_replicas: int = 1, rank: int = 0, consumed: int = 0
    ) -> None:
        super().__init__(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False
        )
        epoch, skip = divmod(consumed, self.total_size)
        if skip % num_replicas:
            raise ValueError(
                f"consumed {consumed} is not a multiple of num_replicas {num_replicas}"
            )
        self.epoch = epoch  # set before Lightning's set_epoch: loader workers may prefetch first
        self.resume_epoch = epoch
        self.resume_skip = skip // num_replicas

    def consumed(self, epoch: int, batches: int, batch_size: int) -> int:
        """Global samples consumed after ``batches`` batches of ``batch_size`` per rank into
        ``epoch`` (an epoch's last batch may be short)."""
        per_rank = min(batches * batch_size, self.num_samples)
        return epoch * self.total_size + per_rank * self.num_replicas

    def __iter__(self):  # type: ignore[override]
        several = self.num_replicas > 1
        order = list(super().__iter__()) if several else self._single_process_order()
        skip = self.resume_skip if self.epoch == self.resume_epoch else 0
        return iter(order[skip:])

    def _single_process_order(self) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed)
        n = len(self.dataset)  # type: ignore[arg-type]
        for _ in range(self.epoch):
            torch.empty((), dtype=torch.int64).random_(generator=generator)  # workers' base seed
            torch.randperm(n, generator=generator)  # the epoch's permutation
            torch.randperm(n, generator=generator)  # RandomSampler's remainder (none is used)
        torch.empty((), dtype=torch.int64).random_(generator=generator)
        return torch.randperm(n, generator=generator).tolist()


def _replicas(trainer: L.Trainer | None) -> tuple[int, int]:
    """(number of data-parallel ranks, this rank) from the Trainer's strategy; (1, 0) alone."""
    kwargs = getattr(trainer.strategy, "distributed_sampler_kwargs", None) if trainer else None
    if not kwargs:
        return 1, 0
    return int(kwargs["num_replicas"]), int(kwargs["rank"])


def _loader_kwargs(num_workers: int, persistent: bool = True) -> dict[str, Any]:
    return {
        "num_workers": num_workers,
        "persistent_workers": persistent and num_workers > 0,
        "pin_memory": torch.cuda.is_available(),
    }


class ResumableDataModule(L.LightningDataModule):
    """A DataModule whose state is its train data position: the global samples consumed
    (:meth:`consumed_samples`), saved in resume checkpoints; a resumed run's train loader starts
    at :attr:`start_sample`. Subclasses set ``seed`` and count what is consumed."""

    seed: int

    def __init__(self) -> None:
        super().__init__()
        self.start_sample = 0  # global samples already consumed (set when resuming)

    def consumed_samples(self) -> int:
        """Global training samples consumed by the steps taken so far."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"consumed_samples": self.consumed_samples(), "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("seed", self.seed) != self.seed:
            raise LmopsError("checkpoint was written with another data seed; delete it to restart")
        self.start_sample = int(state_dict.get("consumed_samples", 0))


class ShuffledTrainData(ResumableDataModule):
    """A DataModule whose train loader reshuffles its rows every epoch (:class:`ShuffleSampler`,
    seeded by ``seed``) and resumes mid-run: the samples consumed come from Lightning's epoch and
    batch counters. Subclasses set ``seed`` and ``batch_size`` and build the loader with
    :meth:`_shuffled_loader`.

    The loader has its own generator (it draws the workers' base seed from it), so creating one
    never draws from the global RNG that dropout uses.
    """

    batch_size: int

    def __init__(self) -> None:
        super().__init__()
        self._train_sampler: ShuffleSampler | None = None

    def consumed_samples(self) -> int:
        trainer, sampler = self.trainer, self._train_sampler
        if trainer is None or sampler is None:
            return self.start_sample
        batches = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return sampler.consumed(trainer.current_epoch, batches, self.batch_size)

    def _shuffled_loader(self, dataset: Dataset, **loader_kwargs: Any) -> DataLoader:
        world, rank = _replicas(self.trainer)
        self._train_sampler = ShuffleSampler(
            dataset, self.seed, world, rank, consumed=self.start_sample
        )
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=self._train_sampler,
            generator=torch.Generator().manual_seed(self.seed),
            **loader_kwargs,
        )


class TokenDataModule(ResumableDataModule):
    """Train / val windows over ``train.bin`` / ``val.bin`` in ``tokens_dir`` (dtype from meta.json).

    Batches are ``(x, y)`` LongTensors of shape ``[B, block_size]``. ``train_samples`` is usually
    ``max_steps * batch_size`` so one pass is the whole run.

    Each rank reads its own windows (:class:`WindowSampler`). The data position is part of a
    checkpoint (:meth:`state_dict`: global samples consumed, from the optimizer step), so a
    resumed run continues with exactly the windows the interrupted one would have read next.
    Loaders draw no numbers from the global RNG (they have their own generator), so creating
    one never shifts the dropout stream between an interrupted and an uninterrupted run.
    """

    def __init__(
        self,
        tokens_dir: str | os.PathLike[str],
        block_size: int,
        batch_size: int,
        seed: int,
        train_samples: int,
        val_samples: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.tokens_dir = Path(tokens_dir)
        self.block_size = block_size
        self.batch_size = batch_size
        self.seed = seed
        self.train_samples = train_samples
        self.val_samples = val_samples
        self.num_workers = num_workers
        self.train_set: TokenWindowDataset | None = None
        self.val_set: TokenWindowDataset | None = None

    @property
    def meta(self) -> dict[str, Any]:
        path = self.tokens_dir / "meta.json"
        if not path.is_file():
            raise LmopsError(f"{path}: not found; run the tokenize stage (dvc repro tokenize)")
        return read_json(path)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        dtype = np.dtype(self.meta["dtype"])
        train = open_tokens(self.tokens_dir / "train.bin", dtype)
        val = open_tokens(self.tokens_dir / "val.bin", dtype)
        self.train_set = TokenWindowDataset(train, self.block_size, self.train_samples, self.seed)
        # a different stream for val, fixed across validation checks
        self.val_set = TokenWindowDataset(val, self.block_size, self.val_samples, self.seed + 1)

    def consumed_samples(self) -> int:
        """Global training samples consumed by the optimizer steps taken so far."""
        trainer = self.trainer
        if trainer is None:
            return self.start_sample
        world, _ = _replicas(trainer)
        return trainer.global_step * trainer.accumulate_grad_batches * self.batch_size * world

    def train_dataloader(self) -> DataLoader:
        self.setup("fit")
        world, rank = _replicas(self.trainer)
        sampler = WindowSampler(self.train_set, world, rank, start=self.start_sample)  # type: ignore[arg-type]
        return DataLoader(
            self.train_set,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            sampler=sampler,  # windows are already random; order stays reproducible
            drop_last=True,
            generator=torch.Generator().manual_seed(self.seed),
            **_loader_kwargs(self.num_workers),
        )

    def val_dataloader(self) -> DataLoader:
        self.setup("validate")
        return DataLoader(
            self.val_set,  # type: ignore[arg-type]
            batch_size=self.batch_size,
            shuffle=False,
            generator=torch.Generator().manual_seed(self.seed + 1),
            **_loader_kwargs(self.num_workers),
        )


# ----------------------------------------------------------------------------- labeled


class LabeledDataModule(ShuffledTrainData):
    """Fine-tuning batches from ``labeled_dir/{train,val,test}.jsonl`` and ``labels.json``.

    Batches: ``{"input_ids": [B, T] right-padded with pad_id, "lengths": [B], "labels": [B]}``,
    ``T`` the longest row in the batch (at most ``max_length``). Train is reshuffled every epoch
    from ``seed`` (and resumes mid-run, :class:`ShuffledTrainData`); val and test keep file order.
    """

    SPLITS = ("train", "val", "test")

    def __init__(
        self,
        labeled_dir: str | os.PathLike[str],
        tokenizer_path: str | os.PathLike[str],
        max_length: int,
        batch_size: int,
        pad_id: int,
        seed: int,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.splits = LabeledSplits(labeled_dir, tokenizer_path, max_length, pad_id)
        self.labeled_dir = self.splits.labeled_dir
        self.batch_size = batch_size
        self.pad_id = pad_id
        self.seed = seed
        self.num_workers = num_workers

    @property
    def labels(self) -> list[str]:
        """Label names from ``labels.json`` (index = label id)."""
        return self.splits.labels

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    def _load(self, split: str) -> LabeledDataset:
        return self.splits.load(split)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}
        for split in wanted.get(stage or "", ("train", "val", "test")):
            if split == "test" and stage is None and not (self.labeled_dir / "test.jsonl").exists():
                continue
            self._load(split)

    def _loader(self, split: str) -> DataLoader:
        # no generator: each pass draws the workers' base seed from the global RNG (as these
        # loaders always did, which the dropout that follows depends on); never persistent
        # workers, so that every pass draws it, whatever num_workers, and a resumed run as well
        return DataLoader(
            self._load(split),
            batch_size=self.batch_size,
            collate_fn=LabeledCollate(self.pad_id),
            **_loader_kwargs(self.num_workers, persistent=False),
        )

    def train_dataloader(self) -> DataLoader:
        return self._shuffled_loader(
            self._load("train"),
            collate_fn=LabeledCollate(self.pad_id),
            **_loader_kwargs(self.num_workers),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
