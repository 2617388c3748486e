"""The schema of ``params.yaml``: one dataclass per section, loaded and validated with OmegaConf.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an impossible value stops
the stage with one line naming the key, before any data is read or any run is opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigKeyError,
    ConfigTypeError,
    OmegaConfBaseException,
    ValidationError,
)

__all__ = [
    "ConfigError",
    "LmopsError",
    "Params",
    "load_params",
    "repo_root",
]


class LmopsError(Exception):
    """An error a user can fix; stage scripts print its message as one line and exit 1."""


class ConfigError(LmopsError):
    """``params.yaml`` is wrong: unknown key, wrong type or invalid value."""


# --------------------------------------------------------------------------- sections


@dataclass
class SampleConfig:
    """Size of the built-in synthetic corpus and labeled set (``data.source: sample``)."""

    n_documents: int = 6000
    n_labeled_train: int = 3000
    n_labeled_test: int = 600
    seed: int = 1234


@dataclass
class DataConfig:
    """Where the raw text and the labeled fine-tuning set come from."""

    source: str = "sample"  # sample | local
    sample: SampleConfig = field(default_factory=SampleConfig)
    # local source: files (txt, jsonl, csv, tsv) or folders of them, relative to the repo root
    corpus_paths: list[str] = field(default_factory=list)
    corpus_text_column: str = "text"
    labeled_train_path: str | None = None
    labeled_test_path: str | None = None  # None: split off from the train file
    labeled_text_column: str = "text"
    labeled_label_column: str = "label"
    labeled_test_text_column: str | None = None  # None: same as labeled_text_column


@dataclass
class CleanConfig:
    """Text normalization, filters, dedup and the train/val split of the pretraining corpus."""

    unicode_form: str = "NFC"  # NFC | NFKC | none
    min_chars: int = 20
    max_chars: int = 100_000
    dedup: bool = True
    val_fraction: float = 0.05
    labeled_val_fraction: float = 0.1
    labeled_test_fraction: float = 0.15  # used only when there is no labeled test file
    seed: int = 1337


@dataclass
class TokenizeConfig:
    """Byte-level BPE trained on the cleaned train split."""

    type: str = "bpe"  # bpe | char
    vocab_size: int = 2048
    min_frequency: int = 2
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>", "<|pad|>"])


@dataclass
class ModelConfig:
    """GPT decoder shape; ``vocab_size`` comes from the tokenizer, padded to a multiple of 64."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False


@dataclass
class PretrainConfig:
    """Causal-LM pretraining: optimizer, schedule and loop length."""

    model: ModelConfig = field(default_factory=ModelConfig)
    max_steps: int = 600
    batch_size: int = 16  # global batch, in sequences
    micro_batch_size: int = 16  # per device; accumulation = batch / (micro * devices)
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    val_every: int = 100
    val_batches: int = 20
    precision: str = "32-true"
    seed: int = 1337


@dataclass
class FinetuneConfig:
    """Classification fine-tuning of the pretrained backbone."""

    max_steps: int = 300
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = 64
    dropout: float = 0.1
    freeze_backbone: bool = False
    val_every: int = 100
    precision: str = "32-true"
    seed: int = 1337


@dataclass
class EvaluateConfig:
    """Held-out perplexity and classification metrics."""

    batch_size: int = 64
    ppl_max_batches: int = 50


@dataclass
class ExportConfig:
    """What the exported MLflow model does when asked."""

    max_new_tokens: int = 64


@dataclass
class RegisterConfig:
    """Registered model name and the metric that decides promotion."""

    model_name: str = "lmops-classifier"
    metric: str = "test/acc"
    higher_is_better: bool = True


@dataclass
class TrackingConfig:
    """MLflow experiment; does not change results, so no stage declares it in dvc.yaml."""

    experiment: str = "lmops"


@dataclass
class HardwareConfig:
    """How to run, not what to compute: kept out of every stage's declared params."""

    accelerator: str = "auto"  # auto | cpu | gpu
    devices: str = "auto"  # "auto", a count like "2", or a list like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed
    num_workers: int = 0
    compile: bool = False
    progress_bar: bool = True


@dataclass
class Params:
    """The whole ``params.yaml``."""

    data: DataConfig = field(default_factory=DataConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    tokenize: TokenizeConfig = field(default_factory=TokenizeConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)


# --------------------------------------------------------------------------- validation

_CHOICES: dict[str, tuple[str, ...]] = {
    "data.source": ("sample", "local"),
    "clean.unicode_form": ("NFC", "NFKC", "none"),
    "tokenize.type": ("bpe", "char"),
    "pretrain.precision": ("32-true", "bf16-mixed", "16-mixed", "bf16-true"),
    "finetune.precision": ("32-true", "bf16-mixed", "16-mixed", "bf16-true"),
    "hardware.accelerator": ("auto", "cpu", "gpu", "cuda", "mps"),
    "hardware.strategy": ("auto", "ddp", "fsdp", "deepspeed"),
}


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key} {message}")


