"""Stage tokenize: train the tokenizer on the clean train split, encode both splits to token files."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from lmops.config import Params
from lmops.data.shards import encode_corpus, token_dtype
from lmops.data.tokenizer import (
    padded_vocab_size,
    special_ids,
    train_tokenizer,
    training_texts,
)
from lmops.io import atomic_write_bytes, atomic_write_json, sha256_file
from lmops.stage import require, stage_main
from lmops.tracking.runs import stage_run, write_run_info

log = logging.getLogger(__name__)


@stage_main("tokenize")
def main(params: Params, root: Path) -> None:
    cfg = params.tokenize
    clean = root / "data" / "clean"
    corpus = require(clean / "corpus", "run the clean stage first (dvc repro clean)")
    out = root / "data" / "tokens"
    out.mkdir(parents=True, exist_ok=True)

    with stage_run(
        "tokenize",
        params,
        inputs={"corpus": corpus},
        upstream={"clean": clean},
        out_dir=out,
        root=root,
    ) as run:
        tokenizer = train_tokenizer(training_texts(corpus / "train.jsonl", cfg), cfg)
        atomic_write_bytes(out / "tokenizer.json", tokenizer.to_str(pretty=True).encode("utf-8"))
        eos_id, pad_id = special_ids(tokenizer, cfg.special_tokens)
        vocab = tokenizer.get_vocab_size()
        dtype = token_dtype(vocab)
        counts = {}
        ex = params.hardware.data_executor
        work_root = Path(ex.work_dir) if Path(ex.work_dir).is_absolute() else root / ex.work_dir
        for split in ("train", "val"):
            counts[split] = encode_corpus(
                out / "tokenizer.json",
                corpus / f"{split}.jsonl",
                out / f"{split}.bin",
                eos_id,
                dtype,
                work=work_root / f"tokenize-{split}",
                executor=ex,
                progress=params.hardware.progress_bar,
            )
        train_bytes = (corpus / "train.jsonl").stat().st_size
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
        metrics = {
            "vocab_size": vocab,
            "train_tokens": meta["train_tokens"],
            "val_tokens": meta["val_tokens"],
            "bytes_per_token": train_bytes / max(1, meta["train_tokens"]),
        }
        atomic_write_json(out / "metrics.json", metrics)
        mlflow.log_metrics({f"tokenize/{k}": float(v) for k, v in metrics.items()})
        mlflow.log_artifact(str(out / "meta.json"))
        write_run_info(out, run)
    log.info(
        "vocab %d (padded %d), train %d tokens / %d docs, val %d tokens",
        vocab,
        meta["padded_vocab_size"],
        meta["train_tokens"],
        meta["train_documents"],
        meta["val_tokens"],
    )


if __name__ == "__main__":
    main()
