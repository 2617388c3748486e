"""Train and load tokenizers (HF ``tokenizers``): byte-level BPE, or characters for tiny runs.

Why byte-level BPE with no normalizer: every string, whatever its script, emoji or whitespace,
encodes to ids and decodes back to exactly the same string, so what the model generates is
what a user typed, and no text is ever "unknown". The character tokenizer is the teaching /
debugging option: a vocabulary a person can read, with the same interface and file format.
Both are saved as one ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file`` loads.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from lmops.config import LmopsError, TokenizeConfig
from lmops.io import read_jsonl

__all__ = [
    "UNK_TOKEN",
    "load_tokenizer",
    "padded_vocab_size",
    "special_ids",
    "train_tokenizer",
    "training_stride",
    "training_texts",
]

log = logging.getLogger(__name__)

# Only the char tokenizer needs it: characters unseen in training map here instead of failing.
UNK_TOKEN = "<|unk|>"


def _bpe(texts: Iterable[str], cfg: TokenizeConfig) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    # add_prefix_space=False: a leading space would be invented on decode and break round trips.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    # trim_offsets only moves offsets (for highlighting), never ids; keep spaces in them.
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(cfg.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    got = tok.get_vocab_size()
    if got < cfg.vocab_size:
        raise LmopsError(
            f"tokenize.vocab_size={cfg.vocab_size} but the training text supports only {got} "
            f"tokens at tokenize.min_frequency={cfg.min_frequency}; lower tokenize.vocab_size "
            "(or tokenize.min_frequency), or add more text"
        )
    return tok


def _char(texts: Iterable[str], cfg: TokenizeConfig) -> Tokenizer:
    """Vocabulary: the special tokens, ``<|unk|>``, then the sorted characters of ``texts``.

    ``tokenize.vocab_size`` does not apply: the vocabulary is whatever characters occur.
    """
    chars: set[str] = set()
    for text in texts:
        chars.update(text)
    specials = list(dict.fromkeys([*cfg.special_tokens, UNK_TOKEN]))
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(chars):
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK_TOKEN))
    # one piece per character (newlines included), glued back together on decode
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(specials)
    return tok


def train_tokenizer(texts: Iterable[str], cfg: TokenizeConfig) -> Tokenizer:
    """A tokenizer trained on ``texts`` (``cfg.type``: ``bpe`` or ``char``).

    Special tokens (``cfg.special_tokens``, end-of-text first) get the first ids. Raises
    :class:`LmopsError` when the text cannot support ``cfg.vocab_size`` (bpe) or is empty.
    """
    seen = [False]

    def counted(it: Iterable[str]) -> Iterator[str]:
        for t in it:
            if t:
                seen[0] = True
            yield t

    if cfg.type == "bpe":
        tok = _bpe(counted(texts), cfg)
    elif cfg.type == "char":
        tok = _char(counted(texts), cfg)
    else:
        raise LmopsError(f"tokenize.type is {cfg.type!r}; use 'bpe' or 'char'")
    if not seen[0]:
        raise LmopsError("no text to train the tokenizer on; check data.corpus_paths / clean.*")
    return tok


def training_stride(file_bytes: int, max_mb: float | None) -> int:
    """Keep every ``stride``-th document so that about ``max_mb`` MB of ``file_bytes`` remain."""
    if max_mb is None or file_bytes <= max_mb * 1e6:
        return 1
    return math.ceil(file_bytes / (max_mb * 1e6))


def training_texts(path: Path, cfg: TokenizeConfig) -> Iterator[str]:
    """The texts of a JSONL split to train ``cfg``'s tokenizer on.

    BPE with ``tokenize.train_max_mb`` set sees every k-th document, an even sample over the
    whole file (so every source of a mixed corpus is in it), not its first megabytes. The char
    tokenizer always sees everything: a character it never saw could not be encoded.
    """
    stride = training_stride(path.stat().st_size, cfg.train_max_mb) if cfg.type == "bpe" else 1
    if stride > 1:
        log.info(
            "training the tokenizer on every %d-th document (tokenize.train_max_mb=%g)",
            stride,
            cfg.train_max_mb,
        )
    for i, row in enumerate(read_jsonl(path)):
        if i % stride == 0:
            yield row["text"]


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """Load a ``tokenizer.json`` (a file, or a model folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        raise LmopsError(f"{p}: tokenizer not found; run the tokenize stage (dvc repro tokenize)")
    return Tokenizer.from_file(str(p))


def special_ids(
    tokenizer: Tokenizer, cfg_or_list: TokenizeConfig | list[str] | tuple[str, ...]
) -> tuple[int, int]:
    """``(eos_id, pad_id)``: first special token is end-of-text, second (if any) padding.

    With a single special token, padding reuses the end-of-text id (padding is masked anyway).
    """
    names = list(
        cfg_or_list.special_tokens if isinstance(cfg_or_list, TokenizeConfig) else cfg_or_list
    )
    if not names:
        raise LmopsError("tokenize.special_tokens is empty; it needs the end-of-text token first")
    ids = []
    for name in names[:2]:
        tid = tokenizer.token_to_id(name)
        if tid is None:
            raise LmopsError(
                f"special token {name!r} is not in the tokenizer; re-run tokenize after changing "
                "tokenize.special_tokens"
            )
        ids.append(tid)
    eos = ids[0]
    pad = ids[1] if len(ids) > 1 else eos
    return eos, pad


def padded_vocab_size(n: int, multiple: int = 64) -> int:
    """``n`` rounded up to a multiple of ``multiple``: matmuls on GPUs run faster that way."""
    if multiple <= 0:
        raise ValueError("multiple must be > 0")
    return -(-n // multiple) * multiple