def _validate(p: Params) -> None:
    """Value checks that types alone cannot express."""
    for key, choices in _CHOICES.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(p, section), name)
        _check(value in choices, key, f"is {value!r}; allowed: {', '.join(choices)}")

    m = p.pretrain.model
    for name in ("n_layer", "n_head", "n_embd", "block_size"):
        _check(getattr(m, name) > 0, f"pretrain.model.{name}", "must be > 0")
    _check(
        m.n_embd % m.n_head == 0,
        "pretrain.model.n_embd",
        f"({m.n_embd}) must be divisible by pretrain.model.n_head ({m.n_head})",
    )
    for section in ("pretrain", "finetune"):
        s = getattr(p, section)
        _check(s.lr >= 0.0, f"{section}.lr", "must be >= 0")
        _check(0.0 <= s.min_lr <= s.lr, f"{section}.min_lr", "must be between 0 and lr")
        _check(s.max_steps > 0, f"{section}.max_steps", "must be > 0")
        _check(s.batch_size > 0, f"{section}.batch_size", "must be > 0")
        _check(s.warmup_steps >= 0, f"{section}.warmup_steps", "must be >= 0")
        _check(s.val_every > 0, f"{section}.val_every", "must be > 0")
    _check(0.0 <= m.dropout < 1.0, "pretrain.model.dropout", "must be in [0, 1)")
    _check(0.0 <= p.finetune.dropout < 1.0, "finetune.dropout", "must be in [0, 1)")
    _check(
        p.pretrain.micro_batch_size > 0
        and p.pretrain.batch_size % p.pretrain.micro_batch_size == 0,
        "pretrain.micro_batch_size",
        f"({p.pretrain.micro_batch_size}) must be > 0 and divide pretrain.batch_size "
        f"({p.pretrain.batch_size})",
    )
    _check(p.finetune.max_length > 1, "finetune.max_length", "must be > 1")
    for name in ("val_fraction", "labeled_val_fraction", "labeled_test_fraction"):
        v = getattr(p.clean, name)
        _check(0.0 < v < 0.5, f"clean.{name}", f"is {v}; must be in (0, 0.5)")
    _check(p.clean.min_chars >= 0, "clean.min_chars", "must be >= 0")
    _check(p.clean.max_chars > p.clean.min_chars, "clean.max_chars", "must be > clean.min_chars")
    t = p.tokenize
    _check(t.vocab_size >= 32, "tokenize.vocab_size", "must be >= 32")
    _check(t.vocab_size <= 2**32 - 1, "tokenize.vocab_size", "must fit in uint32")
    _check(t.min_frequency >= 1, "tokenize.min_frequency", "must be >= 1")
    _check(
        len(t.special_tokens) >= 1,
        "tokenize.special_tokens",
        "needs at least the end-of-text token (first entry)",
    )
    if p.data.source == "local":
        _check(
            bool(p.data.corpus_paths),
            "data.corpus_paths",
            "is empty; list the text files or folders to pretrain on (data.source is 'local')",
        )
        _check(
            bool(p.data.labeled_train_path),
            "data.labeled_train_path",
            "is not set; name the labeled CSV/TSV/JSONL file to fine-tune on",
        )
    _check(p.evaluate.batch_size > 0, "evaluate.batch_size", "must be > 0")
    _check(p.hardware.num_nodes >= 1, "hardware.num_nodes", "must be >= 1")
    _check(bool(p.register.model_name.strip()), "register.model_name", "must not be empty")


def _allowed_keys(schema: Any, dotted: str) -> list[str]:
    node: Any = schema
    for part in [x for x in dotted.split(".") if x]:
        if not is_dataclass(node):
            return []
        node = {f.name: f for f in fields(node)}.get(part)
        if node is None:
            return []
        node = node.default_factory() if callable(node.default_factory) else node.default
    return [f.name for f in fields(node)] if is_dataclass(node) else []


def _one_line(exc: OmegaConfBaseException) -> str:
    """OmegaConf's multi-line messages become one line that names the key and what is allowed."""
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError) or "not in" in str(exc):
        parent = key.rpartition(".")[0]
        allowed = _allowed_keys(Params(), parent)
        hint = f"; allowed keys here: {', '.join(allowed)}" if allowed else ""
        return f"params.yaml: unknown key '{key}'{hint}"
    if isinstance(exc, ValidationError | ConfigTypeError):
        first = str(exc).splitlines()[0]
        return f"params.yaml: wrong type for '{key}': {first}"
    return f"params.yaml: {str(exc).splitlines()[0]} (key '{key}')"


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The DVC/git root: ``DVC_ROOT`` when DVC runs us, else the nearest folder with dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or os.getcwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dvc.yaml").exists() or (candidate / ".git").exists():
            return candidate
    return here


def load_params(
    path: str | os.PathLike[str] | None = None, overrides: list[str] | None = None
) -> Params:
    """Read ``params.yaml`` (default: at the repo root), merge dotlist overrides, validate.

    Raises :class:`ConfigError` with a one-line message on any problem.
    """
    path = Path(path) if path is not None else repo_root() / "params.yaml"
    if not path.exists():
        raise ConfigError(f"{path}: not found; run from the project root or pass --params")
    schema = OmegaConf.structured(Params)
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml syntax
        raise ConfigError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if loaded is None:
        loaded = OmegaConf.create({})
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: must be a mapping of sections (data, clean, tokenize, ...)")
    try:
        merged = OmegaConf.merge(schema, loaded)
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(overrides))
        params: Params = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as exc:
        raise ConfigError(_one_line(exc)) from None
    _validate(params)
    return params


def to_flat_dict(obj: Any, prefix: str = "") -> dict[str, Any]:
    """``{"pretrain.model.n_layer": 4, ...}``: the flat form MLflow params want."""
    if is_dataclass(obj):
        obj = {f.name: getattr(obj, f.name) for f in fields(obj)}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if is_dataclass(value) or isinstance(value, dict):
            out.update(to_flat_dict(value, name))
        else:
            out[name] = value
    return out
