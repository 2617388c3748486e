"""The fine-tuning set: read from the built-in sample or labeled files, normalized, split, written.

Why apart from the corpus: the labeled set is small (it fits in memory) and goes through none
of the corpus's filters or dedup; its texts only get the same normalization as the corpus
(:mod:`lmops.data.text`), so the tokenizer sees one form. What is written follows
``finetune.task``:

- ``classification``: train / val / test split by row with a seeded shuffle, written as
  ``labeled/{train,val,test}.jsonl`` (rows ``{"id", "text", "label"}``, the label as an index)
  plus ``labels.json`` (the class names, in index order);
- ``sft``: rows ``{"id", "prompt", "response"}``, split by prompt so that all references of one
  prompt stay in one split;
- ``none``: no set; the folder holds ``skipped.json`` saying why.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lmops.config import CleanConfig, DataConfig, LmopsError, SampleConfig
from lmops.data.sample import LABELS, generate_labeled
from lmops.data.sample_sft import generate_sft
from lmops.data.sft import group_references, split_by_prompt
from lmops.data.sources import read_labeled
from lmops.data.text import normalize_text
from lmops.io import atomic_dir, atomic_write_json, write_jsonl, write_skipped

__all__ = ["LabeledSet", "load_labeled", "split_by_document", "write_labeled"]

T = TypeVar("T")
Rows = list[tuple[str, str]]


@dataclass
class LabeledSet:
    """``(text, label)`` rows as read, before normalization and splitting."""

    train: Rows
    test: Rows | None  # None: split off from train (clean.labeled_test_fraction)
    labels: list[str] | None = None  # the class order; None: the labels found, sorted
    files: dict[str, Path] = field(default_factory=dict)  # what was read: the run's inputs
    # sft: the rows are (prompt, response); rows sharing a prompt are its references
    task: str = "classification"


def load_labeled(data: DataConfig, root: Path, task: str = "classification") -> LabeledSet:
    """The fine-tuning set that ``data`` names for ``task`` (``finetune.task``): the built-in
    sample's, or ``data.labeled_*`` files (paths relative to ``root``); none for ``none``."""
    if task == "none":
        return LabeledSet([], [], task="none")
    if data.source == "sample":
        return _sample_sft(data.sample) if task == "sft" else _sample_labeled(data.sample)
    if task == "sft":
        columns = (data.labeled_prompt_column, data.labeled_response_column)
        column_params = ("data.labeled_prompt_column", "data.labeled_response_column")
        test_columns = columns
    else:
        columns = (data.labeled_text_column, data.labeled_label_column)
        column_params = ("data.labeled_text_column", "data.labeled_label_column")
        test_columns = (data.labeled_test_text_column or columns[0], columns[1])
    train_path = root / data.labeled_train_path
    files = {"labeled_train": train_path}
    header = data.labeled_header
    train = read_labeled(train_path, *columns, column_params=column_params, header=header)
    test = None
    if data.labeled_test_path:
        files["labeled_test"] = root / data.labeled_test_path
        test = read_labeled(
            files["labeled_test"],
            *test_columns,
            param="data.labeled_test_path",
            column_params=column_params,
            header=header,
        )
    if task == "classification":
        _check_classes(train, test)
    return LabeledSet(train, test, files=files, task=task)


def _check_classes(train: Rows, test: Rows | None) -> None:
    """Before the long part of the stage: a one-class set trains nothing, and test labels the
    train file never uses would become extra classes no example teaches (accuracy 0)."""
    seen = sorted({label for _, label in train})
    if len(seen) < 2:
        raise LmopsError(
            f"data.labeled_train_path has one class ({seen[0]!r}); a classifier needs at least "
            "two: fix the file or data.labeled_label_column"
        )
    unseen = sorted({label for _, label in test or []} - set(seen))
    if unseen:
        raise LmopsError(
            f"data.labeled_test_path has labels {unseen[:5]} that the train file never uses "
            f"(train labels: {seen[:10]}); write the test labels the way the train file does"
        )


