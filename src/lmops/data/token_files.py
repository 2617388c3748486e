"""The tokenize stage's work: a tokenizer trained on the clean train split, both splits encoded.

Kept apart from :mod:`lmops.data.tokenizer` (how a tokenizer is trained) and
:mod:`lmops.data.shards` (how text becomes a token file) because this is the one place that
decides what the stage's folder holds: ``tokenizer.json``, ``{train,val}.bin`` and the
``meta.json`` every later stage sizes itself from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmops.config import DataExecutorConfig, TokenizeConfig
from lmops.data.shards import encode_corpus, token_dtype
from lmops.data.tokenizer import padded_vocab_size, special_ids, train_tokenizer, training_texts
from lmops.io import atomic_write_bytes, atomic_write_json, sha256_file

__all__ = ["SPLITS", "token_metrics", "write_token_files"]

SPLITS = ("train", "val")


def write_token_files(
    corpus: Path,
    out: Path,
    cfg: TokenizeConfig,
    executor: DataExecutorConfig,
    work_root: Path,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Train the tokenizer on ``corpus/train.jsonl``, encode every split into ``out``, write
    ``meta.json`` (each file atomically) and return the meta."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(training_texts(corpus / "train.jsonl", cfg), cfg)
    atomic_write_bytes(out / "tokenizer.json", tokenizer.to_str(pretty=True).encode("utf-8"))
    eos_id, pad_id = special_ids(tokenizer, cfg.special_tokens)
    vocab = tokenizer.get_vocab_size()
    dtype = token_dtype(vocab)
    counts = {
        split: encode_corpus(
            out / "tokenizer.json",
            corpus / f"{split}.jsonl",
            out / f"{split}.bin",
            eos_id,
            dtype,
            work=work_root / f"tokenize-{split}",
            executor=executor,
            progress=progress,
        )
        for split in SPLITS
    }
    meta = {
        "dtype": str(dtype.name if hasattr(dtype, "name") else dtype),
        "vocab_size": vocab,
        "padded_vocab_size": padded_vocab_size(vocab),
        "eos_id": eos_id,
        "pad_id": pad_id,
        "train_tokens": counts["train"][0],
        "val_tokens": counts["val"][0],
        "train_documents": counts["train"][1],
        "val_documents": counts["val"][1],
        "tokenizer_type": cfg.type,
        "tokenizer_sha256": sha256_file(out / "tokenizer.json"),
    }
    atomic_write_json(out / "meta.json", meta)
    return meta


def token_metrics(meta: dict[str, Any], train_bytes: int) -> dict[str, float | int]:
    """The numbers ``dvc metrics`` shows for the stage; bytes per token says how well the
    tokenizer compresses this corpus."""
    return {
        "vocab_size": meta["vocab_size"],
        "train_tokens": meta["train_tokens"],
        "val_tokens": meta["val_tokens"],
        "bytes_per_token": train_bytes / max(1, meta["train_tokens"]),
    }
