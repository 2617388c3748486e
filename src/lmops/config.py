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
    # one weight per corpus_paths entry (empty: all 1.0); applied after cleaning: 0.5 keeps half of
    # that source's documents, 2.0 writes each of them twice (always into the same split)
    corpus_weights: list[float] = field(default_factory=list)
    corpus_text_column: str = "text"
    labeled_train_path: str | None = None
    labeled_test_path: str | None = None  # None: split off from the train file
    labeled_text_column: str = "text"
    labeled_label_column: str = "label"
    labeled_test_text_column: str | None = None  # None: same as labeled_text_column


@dataclass
class PIIConfig:
    """Masking of e-mail and IP addresses (datatrove's PIIFormatter)."""

    enabled: bool = False
    emails: bool = True
    ips: bool = True  # public addresses only; private ranges (10.x, 192.168.x) are not personal
    email_replacement: str = "<email>"
    ip_replacement: str = "<ip>"


@dataclass
class GopherRepetitionConfig:
    """Gopher repetition rules (Rae et al. 2021, table A1); null turns one rule off."""

    enabled: bool = True
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_2_gram_frac: float | None = 0.2
    top_3_gram_frac: float | None = 0.18
    top_4_gram_frac: float | None = 0.16
    top_n_gram_min_count: int = 2  # a top n-gram seen once is no repetition (datatrove: 1)
    dup_5_gram_frac: float | None = 0.15
    dup_6_gram_frac: float | None = 0.14
    dup_7_gram_frac: float | None = 0.13
    dup_8_gram_frac: float | None = 0.12
    dup_9_gram_frac: float | None = 0.11
    dup_10_gram_frac: float | None = 0.10


@dataclass
class GopherQualityConfig:
    """Gopher quality rules; null turns one rule off. Two defaults differ from the paper, see params.yaml."""

    enabled: bool = True
    min_doc_words: int | None = 10
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3.0
    max_avg_word_length: float | None = 10.0
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.6
    min_stop_words: int | None = 2


@dataclass
class C4Config:
    """C4 line and page rules (Raffel et al. 2020), meant for crawled web pages."""

    enabled: bool = False
    filter_no_terminal_punct: bool = True
    min_num_sentences: int = 5  # -1: off
    min_words_per_line: int = 3  # -1: off
    max_word_length: int = 1000  # -1: off
    remove_citations: bool = True
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@dataclass
class MinhashConfig:
    """MinHash LSH near-duplicate removal, with candidate pairs verified against ``threshold``."""

    enabled: bool = True
    shingle_size: int = 5  # words per shingle
    bands: int = 20
    rows: int = 5  # hashes per band; bands * rows hashes per document
    threshold: float = 0.7  # estimated Jaccard similarity a candidate pair needs; 0: keep all
    seed: int = 1


@dataclass
class CleanConfig:
    """Text normalization, filters, dedup and the train/val split of the pretraining corpus."""

    unicode_form: str = "NFC"  # NFC | NFKC | none
    invalid_utf8: str = "repair"  # repair (U+FFFD) | drop (the document)
    min_chars: int = 20
    max_chars: int = 100_000
    non_latin: str = "keep"  # keep: English-only rules skip non-Latin-script documents | filter
    pii: PIIConfig = field(default_factory=PIIConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    exact_dedup: bool = True
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    shard_mb: float = 8.0  # size of the work units the executor spreads over workers
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
    # bpe: train on an even sample of about this many MB of the train split (null = all of it);
    # merges settle long before gigabytes, and training time and memory grow with the text
    train_max_mb: float | None = 1000.0


@dataclass
class ModelConfig:
    """GPT decoder shape; ``vocab_size`` comes from the tokenizer, padded to a multiple of 64."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False
    pos_embedding: str = "learned"  # learned (GPT-2 table) | rope (rotary)
    activation_checkpointing: bool = False  # recompute blocks in backward: less memory


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
    early_stopping_patience: int = 0  # validation rounds without a lower val/loss; 0 = off
    precision: str = "32-true"
    seed: int = 1337


@dataclass
class FinetuneConfig:
    """Classification fine-tuning of the pretrained backbone."""

    # 300 steps left the quickstart classifier at 0.79-0.93 test accuracy depending on the
    # seed; 600 gives 0.95-0.98 (BENCHMARKS.md)
    max_steps: int = 600
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
    # training loops: train loss / lr / grad norm / tokens/s every N optimizer steps; each
    # Lightning self.log costs ~0.5 ms on a CPU, so every step would slow a tiny model by ~6 %
    log_every_n_steps: int = 10
    system_metrics: bool = True  # CPU, memory, disk, network (and GPU with pynvml) in MLflow
    system_metrics_interval: float = 10.0  # seconds between system-metric samples


@dataclass
class DataExecutorConfig:
    """Where clean and tokenize run their datatrove pipelines: changes speed, never results."""

    type: str = "local"  # local (multiprocess) | slurm | ray
    workers: int = 0  # tasks run at once; 0: all CPU cores (local) or no limit (slurm / ray)
    work_dir: str = ".lmops/work"  # intermediate files; must be shared storage for slurm / ray
    keep_work: bool = False  # keep intermediates (signatures, removed documents) after success
    slurm_partition: str | None = None
    slurm_time: str = "04:00:00"
    slurm_cpus_per_task: int = 1
    slurm_mem_per_cpu_gb: int = 2
    slurm_env_command: str | None = None  # run before each task, e.g. "source venv/bin/activate"
    ray_cpus_per_task: int = 1
    ray_mem_per_cpu_gb: float = 2.0


@dataclass
class HardwareConfig:
    """How to run, not what to compute: kept out of every stage's declared params."""

    accelerator: str = "auto"  # auto | cpu | gpu
    devices: str = "auto"  # "auto", a count like "2", or a list like "0,1"
    num_nodes: int = 1
    strategy: str = "auto"  # auto | ddp | fsdp | deepspeed
    fsdp_checkpoint: str = "sharded"  # fsdp: sharded (one file per rank) | full (one file)
    deepspeed_stage: int = 2  # deepspeed: ZeRO stage 1 | 2 (sharded parameters: use fsdp)
    # pretrain: optimizer steps between resume checkpoints (0 = none); resuming is exact, so
    # this changes how a killed run restarts, never what it computes
    checkpoint_every: int = 100
    num_workers: int = 0
    compile: bool = False
    progress_bar: bool = True
    peak_tflops: float | None = None  # one device's peak, for MFU; None = known GPUs only
    data_executor: DataExecutorConfig = field(default_factory=DataExecutorConfig)


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
    "hardware.fsdp_checkpoint": ("sharded", "full"),
}


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"params.yaml: {key} {message}")


