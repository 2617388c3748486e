"""The model bundle: ``model.safetensors`` + ``config.json`` + ``tokenizer.json`` in one folder.

A bundle is everything needed to rebuild a model without the training code or a checkpoint's
optimizer state: the pretrain, finetune and export stages all write one, and the MLflow pyfunc
model and ``lmops generate`` read one. The writers fill a folder the caller owns (stages wrap them
in :func:`lmops.io.atomic_dir`); :func:`load_bundle` checks every piece and says what is missing.

An exported bundle also holds ``SHA256SUMS`` (:func:`write_checksums`, the ``sha256sum`` format, so
``sha256sum -c SHA256SUMS`` checks it by hand): a registered model that was edited or corrupted
after the export then fails to load, naming the file, instead of serving different weights.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from tokenizers import Tokenizer
from torch import nn

from lmops.config import LmopsError
from lmops.data.sft import encode_prompt
from lmops.io import atomic_write_json, atomic_write_text, sha256_file
from lmops.models.generation import BatchDecoder, GenerationParams, TextStream

__all__ = [
    "BUNDLE_FILES",
    "CHECKSUMS",
    "Bundle",
    "GenerationParams",
    "answer_greedy",
    "classify",
    "encode_padded",
    "find_bundle",
    "generate_batch",
    "generate_text",
    "load_bundle",
    "save_classifier_bundle",
    "save_lm_bundle",
    "verify_checksums",
    "write_checksums",
]

log = logging.getLogger(__name__)

BUNDLE_FILES = ("model.safetensors", "config.json", "tokenizer.json")
KINDS = ("lm", "classifier")
CHECKSUMS = "SHA256SUMS"


@dataclass
class Bundle:
    """A loaded bundle: ``model`` is in eval mode on the CPU, ``config`` is ``config.json``."""

    kind: str
    model: nn.Module
    tokenizer: Tokenizer
    config: dict[str, Any]
    path: Path

    @property
    def eos_id(self) -> int:
        return int(self.config["eos_id"])

    @property
    def pad_id(self) -> int:
        return int(self.config["pad_id"])

    @property
    def labels(self) -> list[str]:
        return list(self.config.get("labels", []))


def _write(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    tokenizer_path: str | os.PathLike[str],
    config: dict[str, Any],
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_path = Path(tokenizer_path)
    if not tokenizer_path.is_file():
        raise LmopsError(f"tokenizer {tokenizer_path} not found; run the tokenize stage first")
    # save_model (not save_file) because lm_head shares its weight with wte: it stores the
    # shared tensor once and load_model restores the sharing.
    save_model(model, str(out / "model.safetensors"))
    shutil.copyfile(tokenizer_path, out / "tokenizer.json")
    atomic_write_json(out / "config.json", config)
    return out


def save_lm_bundle(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    tokenizer_path: str | os.PathLike[str],
    eos_id: int,
    pad_id: int,
    prompt_template: str | None = None,
) -> Path:
    """Write a causal-LM bundle (``kind: lm``) for a ``GPT`` into ``out_dir``.

    ``prompt_template`` (an SFT model's) travels with the weights, so every consumer wraps a
    prompt exactly as fine-tuning did before generating.
    """
    config: dict[str, Any] = {
        "kind": "lm",
        "gpt": model.config.to_dict(),
        "eos_id": int(eos_id),
        "pad_id": int(pad_id),
    }
    if prompt_template is not None:
        config["prompt_template"] = prompt_template
    return _write(out_dir, model, tokenizer_path, config)


def save_classifier_bundle(
    out_dir: str | os.PathLike[str],
    model: nn.Module,
    tokenizer_path: str | os.PathLike[str],
    labels: Sequence[str],
    max_length: int,
    eos_id: int,
    pad_id: int,
) -> Path:
    """Write a classifier bundle (``kind: classifier``) for a ``SequenceClassifier``.

    ``labels`` and ``max_length`` travel with the weights so that inference pads, truncates and
    names classes exactly as fine-tuning did.
    """
    num_labels = model.head.out_features
    if len(labels) != num_labels:
        raise LmopsError(
            f"{len(labels)} label names for a classifier with {num_labels} outputs; "
            "check data/clean/labeled/labels.json"
        )
    config = {
        "kind": "classifier",
        "gpt": model.backbone.config.to_dict(),
        "labels": [str(x) for x in labels],
        "max_length": int(max_length),
        "eos_id": int(eos_id),
        "pad_id": int(pad_id),
    }
    return _write(out_dir, model, tokenizer_path, config)


def load_bundle(path: str | os.PathLike[str]) -> Bundle:
    """Rebuild the model named by ``config.json``, load its weights and tokenizer, eval mode."""
    # Imported here so that reading a bundle's config (find_bundle, CLI listing) stays light.
    from lmops.config import ModelConfig
    from lmops.models.gpt import GPT
    from lmops.models.heads import SequenceClassifier

    path = Path(path)
    missing = [name for name in BUNDLE_FILES if not (path / name).is_file()]
    if missing:
        raise LmopsError(
            f"{path} is not a model bundle: missing {', '.join(missing)}; "
            "point at a folder written by the pretrain, finetune or export stage"
        )
    verify_checksums(path)
    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    kind = config.get("kind")
    if kind not in KINDS:
        raise LmopsError(f"{path / 'config.json'}: kind is {kind!r}; expected one of {KINDS}")
    backbone = GPT(ModelConfig.from_dict(config["gpt"]))
    model: nn.Module
    if kind == "lm":
        model = backbone
    else:
        model = SequenceClassifier(backbone, num_labels=len(config["labels"]), dropout=0.0)
    try:
        load_model(model, str(path / "model.safetensors"), strict=True, device="cpu")
    except Exception as exc:  # shape or key mismatch: the config and weights disagree
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmopsError(
            f"{path / 'model.safetensors'} does not match config.json ({first}); "
            "re-run the stage that wrote this bundle"
        ) from exc
    model.eval()
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    return Bundle(kind=kind, model=model, tokenizer=tokenizer, config=config, path=path)


def write_checksums(bundle_dir: str | os.PathLike[str]) -> dict[str, str]:
    """Record the SHA-256 of every bundle file in ``SHA256SUMS``; returns ``{file name: hex}``.

    The export stage calls this on the bundle it registers, so that :func:`load_bundle` (and the
    pyfunc model and server built on it) refuses files changed after the export. Training
    stages do not: their outputs are DVC's to track, and they are rewritten on every run.
    """
    path = Path(bundle_dir)
    sums = {name: sha256_file(path / name) for name in BUNDLE_FILES}
    atomic_write_text(path / CHECKSUMS, "".join(f"{h}  {name}\n" for name, h in sums.items()))
    return sums


def verify_checksums(bundle_dir: str | os.PathLike[str]) -> None:
    """Raise a one-line :class:`LmopsError` naming the first file whose SHA-256 differs from
    ``SHA256SUMS``, or that is missing. A bundle without ``SHA256SUMS`` (a training stage's, or
    one exported before checksums were recorded) passes: there is nothing to compare with.

    Hashing costs about a second per GB, small next to building the model.
    """
    path = Path(bundle_dir)
    sums = path / CHECKSUMS
    if not sums.is_file():
        return
    for number, line in enumerate(sums.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        expected, sep, name = line.partition("  ")
        if not sep or len(expected) != 64 or not name:
            raise LmopsError(f"{sums} line {number} is not '<sha256>  <file>'; re-run the export")
        file = path / name.lstrip("*")
        if not file.is_file():
            raise LmopsError(f"{file} is missing; {CHECKSUMS} lists it: restore the model files")
        actual = sha256_file(file)
        if actual != expected.lower():
            raise LmopsError(
                f"{file} changed after export: SHA-256 {actual[:12]}... but {CHECKSUMS} records "
                f"{expected[:12]}...; restore the file or re-run the export stage"
            )


def find_bundle(root: str | os.PathLike[str]) -> Path:
    """The bundle folder at or under ``root`` (an MLflow model keeps it under ``artifacts/``)."""
    root = Path(root)
    if all((root / name).is_file() for name in BUNDLE_FILES):
        return root
    for config in sorted(root.rglob("config.json")):
        if all((config.parent / name).is_file() for name in BUNDLE_FILES):
            return config.parent
    raise LmopsError(
        f"no model bundle (model.safetensors, config.json, tokenizer.json) at or under {root}"
    )


# --------------------------------------------------------------------------- inference


def encode_padded(
    tokenizer: Tokenizer, texts: Sequence[str], max_length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids right-padded with ``pad_id`` and the real lengths, as fine-tuning batches them.

    The same rule as ``lmops.data.datamodules.encode_labeled`` (a test holds them together),
    repeated here so that serving needs neither Lightning nor the data package: keep the first
    ``max_length`` tokens; an empty text becomes ``[pad_id]`` so every row has a last position.
    """
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    ids = [enc.ids[:max_length] or [pad_id] for enc in encodings]
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    lengths = torch.tensor([len(x) for x in ids], dtype=torch.long)
    return input_ids, lengths


@torch.inference_mode()
def classify(bundle: Bundle, texts: Sequence[str], batch_size: int = 64) -> list[dict[str, Any]]:
    """``[{"label": name, "probability": p}, ...]``: the most likely class of each text."""
    if bundle.kind != "classifier":
        raise LmopsError(f"{bundle.path} holds a {bundle.kind!r} model, not a classifier")
    out: list[dict[str, Any]] = []
    labels = bundle.labels
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        input_ids, lengths = encode_padded(
            bundle.tokenizer, chunk, int(bundle.config["max_length"]), bundle.pad_id
        )
        probs = torch.softmax(bundle.model(input_ids, lengths).float(), dim=-1)
        best = probs.argmax(dim=-1)
        for row, idx in enumerate(best.tolist()):
            out.append({"label": labels[idx], "probability": float(probs[row, idx])})
    return out


def generate_batch(
    bundle: Bundle,
    prompts: Sequence[str],
    params: GenerationParams | None = None,
    *,
    batch_size: int = 32,
    on_prompt: Callable[[int, str], None] | None = None,
    on_text: Callable[[int, str], None] | None = None,
    use_cache: bool = True,
    mix_lengths: bool = True,
) -> list[tuple[str, str]]:
    """Continue every prompt; returns ``(prompt as the model saw it, continuation)`` per prompt.

    Up to ``batch_size`` prompts share each forward pass (the KV cache, left padding: see
    :class:`~lmops.models.generation.BatchDecoder`); prompts are grouped by token length so a
    batch carries little padding, and each prompt gets the text it would get alone. A row
    ends at the end-of-text token (not part of the text) or at a ``params.stop`` string (the
    text is cut before it). A prompt longer than the model's ``block_size`` keeps its last
    ``block_size`` tokens, with one warning per call. For streaming, ``on_prompt(i, text)``
    receives prompt ``i`` as the model sees it when its batch starts, and ``on_text(i, piece)``
    its continuation as it is generated, in pieces safe to print (whole characters, never the
    start of a stop string); together they add up to the returned pair.

    ``mix_lengths=False`` batches only prompts of one token length together (no padding, so
    each row's arithmetic is exactly the unpadded path's; more, smaller batches).
    """
    if bundle.kind != "lm":
        raise LmopsError(f"{bundle.path} holds a {bundle.kind!r} model; generate needs an LM")
    params = params or GenerationParams()
    if batch_size < 1:
        raise LmopsError(f"batch_size is {batch_size}; must be >= 1")
    block_size = int(bundle.config["gpt"]["block_size"])
    encoded = [_prompt_ids(bundle, p) for p in prompts]
    too_long = [len(ids) for ids in encoded if len(ids) > block_size]
    if too_long:
        log.warning(
            "%d prompt(s) longer than the model's context (%s tokens, block_size %d): each "
            "keeps its last %d tokens",
            len(too_long),
            ", ".join(map(str, too_long[:5])) + (", ..." if len(too_long) > 5 else ""),
            block_size,
            block_size,
        )
        encoded = [ids[-block_size:] for ids in encoded]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    groups = [order]
    if not mix_lengths:
        by_length: dict[int, list[int]] = {}
        for i in order:
            by_length.setdefault(len(encoded[i]), []).append(i)
        groups = list(by_length.values())
    chunks = [g[s : s + batch_size] for g in groups for s in range(0, len(g), batch_size)]
    results: list[tuple[str, str]] = [("", "")] * len(prompts)
    for chunk in chunks:
        if on_prompt is not None:
            for i in chunk:
                on_prompt(i, _decode(bundle, encoded[i], [])[0])
        news = _generate_rows(
            bundle, [encoded[i] for i in chunk], chunk, params, on_text, use_cache
        )
        for i, new_ids in zip(chunk, news, strict=True):
            head, tail = _decode(bundle, encoded[i], new_ids)
            results[i] = (head, _cut_at_stop(tail, params.stop))
    return results


@torch.inference_mode()
def _generate_rows(
    bundle: Bundle,
    rows: list[list[int]],
    indices: list[int],
    params: GenerationParams,
    on_text: Callable[[int, str], None] | None,
    use_cache: bool,
) -> list[list[int]]:
    """The new token ids of each row, up to (not including) its end-of-text token."""
    seeds = None if params.seed is None else [params.seed + i for i in indices]
    decoder = BatchDecoder(
        bundle.model,
        rows,
        params,
        eos_id=bundle.eos_id,
        pad_id=bundle.pad_id,
        use_cache=use_cache,
        seeds=seeds,
    )
    streams = None
    if params.stop or on_text is not None:  # text is decoded while generating only if needed

        def decode(ids: list[int]) -> str:
            return bundle.tokenizer.decode(ids, skip_special_tokens=True)

        streams = [TextStream(decode, ids, params.stop) for ids in rows]
    news: list[list[int]] = [[] for _ in rows]
    for tokens, active in decoder:
        for row in torch.nonzero(active).flatten().tolist():
            token = int(tokens[row])
            if token == bundle.eos_id:
                continue  # the decoder marked the row finished
            news[row].append(token)
            if streams is None:
                continue
            piece = streams[row].push(token)
            if piece and on_text is not None:
                on_text(indices[row], piece)
            if streams[row].stopped:
                decoder.finish(row)
    if streams is not None and on_text is not None:
        for row, stream in enumerate(streams):
            rest = stream.flush()
            if rest:
                on_text(indices[row], rest)
    return news


def generate_text(
    bundle: Bundle,
    prompt: str,
    params: GenerationParams | None = None,
    *,
    on_text: Callable[[str], None] | None = None,
    **changes: Any,
) -> tuple[str, str]:
    """Continue one ``prompt``; returns ``(prompt as the model saw it, continuation)``.

    ``params`` (default :class:`GenerationParams`) with ``changes`` applied by name, e.g.
    ``generate_text(b, "Once", max_new_tokens=20, temperature=0)``. ``on_text(piece)`` streams
    the continuation as it comes. Seeded sampling leaves the caller's global RNG untouched.
    """
    params = (params or GenerationParams()).replace(**changes)
    stream = None if on_text is None else (lambda _i, piece: on_text(piece))
    return generate_batch(bundle, [prompt], params, on_text=stream)[0]


def answer_greedy(
    bundle: Bundle, prompts: Sequence[str], max_new_tokens: int = 64, batch_size: int = 32
) -> list[str]:
    """Greedy continuations of many prompts, several per forward pass with the KV cache.

    What evaluation scores: every answer is the one :func:`generate_text` gives for that prompt
    alone at temperature 0. Prompts are batched by token length (no padding), so the arithmetic
    and the scores are exactly those of earlier versions; left-padded batches agree only up to
    float rounding, which could flip a near-tie and move a metric between versions.
    """
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    out = generate_batch(bundle, prompts, params, batch_size=batch_size, mix_lengths=False)
    return [tail for _, tail in out]


def _cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string found in it."""
    hits = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(hits)] if hits else text


def _prompt_ids(bundle: Bundle, prompt: str) -> list[int]:
    """The ids generation starts from; an SFT model's prompt as fine-tuning encoded it."""
    template = bundle.config.get("prompt_template")
    if template is not None:
        ids = encode_prompt(bundle.tokenizer, prompt, template)
    else:
        ids = bundle.tokenizer.encode(prompt, add_special_tokens=False).ids
    return ids or [bundle.eos_id]


def _decode(bundle: Bundle, prompt_ids: list[int], new_ids: list[int]) -> tuple[str, str]:
    """``(prompt text, continuation up to the end-of-text token)``."""
    if bundle.eos_id in new_ids:
        new_ids = new_ids[: new_ids.index(bundle.eos_id)]
    head = bundle.tokenizer.decode(prompt_ids, skip_special_tokens=True)
    full = bundle.tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    # Decode the whole sequence so multi-byte characters split across the boundary survive.
    tail = full[len(head) :] if full.startswith(head) else bundle.tokenizer.decode(new_ids)
    return head, tail