def _sample_sft(cfg: SampleConfig) -> LabeledSet:
    """Prompt -> response pairs, two references a prompt; test prompts never seen in training."""
    n_train, n_test = max(cfg.n_labeled_train // 2, 2), max(cfg.n_labeled_test // 2, 1)
    rows = generate_sft(n_train + n_test, cfg.seed + 1)
    return LabeledSet(rows[: 2 * n_train], rows[2 * n_train :], task="sft")


def _sample_labeled(cfg: SampleConfig) -> LabeledSet:
    """One generator call split into train and test, so no text is in both."""
    rows = generate_labeled(cfg.n_labeled_train + cfg.n_labeled_test, cfg.seed + 1)
    n = cfg.n_labeled_train
    return LabeledSet(rows[:n], rows[n:], labels=list(LABELS))


def _normalized(rows: Rows, unicode_form: str) -> Rows:
    """Each text normalized like the corpus; rows left empty are dropped."""
    out = [(normalize_text(text, unicode_form), label) for text, label in rows]
    return [(text, label) for text, label in out if text]


def write_labeled(labeled: LabeledSet, cfg: CleanConfig, folder: Path) -> dict[str, Any]:
    """Normalize, split and write ``labeled`` into ``folder`` (replaced whole, atomically).

    Returns the summary for the report: the class names and the rows per split. Raises
    :class:`LmopsError` when a split would be empty.
    """
    if labeled.task == "sft":
        return _write_sft(labeled, cfg, folder)
    if labeled.task == "none":
        write_skipped(folder, "finetune.task is none: no fine-tuning set")
        return {"task": "none", "train": 0, "val": 0, "test": 0}
    train = _normalized(labeled.train, cfg.unicode_form)
    if labeled.test is None:
        train, test = split_by_document(train, cfg.labeled_test_fraction, cfg.seed)
    else:
        test = _normalized(labeled.test, cfg.unicode_form)
    train, val = split_by_document(train, cfg.labeled_val_fraction, cfg.seed)
    if not train or not val or not test:
        raise LmopsError(
            "the labeled set is too small to split into train/val/test; "
            "add rows to data.labeled_train_path"
        )
    names = labeled.labels
    if names is None:
        names = sorted({label for _, label in train + val + test})
    index = {name: i for i, name in enumerate(names)}
    with atomic_dir(folder) as tmp:
        for split, rows in (("train", train), ("val", val), ("test", test)):
            write_jsonl(
                tmp / f"{split}.jsonl",
                (
                    {"id": f"{split}{i}", "text": text, "label": index[label]}
                    for i, (text, label) in enumerate(rows)
                ),
            )
        atomic_write_json(tmp / "labels.json", names)
    return {"labels": names, "train": len(train), "val": len(val), "test": len(test)}


def _normalized_pairs(rows: Rows, unicode_form: str) -> Rows:
    """Prompt and response normalized like the corpus; a row left without either is dropped."""
    out = [(normalize_text(p, unicode_form), normalize_text(r, unicode_form)) for p, r in rows]
    return [(p, r) for p, r in out if p and r]


def _write_sft(labeled: LabeledSet, cfg: CleanConfig, folder: Path) -> dict[str, Any]:
    """``{train,val,test}.jsonl`` of ``{"id", "prompt", "response"}`` rows, every row of one
    prompt in the same split (its references stay together for scoring)."""
    rows = _normalized_pairs(labeled.train, cfg.unicode_form)
    fractions = {"val_fraction": cfg.labeled_val_fraction, "seed": cfg.seed}
    if labeled.test is None:
        train, val, test = split_by_prompt(
            rows, test_fraction=cfg.labeled_test_fraction, **fractions
        )
    else:
        train, val, _ = split_by_prompt(rows, test_fraction=0.0, **fractions)
        test = _normalized_pairs(labeled.test, cfg.unicode_form)
    if not test:
        raise LmopsError("the test file has no prompt with a response; fix data.labeled_test_path")
    with atomic_dir(folder) as tmp:
        for split, part in (("train", train), ("val", val), ("test", test)):
            write_jsonl(
                tmp / f"{split}.jsonl",
                (
                    {"id": f"{split}{i}", "prompt": prompt, "response": response}
                    for i, (prompt, response) in enumerate(part)
                ),
            )
    return {
        "task": "sft",
        "train": len(train),
        "val": len(val),
        "test": len(test),
        "test_prompts": len(group_references(test)),
    }


def split_by_document(items: list[T], val_fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """Deterministic (train, val) split of whole items; each keeps the input order.

    A seeded shuffle of the indices picks ``round(len * val_fraction)`` items for val, at least
    one when there are two or more items and never all of them, so both splits are usable.
    For the labeled set, which fits in memory; the corpus splits by id hash instead
    (:func:`lmops.data.cleaning.write_splits`).
    """
    n = len(items)
    if not 0.0 <= val_fraction < 1.0:
        raise LmopsError(f"val_fraction is {val_fraction}; it must be in [0, 1)")
    n_val = min(max(round(n * val_fraction), 1), n - 1) if n >= 2 else 0
    order = list(range(n))
    random.Random(seed).shuffle(order)
    val_idx = set(order[:n_val])
    train = [x for i, x in enumerate(items) if i not in val_idx]
    val = [x for i, x in enumerate(items) if i in val_idx]
    return train, val