def _validate_data_stages(p: Params) -> None:
    """Checks for the clean stage's filters, dedup and sources, and the data executor."""
    c = p.clean
    for key, value, choices in (
        ("clean.invalid_utf8", c.invalid_utf8, ("repair", "drop")),
        ("clean.non_latin", c.non_latin, ("keep", "filter")),
        ("hardware.data_executor.type", p.hardware.data_executor.type, ("local", "slurm", "ray")),
    ):
        _check(value in choices, key, f"is {value!r}; allowed: {', '.join(choices)}")
    for section in ("gopher_repetition", "gopher_quality"):
        for f in fields(getattr(c, section)):
            value = getattr(getattr(c, section), f.name)
            if f.name.endswith(("_frac", "_ratio")) and value is not None:
                _check(
                    0.0 <= value <= 1.0, f"clean.{section}.{f.name}", "must be in [0, 1] or null"
                )
    m = c.minhash
    for name in ("shingle_size", "bands", "rows"):
        _check(getattr(m, name) >= 1, f"clean.minhash.{name}", "must be >= 1")
    _check(0.0 <= m.threshold <= 1.0, "clean.minhash.threshold", "must be in [0, 1]")
    _check(c.shard_mb > 0, "clean.shard_mb", "must be > 0")
    w = p.data.corpus_weights
    _check(
        not w or len(w) == len(p.data.corpus_paths),
        "data.corpus_weights",
        f"has {len(w)} entries for {len(p.data.corpus_paths)} data.corpus_paths; give one each "
        "or none",
    )
    _check(all(x >= 0 for x in w), "data.corpus_weights", "must be >= 0")
    _check(
        not w or any(x > 0 for x in w), "data.corpus_weights", "are all 0; nothing would be kept"
    )
    e = p.hardware.data_executor
    _check(e.workers >= 0, "hardware.data_executor.workers", "must be >= 0 (0 = all cores)")
    _check(
        e.type != "slurm" or bool(e.slurm_partition),
        "hardware.data_executor.slurm_partition",
        "is not set; name the slurm partition to submit to",
    )


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
    _check(
        m.pos_embedding in ("learned", "rope"),
        "pretrain.model.pos_embedding",
        f"is {m.pos_embedding!r}; allowed: learned, rope",
    )
    _check(
        m.pos_embedding != "rope" or (m.n_embd // m.n_head) % 2 == 0,
        "pretrain.model.pos_embedding",
        "rope needs an even head size (pretrain.model.n_embd / n_head)",
    )
    _check(
        p.pretrain.early_stopping_patience >= 0,
        "pretrain.early_stopping_patience",
        "must be >= 0 (0 = off)",
    )
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
    _validate_data_stages(p)
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
    _check(
        p.hardware.peak_tflops is None or p.hardware.peak_tflops > 0,
        "hardware.peak_tflops",
        "must be > 0 or null",
    )
    _check(
        p.hardware.deepspeed_stage in (1, 2),
        "hardware.deepspeed_stage",
        "must be 1 or 2 (to shard the parameters too, use hardware.strategy fsdp)",
    )
    _check(
        p.tokenize.train_max_mb is None or p.tokenize.train_max_mb > 0,
        "tokenize.train_max_mb",
        "must be > 0 (MB of text to train the tokenizer on) or null (all of it)",
    )
    _check(p.tracking.log_every_n_steps >= 1, "tracking.log_every_n_steps", "must be >= 1")
    _check(
        p.tracking.system_metrics_interval > 0,
        "tracking.system_metrics_interval",
        "must be > 0 (seconds)",
    )
    _check(p.hardware.checkpoint_every >= 0, "hardware.checkpoint_every", "must be >= 0 (0 = off)")
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
