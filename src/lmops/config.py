"""The schema of ``params.yaml``: one dataclass per section, loaded and validated with OmegaConf.

Every stage calls :func:`load_params` first, so a typo, a wrong type or an impossible value stops
the stage with one line naming the key, before any data is read or any run is opened.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

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
    "LoraConfig",
    "ModelConfig",
    "Params",
    "Section",
    "load_params",
    "repo_root",
]


log = logging.getLogger(__name__)


class LmopsError(Exception):
    """An error a user can fix; stage scripts print its message as one line and exit 1."""


class ConfigError(LmopsError):
    """``params.yaml`` is wrong: unknown key, wrong type or invalid value."""


# --------------------------------------------------------------------------- declaring checks


def one_of(*choices: Any, default: Any = None, hint: str = "") -> Any:
    """A field that takes one of ``choices`` (default: the first); the section checks it.

    The one way a section declares allowed values: OmegaConf has no ``Literal``, and our values
    ("32-true", "bf16-mixed") are not names an ``Enum`` could carry, so the choices ride in the
    field's metadata and :meth:`Section.__post_init__` names them in its error.
    """
    value = choices[0] if default is None else default
    return field(default=value, metadata={"choices": choices, "hint": hint})


INT64_MAX = 2**63 - 1  # NumPy and torch hold integers in 64 bits
SEED_MAX = 2**32 - 1  # NumPy's (and so Lightning's seed_everything's) largest seed


class Section:
    """Base of every ``params.yaml`` section: validation sits next to the fields it checks.

    OmegaConf builds each section through its dataclass constructor, so ``__post_init__`` runs on
    the loaded values: it checks the fields declared with :func:`one_of`, then the section's own
    rules in :meth:`check`. ``KEY`` is the section's dotted place in ``params.yaml``, so every
    message names the full key a user has to change.
    """

    KEY: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            self._check_number(f.name, value)
            if choices is not None and value not in choices:
                allowed = ", ".join(str(c) for c in choices)
                hint = f" ({f.metadata['hint']})" if f.metadata.get("hint") else ""
                self.require(False, f.name, f"is {value!r}; allowed: {allowed}{hint}")
        self.check()

    def _check_number(self, name: str, value: Any) -> None:
        """Rules every number of the schema obeys, so no section can forget them: a float is
        finite (``.inf`` passes every ``> 0`` check, then stalls a sleep or an optimizer), an
        int fits in 64 bits (NumPy and torch raise OverflowError beyond), and a seed is one
        NumPy accepts (Lightning silently replaces an out-of-range seed with 0)."""
        values = value if isinstance(value, list) else [value]
        for x in values:
            if isinstance(x, float):
                self.require(math.isfinite(x), name, f"is {x}; must be a finite number")
            elif isinstance(x, int) and not isinstance(x, bool):
                self.require(
                    abs(x) <= INT64_MAX, name, f"is {x}; must be within +-{INT64_MAX} (64 bits)"
                )
                if name == "seed" or name.endswith("_seed"):
                    self.require(0 <= x <= SEED_MAX, name, f"is {x}; must be in 0..{SEED_MAX}")

    def check(self) -> None:
        """Rules across fields or on ranges; a section overrides it when it has any."""

    def require(self, ok: bool, name: str, message: str) -> None:
        """Raise :class:`ConfigError` naming ``<KEY>.<name>`` unless ``ok``."""
        if not ok:
            key = f"{self.KEY}.{name}" if self.KEY else name
            raise ConfigError(f"params.yaml: {key} {message}")

    def require_fractions(self) -> None:
        """Every ``*_frac`` / ``*_ratio`` field that is set lies in [0, 1]."""
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if f.name.endswith(("_frac", "_ratio")) and value is not None:
                self.require(0.0 <= value <= 1.0, f.name, "must be in [0, 1] or null")


# --------------------------------------------------------------------------- sections


@dataclass
class SampleConfig(Section):
    """Size of the built-in synthetic corpus and labeled set (``data.source: sample``)."""

    KEY: ClassVar[str] = "data.sample"

    n_documents: int = 6000
    n_labeled_train: int = 3000
    n_labeled_test: int = 600
    seed: int = 1234

    def check(self) -> None:
        self.require(
            self.n_documents >= 10, "n_documents", "must be >= 10 (documents to pretrain on)"
        )
        self.require(
            self.n_labeled_train >= 10, "n_labeled_train", "must be >= 10 (rows to fine-tune on)"
        )
        self.require(self.n_labeled_test >= 2, "n_labeled_test", "must be >= 2 (rows to test on)")


# How a .txt / .md file is cut into documents: blank-line paragraphs grouped into blocks of about
# data.txt_block_chars (a file without blank lines: lines grouped likewise) | each non-empty line |
# the whole file
TXT_SPLITS = ("paragraphs", "lines", "file")


@dataclass
class DataConfig(Section):
    """Where the raw text and the labeled fine-tuning set come from, and how its files are cut
    into documents and columns (corpus files come in the shapes their authors chose)."""

    KEY: ClassVar[str] = "data"

    source: str = one_of("sample", "local")
    sample: SampleConfig = field(default_factory=SampleConfig)
    # local source: files (txt, jsonl, csv, tsv) or folders of them, relative to the repo root
    corpus_paths: list[str] = field(default_factory=list)
    # one weight per corpus_paths entry (empty: all 1.0); applied after cleaning: 0.5 keeps half of
    # that source's documents, 2.0 writes each of them twice (always into the same split)
    corpus_weights: list[float] = field(default_factory=list)
    corpus_text_column: str = "text"
    txt_split: str = one_of(*TXT_SPLITS)
    txt_block_chars: int = 1000  # paragraphs: characters a document grows to before it is cut
    # csv / tsv corpus files start with a header row; false: columns are named by position,
    # "0", "1", ... (so corpus_text_column: 0 reads the first column)
    corpus_header: bool = True
    labeled_train_path: str | None = None
    labeled_test_path: str | None = None  # None: split off from the train file
    labeled_text_column: str = "text"
    labeled_label_column: str = "label"
    labeled_test_text_column: str | None = None  # None: same as labeled_text_column
    # finetune.task sft: the columns of the prompt and of the response it should get
    labeled_prompt_column: str = "prompt"
    labeled_response_column: str = "response"
    # as corpus_header, for the labeled (classification or sft) csv / tsv files
    labeled_header: bool = True

    def check(self) -> None:
        self.require(
            self.txt_block_chars >= 1,
            "txt_block_chars",
            "must be >= 1 (characters per document of a text file)",
        )
        self.require(
            self.source != "local" or self.corpus_header or self.corpus_text_column.isdigit(),
            "corpus_text_column",
            f"is {self.corpus_text_column!r}, but data.corpus_header is false: columns are "
            "named by position, so give the text column's (0, 1, ...)",
        )
        w = self.corpus_weights
        self.require(
            not w or len(w) == len(self.corpus_paths),
            "corpus_weights",
            f"has {len(w)} entries for {len(self.corpus_paths)} data.corpus_paths; give one "
            "each or none",
        )
        self.require(all(x >= 0 for x in w), "corpus_weights", "must be >= 0")
        self.require(
            not w or any(x > 0 for x in w), "corpus_weights", "are all 0; nothing would be kept"
        )
        if self.source == "local":
            self.require(
                bool(self.corpus_paths),
                "corpus_paths",
                "is empty; list the text files or folders to pretrain on (data.source is 'local')",
            )


@dataclass
class PIIConfig(Section):
    """Masking of e-mail and IP addresses (datatrove's PIIFormatter)."""

    KEY: ClassVar[str] = "clean.pii"

    enabled: bool = False
    emails: bool = True
    ips: bool = True  # public addresses only; private ranges (10.x, 192.168.x) are not personal
    email_replacement: str = "<email>"
    ip_replacement: str = "<ip>"


@dataclass
class GopherRepetitionConfig(Section):
    """Gopher repetition rules (Rae et al. 2021, table A1); null turns one rule off."""

    KEY: ClassVar[str] = "clean.gopher_repetition"

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

    def check(self) -> None:
        self.require_fractions()


# A param that follows clean.language (the value in LANGUAGES) unless given a value of its own.
AUTO = "auto"


@dataclass(frozen=True)
class LanguageDefaults:
    """The word rules one ``clean.language`` brings: its script, word splitter and thresholds.

    Why per language: Gopher's rules were fitted to English web text. Chinese and Japanese put no
    spaces between words, so their words are found by a segmenter and are 1-2 characters long
    (English: 3-10); a stop-word rule needs the language's own most frequent words. The values
    are FineWeb-2's per-language filter configs (huggingface/fineweb-2, ``configs/<lang>.yml``:
    stop words and word-length bounds fitted on each language's web text), except that a lower
    word-length bound never exceeds Gopher's 3 (FineWeb-2 drops more short documents than this
    project wants to).
    """

    name: str
    # the script a document must be written in for these rules to judge it (see
    # lmops.data.text.text_script): latin | han (Chinese) | japanese (kanji with kana)
    script: str
    # datatrove's word-tokenizer key (tokenizer_assignment.csv: ISO 639-3 code + script); None:
    # the regex word splitter, which for a language written with spaces between words does what
    # spaCy's rule tokenizer does, ~60x faster
    datatrove_tokenizer: str | None
    min_avg_word_length: float
    max_avg_word_length: float
    stop_words: tuple[str, ...]
    min_stop_words: int = 2
    # FineWeb's line_punct_thr: the least share of a document's prose lines that end in
    # terminal punctuation (datatrove's TERMINAL_PUNCTUATION: . ! ? and 。！？, other scripts'
    # too); None: the rule is off. FineWeb-2's value per language; off for English (FineWeb's
    # 0.12 would drop sentence corpora written without final stops, e.g. SST-2) and for
    # German (FineWeb-2: 0.0)
    line_punct_thr: float | None = None


LANGUAGES: dict[str, LanguageDefaults] = {
    "en": LanguageDefaults(  # Gopher's own values and stop words
        "English", "latin", None, 3.0, 10.0,
        ("the", "be", "to", "of", "and", "that", "have", "with"),
    ),
    "pt": LanguageDefaults(
        "Portuguese", "latin", None, 3.0, 13.0,
        ("de", "a", "e", "o", "em", "do", "da", "que", "um", "no", "uma", "com", "para", "na",
         "é", "foi"), line_punct_thr=0.154,
    ),
    "es": LanguageDefaults(
        "Spanish", "latin", None, 3.0, 14.0,
        ("de", "la", "en", "el", "y", "a", "que", "del", "los", "se", "por", "un", "con", "una",
         "las", "su"), line_punct_thr=0.3,
    ),
    "de": LanguageDefaults(
        "German", "latin", None, 3.0, 15.0,
        ("der", "und", "die", "in", "von", "im", "den", "des", "mit", "das", "er", "dem", "als",
         "wurde", "für"),
    ),
    "fr": LanguageDefaults(
        "French", "latin", None, 2.0, 11.0,
        ("de", "la", "le", "et", "à", "en", "des", "du", "les", "est", "un", "une", "il", "dans",
         "par", "au"), line_punct_thr=0.1,
    ),
    "zh": LanguageDefaults(  # spaCy + jieba through datatrove: the lang extra
        "Chinese", "han", "cmn_Hani", 1.0, 5.0,
        ("的", "年", "在", "月", "是", "和", "日", "了", "於", "·", "為", "有", "被", "人", "中",
         "为", "他", "與", "後", "也", "而", "由"), line_punct_thr=0.106,
    ),
    "ja": LanguageDefaults(  # spaCy + SudachiPy through datatrove: the lang extra
        "Japanese", "japanese", "jpn_Jpan", 1.0, 5.0,
        ("の", "に", "を", "は", "た", "て", "が", "と", "で", "年", "し", "・", "月", "れ", "さ"),
        line_punct_thr=0.167,
    ),
}  # fmt: skip


@dataclass
class GopherQualityConfig(Section):
    """Gopher quality rules; null turns one rule off. Two defaults differ from the paper, see
    params.yaml. ``auto`` takes clean.language's value (:data:`LANGUAGES`)."""

    KEY: ClassVar[str] = "clean.gopher_quality"

    enabled: bool = True
    min_doc_words: int | None = 10
    max_doc_words: int | None = 100_000
    # number | null (off) | auto (clean.language's: en 3-10, zh / ja 1-5, ...); Any, since
    # OmegaConf has no union of a number and a string
    min_avg_word_length: Any = AUTO
    max_avg_word_length: Any = AUTO
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = 0.6
    min_stop_words: Any = AUTO  # number | null | auto (2 for every language)
    # a list of words | null (off) | auto (clean.language's most frequent words)
    stop_words: Any = AUTO

    def check(self) -> None:
        self.require_fractions()
        for name in ("min_avg_word_length", "max_avg_word_length", "min_stop_words"):
            value = getattr(self, name)
            number = isinstance(value, (int, float)) and not isinstance(value, bool)
            self.require(
                value is None or value == AUTO or (number and value >= 0),
                name,
                f"is {value!r}; must be a number >= 0, null (off) or auto (clean.language's)",
            )
        words = self.stop_words
        self.require(
            words is None
            or words == AUTO
            # a list, not any iterable: `true` or `5` raised TypeError here (params fuzzing)
            or (isinstance(words, list | tuple) and all(isinstance(w, str) for w in words)),
            "stop_words",
            f"is {words!r}; must be a list of words, null (off) or auto (clean.language's)",
        )

    def resolved(self, language: str) -> GopherQualityConfig:
        """These rules with every ``auto`` replaced by ``language``'s value."""
        defaults = LANGUAGES[language]
        values = {
            name: getattr(defaults, name)
            for name in ("min_avg_word_length", "max_avg_word_length", "min_stop_words")
            if getattr(self, name) == AUTO
        }
        if self.stop_words == AUTO:
            values["stop_words"] = list(defaults.stop_words)
        return replace(self, **values)


@dataclass
class FineWebQualityConfig(Section):
    """FineWeb's line-punctuation rule: a document whose prose lines mostly do not end in
    terminal punctuation (menus, link lists, tag clouds) is dropped. ``auto`` takes
    clean.language's FineWeb-2 value (:data:`LANGUAGES`; off for English)."""

    KEY: ClassVar[str] = "clean.fineweb_quality"

    enabled: bool = True
    # number in [0, 1] | null (off) | auto (clean.language's: pt 0.154, es 0.3, fr 0.1,
    # zh 0.106, ja 0.167; en, de off); Any, since OmegaConf has no union of number and string
    line_punct_thr: Any = AUTO

    def check(self) -> None:
        value = self.line_punct_thr
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        self.require(
            value is None or value == AUTO or (number and 0 <= value <= 1),
            "line_punct_thr",
            f"is {value!r}; must be a number in [0, 1], null (off) or auto (clean.language's)",
        )

    def resolved(self, language: str) -> FineWebQualityConfig:
        """This rule with ``auto`` replaced by ``language``'s value."""
        if self.line_punct_thr != AUTO:
            return self
        return replace(self, line_punct_thr=LANGUAGES[language].line_punct_thr)


@dataclass
class C4Config(Section):
    """C4 line and page rules (Raffel et al. 2020), meant for crawled web pages."""

    KEY: ClassVar[str] = "clean.c4"

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
class MinhashConfig(Section):
    """MinHash LSH near-duplicate removal, with candidate pairs verified against ``threshold``."""

    KEY: ClassVar[str] = "clean.minhash"

    enabled: bool = True
    shingle_size: int = 5  # words per shingle
    bands: int = 20
    rows: int = 5  # hashes per band; bands * rows hashes per document
    threshold: float = 0.7  # estimated Jaccard similarity a candidate pair needs; 0: keep all
    seed: int = 1

    def check(self) -> None:
        for name in ("shingle_size", "bands", "rows"):
            self.require(getattr(self, name) >= 1, name, "must be >= 1")
        self.require(0.0 <= self.threshold <= 1.0, "threshold", "must be in [0, 1]")


@dataclass
class CleanConfig(Section):
    """Text normalization, filters, dedup and the train/val split of the pretraining corpus."""

    KEY: ClassVar[str] = "clean"

    unicode_form: str = one_of("NFC", "NFKC", "none")
    invalid_utf8: str = one_of("repair", "drop")  # repair (U+FFFD) | drop (the document)
    min_chars: int = 20
    max_chars: int = 100_000
    # ISO 639-1 code of the corpus' language: its word splitter, stop words and word-length
    # bounds (LANGUAGES); zh and ja need the lang extra (a word segmenter)
    language: str = one_of(*LANGUAGES, default="en", hint="pip install 'lmops[lang]' for zh, ja")
    # keep: the language's rules (Gopher quality, FineWeb line punctuation, C4) skip documents
    # in another script than clean.language's (judged on their prose, outside code and
    # formulas) | filter
    non_latin: str = one_of("keep", "filter")
    pii: PIIConfig = field(default_factory=PIIConfig)
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)
    fineweb_quality: FineWebQualityConfig = field(default_factory=FineWebQualityConfig)
    c4: C4Config = field(default_factory=C4Config)
    exact_dedup: bool = True
    minhash: MinhashConfig = field(default_factory=MinhashConfig)
    shard_mb: float = 8.0  # size of the work units the executor spreads over workers
    val_fraction: float = 0.05
    labeled_val_fraction: float = 0.1
    labeled_test_fraction: float = 0.15  # used only when there is no labeled test file
    seed: int = 1337

    def check(self) -> None:
        for name in ("val_fraction", "labeled_val_fraction", "labeled_test_fraction"):
            value = getattr(self, name)
            self.require(0.0 < value < 0.5, name, f"is {value}; must be in (0, 0.5)")
        self.require(self.min_chars >= 0, "min_chars", "must be >= 0")
        self.require(self.max_chars > self.min_chars, "max_chars", "must be > clean.min_chars")
        self.require(self.shard_mb > 0, "shard_mb", "must be > 0")
        self.require(
            not self.c4.enabled or LANGUAGES[self.language].script == "latin",
            "c4.enabled",
            f"is true, but C4's line rules want Latin end punctuation ('.', '?', '!'): they would "
            f"drop every line of {LANGUAGES[self.language].name} text (clean.language "
            f"{self.language}); set it to false",
        )

    def language_defaults(self) -> LanguageDefaults:
        """The word rules ``language`` brings (:data:`LANGUAGES`)."""
        return LANGUAGES[self.language]


@dataclass
class TokenizeConfig(Section):
    """Byte-level BPE trained on the cleaned train split."""

    KEY: ClassVar[str] = "tokenize"

    type: str = one_of("bpe", "char")
    vocab_size: int = 2048
    min_frequency: int = 2
    special_tokens: list[str] = field(default_factory=lambda: ["<|endoftext|>", "<|pad|>"])
    # bpe: train on an even sample of about this many MB of the train split (null = all of it);
    # merges settle long before gigabytes, and training time and memory grow with the text
    train_max_mb: float | None = 1000.0

    def check(self) -> None:
        self.require(self.vocab_size >= 32, "vocab_size", "must be >= 32")
        # byte-level BPE starts from the 256 bytes; a smaller request would silently grow
        least = 256 + len(self.special_tokens)
        self.require(
            self.type != "bpe" or self.vocab_size >= least,
            "vocab_size",
            f"is {self.vocab_size}; byte-level BPE needs at least {least} (256 bytes + the "
            "special tokens)",
        )
        self.require(
            len(set(self.special_tokens)) == len(self.special_tokens),
            "special_tokens",
            "has a token twice; end-of-text and padding must differ",
        )
        self.require(self.vocab_size <= VOCAB_MAX, "vocab_size", f"must be <= {VOCAB_MAX} (uint32)")
        self.require(
            all(token.strip() for token in self.special_tokens),
            "special_tokens",
            "has an empty token; each must be a non-blank string such as <|endoftext|>",
        )
        self.require(self.min_frequency >= 1, "min_frequency", "must be >= 1")
        self.require(
            len(self.special_tokens) >= 1,
            "special_tokens",
            "needs at least the end-of-text token (first entry)",
        )
        self.require(
            self.train_max_mb is None or self.train_max_mb > 0,
            "train_max_mb",
            "must be > 0 (MB of text to train the tokenizer on) or null (all of it)",
        )


# Upper bounds of the GPT's shape: far beyond what lmops trains (GPT-3 175B has 96 layers, 96
# heads, n_embd 12288), low enough that a typo (an extra 000) fails here in one line rather than
# in an allocation of terabytes, or a Python loop building 10**9 blocks, minutes into pretrain.
MODEL_SIZE_LIMITS = {"n_layer": 1024, "n_head": 1024, "n_embd": 65536, "block_size": 2**20}
VOCAB_MAX = 2**32 - 1  # token files hold ids as uint32 at most


@dataclass
class ModelConfig(Section):
    """The GPT decoder's shape: ``pretrain.model`` in params.yaml, and the ``gpt`` entry of a
    model folder's ``config.json`` (one dataclass for both, so they cannot drift apart).

    ``vocab_size`` is left null in params.yaml: the pretrain stage fills in the tokenizer's
    vocabulary padded to a multiple of 64 (:meth:`with_vocab`); a number there sets the
    embedding table's size instead (at least the tokenizer's vocabulary).
    """

    KEY: ClassVar[str] = "pretrain.model"

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = False
    pos_embedding: str = one_of("learned", "rope")  # learned (GPT-2 table) | rope (rotary)
    activation_checkpointing: bool = False  # recompute blocks in backward: less memory
    vocab_size: int | None = None

    def check(self) -> None:
        for name, most in MODEL_SIZE_LIMITS.items():
            value = getattr(self, name)
            self.require(0 < value <= most, name, f"is {value}; must be in 1..{most}")
        self.require(
            self.n_embd % self.n_head == 0,
            "n_embd",
            f"({self.n_embd}) must be divisible by pretrain.model.n_head ({self.n_head})",
        )
        self.require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        self.require(
            self.pos_embedding != "rope" or (self.n_embd // self.n_head) % 2 == 0,
            "pos_embedding",
            "rope needs an even head size (pretrain.model.n_embd / n_head)",
        )
        self.require(
            self.vocab_size is None or 0 < self.vocab_size <= VOCAB_MAX,
            "vocab_size",
            f"must be in 1..{VOCAB_MAX} (token ids are stored as uint32), or null (the "
            "tokenizer's)",
        )

    def with_vocab(self, tokenizer_vocab: int, padded_vocab: int) -> ModelConfig:
        """This shape sized for a tokenizer (both numbers from the tokenize stage's meta.json):
        its padded vocabulary when ``vocab_size`` is null, else ``vocab_size`` if it is enough."""
        if self.vocab_size is None:
            return replace(self, vocab_size=padded_vocab)
        self.require(
            self.vocab_size >= tokenizer_vocab,
            "vocab_size",
            f"({self.vocab_size}) is smaller than the tokenizer's {tokenizer_vocab} tokens; "
            "set it to null",
        )
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for a model folder's ``config.json``."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown or missing shape keys are an error, so a config
        written by another version is never half-read. Keys added later
        (``pos_embedding``, ``activation_checkpointing``) take their defaults when absent,
        which is what a ``config.json`` written before them meant."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        missing = sorted({"vocab_size", "block_size", "n_layer", "n_head", "n_embd"} - set(data))
        if unknown or missing:
            raise LmopsError(
                f"model config has unknown keys {unknown} / lacks {missing}; it was written by "
                "another lmops version"
            )
        return cls(**data)


PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "bf16-true")
MAX_STEPS = 2**31 - 1  # Lightning and the LR schedule count steps in 32-bit integers
STRATEGIES = ("auto", "ddp", "fsdp", "deepspeed")


class TrainingLoopChecks(Section):
    """The rules pretraining and fine-tuning share (both sections have these fields)."""

    lr: float
    min_lr: float
    max_steps: int
    weight_decay: float
    grad_clip: float
    batch_size: int
    warmup_steps: int
    val_every: int

    def check(self) -> None:
        self.require(self.lr > 0.0, "lr", "must be > 0 (a zero learning rate trains nothing)")
        self.require(0.0 <= self.min_lr <= self.lr, "min_lr", "must be between 0 and lr")
        self.require(0 < self.max_steps <= MAX_STEPS, "max_steps", f"must be in 1..{MAX_STEPS}")
        self.require(self.weight_decay >= 0.0, "weight_decay", "must be >= 0")
        self.require(self.grad_clip >= 0.0, "grad_clip", "must be >= 0 (0 = no clipping)")
        if self.warmup_steps >= self.max_steps:
            log.warning(
                "params.yaml: %s.warmup_steps (%d) >= max_steps (%d): the learning rate never "
                "reaches %s.lr",
                self.KEY,
                self.warmup_steps,
                self.max_steps,
                self.KEY,
            )
        self.require(self.batch_size > 0, "batch_size", "must be > 0")
        self.require(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        self.require(self.val_every > 0, "val_every", "must be > 0")


@dataclass
class PretrainConfig(TrainingLoopChecks):
    """Causal-LM pretraining: optimizer, schedule and loop length."""

    KEY: ClassVar[str] = "pretrain"

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
    precision: str = one_of(*PRECISIONS)
    seed: int = 1337

    def check(self) -> None:
        super().check()
        self.require(
            self.early_stopping_patience >= 0, "early_stopping_patience", "must be >= 0 (0 = off)"
        )
        for name in ("beta1", "beta2"):
            self.require(0.0 <= getattr(self, name) < 1.0, name, "must be in [0, 1)")
        self.require(
            self.val_batches >= 1,
            "val_batches",
            "must be >= 1 (validation picks the stage's model and measures it)",
        )
        self.require(
            self.micro_batch_size > 0 and self.batch_size % self.micro_batch_size == 0,
            "micro_batch_size",
            f"({self.micro_batch_size}) must be > 0 and divide pretrain.batch_size "
            f"({self.batch_size})",
        )


# The Linear layers of our GPT that LoRA can adapt (the tied embedding / lm_head never are)
LORA_TARGETS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
FINETUNE_TASKS = ("classification", "sft", "none")
OVERFLOW_MODES = ("truncate", "drop")  # sft: what happens to an example too long to fit


@dataclass
class LoraConfig(Section):
    """Low-rank adapters (``finetune.method: lora``): only they train; export merges them."""

    KEY: ClassVar[str] = "finetune.lora"

    rank: int = 8
    alpha: float = 16.0  # the update is scaled by alpha / rank
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))

    def check(self) -> None:
        self.require(self.rank >= 1, "rank", "must be >= 1")
        self.require(self.alpha > 0, "alpha", "must be > 0")
        self.require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        unknown = [t for t in self.targets if t not in LORA_TARGETS]
        self.require(
            bool(self.targets) and not unknown,
            "targets",
            f"has {unknown or 'no entries'}; allowed: {', '.join(LORA_TARGETS)}",
        )


@dataclass
class FinetuneConfig(TrainingLoopChecks):
    """Fine-tuning of the pretrained model: a classification head, or prompt -> response SFT."""

    KEY: ClassVar[str] = "finetune"

    # classification: a head on the backbone, trained on (text, label) rows; sft: the LM learns
    # to write the response to a prompt, loss on the response tokens only; none: no fine-tuning
    # (the pipeline evaluates, exports and registers the pretrained LM alone)
    task: str = one_of(*FINETUNE_TASKS)
    method: str = one_of("full", "lora")  # lora: only low-rank adapters train (finetune.lora)
    lora: LoraConfig = field(default_factory=LoraConfig)
    # 300 steps left the quickstart classifier at 0.79-0.93 test accuracy depending on the
    # seed; 600 gives 0.95-0.98 (BENCHMARKS.md)
    max_steps: int = 600
    batch_size: int = 32
    lr: float = 5e-4
    min_lr: float = 5e-5
    warmup_steps: int = 30
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int = 64  # tokens per example (sft: per packed row), at most the block size
    dropout: float = 0.1
    freeze_backbone: bool = False
    # classification: the embeddings and the first N blocks stay as pretrained (0: none)
    freeze_layers: int = 0
    # classification: the backbone learns at lr x this, the head at lr (1.0: the same)
    backbone_lr_scale: float = 1.0
    # sft: the text the model sees before the response; {prompt} is replaced by the prompt
    prompt_template: str = "{prompt}\n### Response:\n"
    packing: bool = True  # sft: several examples per row, none attending to another
    # sft: an example longer than max_length: truncate (cut the prompt from the left) | drop
    overflow: str = one_of(*OVERFLOW_MODES)
    val_every: int = 100
    precision: str = one_of(*PRECISIONS)
    seed: int = 1337

    def check(self) -> None:
        super().check()
        self.require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        self.require(self.max_length > 1, "max_length", "must be > 1")
        self.require(self.freeze_layers >= 0, "freeze_layers", "must be >= 0 (0 = none)")
        self.require(0.0 < self.backbone_lr_scale <= 1.0, "backbone_lr_scale", "must be in (0, 1]")
        self.require(
            "{prompt}" in self.prompt_template,
            "prompt_template",
            "must contain {prompt} (where the prompt goes)",
        )
        self.require(
            not (self.method == "lora" and self.freeze_backbone),
            "freeze_backbone",
            "and finetune.method lora exclude each other (lora already freezes the backbone)",
        )


@dataclass
class EvaluateConfig(Section):
    """Held-out perplexity and classification metrics."""

    KEY: ClassVar[str] = "evaluate"

    batch_size: int = 64
    ppl_max_batches: int = 50
    max_new_tokens: int = 64  # sft: the longest answer generated per test prompt (greedy)
    samples: int = 20  # sft: prompts / references / outputs shown in the report and MLflow

    def check(self) -> None:
        self.require(self.batch_size > 0, "batch_size", "must be > 0")
        self.require(self.ppl_max_batches >= 1, "ppl_max_batches", "must be >= 1")
        self.require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")
        self.require(self.samples >= 0, "samples", "must be >= 0")


@dataclass
class ExportConfig(Section):
    """What the exported MLflow model does when asked, and which other runtimes get a copy.

    ``onnx`` and ``hf`` are off by default: each needs an extra (``lmops[onnx]``, ``lmops[hf]``)
    and adds export time, and the quickstart should need neither. Each copy is verified against
    the PyTorch model at export time (max |Δlogit| <= 1e-4), so a file that is written is right.
    """

    KEY: ClassVar[str] = "export"

    max_new_tokens: int = 64
    # model.onnx (LM: ids -> logits; classifier: ids, lengths -> class logits) beside each
    # bundle and inside its pyfunc model; needs the onnx extra
    onnx: bool = False
    # the LM (pretrained, and an SFT model) as a GPT2LMHeadModel folder; needs the hf extra;
    # a rotary model fails (GPT-2 has no RoPE); the classifier is skipped (no exact HF head)
    hf: bool = False

    def check(self) -> None:
        self.require(self.max_new_tokens >= 1, "max_new_tokens", "must be >= 1")


@dataclass
class RegisterConfig(Section):
    """Registered model name and the metric that decides promotion."""

    KEY: ClassVar[str] = "register"

    model_name: str = "lmops-classifier"
    metric: str | None = None  # null: test/acc (classification) or test/bleu (sft)
    higher_is_better: bool = True

    def check(self) -> None:
        self.require(bool(self.model_name.strip()), "model_name", "must not be empty")

    def targets(self, task: str) -> dict[str, tuple[str, str, bool]]:
        """Per exported model (``finetuned``, ``lm``): the registered name, and the evaluation
        metric and direction that ``lmops promote`` compares versions on."""
        metric = self.metric or ("test/bleu" if task == "sft" else "test/acc")
        return {
            "finetuned": (self.model_name, metric, self.higher_is_better),
            "lm": (f"{self.model_name}-lm", "val/ppl", False),
        }


@dataclass
class TrackingConfig(Section):
    """MLflow experiment; does not change results, so no stage declares it in dvc.yaml."""

    KEY: ClassVar[str] = "tracking"

    experiment: str = "lmops"
    # training loops: train loss / lr / grad norm / tokens/s every N optimizer steps; each
    # Lightning self.log costs ~0.5 ms on a CPU, so every step would slow a tiny model by ~6 %
    log_every_n_steps: int = 10
    system_metrics: bool = True  # CPU, memory, disk, network (and GPU with pynvml) in MLflow
    system_metrics_interval: float = 10.0  # seconds between system-metric samples

    def check(self) -> None:
        self.require(bool(self.experiment.strip()), "experiment", "must not be empty")
        self.require(self.log_every_n_steps >= 1, "log_every_n_steps", "must be >= 1")
        self.require(
            self.system_metrics_interval > 0, "system_metrics_interval", "must be > 0 (seconds)"
        )


@dataclass
class DataExecutorConfig(Section):
    """Where clean and tokenize run their datatrove pipelines: changes speed, never results."""

    KEY: ClassVar[str] = "hardware.data_executor"

    type: str = one_of("local", "slurm", "ray")  # local (multiprocess) | slurm | ray
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

    def work_root(self, root: Path) -> Path:
        """``work_dir`` as a folder: relative paths are under the repo ``root``."""
        path = Path(self.work_dir)
        return path if path.is_absolute() else root / path

    def check(self) -> None:
        self.require(self.workers >= 0, "workers", "must be >= 0 (0 = all cores)")
        for name in ("slurm_cpus_per_task", "slurm_mem_per_cpu_gb", "ray_cpus_per_task"):
            self.require(getattr(self, name) >= 1, name, "must be >= 1")
        self.require(self.ray_mem_per_cpu_gb > 0, "ray_mem_per_cpu_gb", "must be > 0 (GB)")
        self.require(bool(self.work_dir.strip()), "work_dir", "must not be empty (a folder)")
        self.require(
            self.type != "slurm" or bool(self.slurm_partition),
            "slurm_partition",
            "is not set; hardware.data_executor.type slurm submits to a partition: name it",
        )


def _is_device_spec(text: str) -> bool:
    """Whether ``hardware.devices`` is one the trainer understands (lmops.training.strategies
    resolves it; checked here too so a typo fails in the check stage, not after data work)."""
    text = str(text).strip()
    if text == "auto":
        return True
    try:
        if "," in text:
            ids = [int(part) for part in text.split(",") if part.strip()]
            return bool(ids) and all(i >= 0 for i in ids)
        count = int(text)
    except ValueError:
        return False
    return count >= 1 or count == -1


@dataclass
class HardwareConfig(Section):
    """How to run, not what to compute: kept out of every stage's declared params."""

    KEY: ClassVar[str] = "hardware"

    accelerator: str = one_of("auto", "cpu", "gpu", "cuda", "mps")
    devices: str = "auto"  # "auto", a count like "2", or a list like "0,1"
    num_nodes: int = 1
    strategy: str = one_of(*STRATEGIES)
    # fsdp: sharded (one file per rank) | full (one file)
    fsdp_checkpoint: str = one_of("sharded", "full")
    # deepspeed: ZeRO stage 1 | 2 (sharded parameters: use fsdp)
    deepspeed_stage: int = one_of(
        1, 2, default=2, hint="to shard the parameters too, use hardware.strategy fsdp"
    )
    # pretrain and finetune: optimizer steps between resume checkpoints (0 = none); resuming is exact, so
    # this changes how a killed run restarts, never what it computes
    checkpoint_every: int = 100
    num_workers: int = 0
    compile: bool = False
    progress_bar: bool = True
    peak_tflops: float | None = None  # one device's peak, for MFU; None = known GPUs only
    data_executor: DataExecutorConfig = field(default_factory=DataExecutorConfig)

    def check(self) -> None:
        self.require(self.num_nodes >= 1, "num_nodes", "must be >= 1")
        self.require(
            _is_device_spec(self.devices),
            "devices",
            f"is {self.devices!r}; use auto, a count like 2 (-1: all), or indices like 0,1",
        )
        self.require(
            self.num_workers >= 0, "num_workers", "must be >= 0 (0 = load in the main process)"
        )
        self.require(
            self.peak_tflops is None or self.peak_tflops > 0, "peak_tflops", "must be > 0 or null"
        )
        self.require(self.checkpoint_every >= 0, "checkpoint_every", "must be >= 0 (0 = off)")


@dataclass
class Params(Section):
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

    def check(self) -> None:
        block = self.pretrain.model.block_size
        self.require(
            self.finetune.max_length <= block,
            "finetune.max_length",
            f"({self.finetune.max_length}) is longer than pretrain.model.block_size ({block}), "
            "the longest input the model has positions for; lower it or raise the block size",
        )
        if self.data.source == "local" and self.finetune.task != "none":
            self.require(
                bool(self.data.labeled_train_path),
                "data.labeled_train_path",
                "is not set; name the labeled CSV/TSV/JSONL file to fine-tune on "
                "(or set finetune.task: none to pretrain only)",
            )


# --------------------------------------------------------------------------- loading


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


def _shape_mismatch(schema: Any, loaded: Any, prefix: str) -> str | None:
    """The first key of ``loaded`` whose shape (section, list, value) is not the schema's, as a
    one-line message; ``None`` when the shapes agree.

    OmegaConf's merge errors for these (``Cannot merge DictConfig with ListConfig``,
    ``int is not a subclass of PretrainConfig``) carry no key, so the user would not know where
    to look; a section left with only comments under it loads as null and needs its own words.
    """
    if not isinstance(loaded, dict):
        return None
    for name, value in loaded.items():
        if not isinstance(name, str) or name not in schema:
            continue
        key = f"{prefix}{name}"
        node = schema._get_node(name)
        if OmegaConf.is_dict(node):
            allowed = ", ".join(str(k) for k in node)
            if value is None:
                return (
                    f"params.yaml: section '{key}' is empty (null); give it keys ({allowed}) "
                    "or delete the line"
                )
            if not isinstance(value, dict):
                return (
                    f"params.yaml: wrong type for '{key}': is {value!r}; must be a section "
                    f"with keys {allowed}"
                )
            found = _shape_mismatch(node, value, f"{key}.")
            if found:
                return found
        elif OmegaConf.is_list(node) and isinstance(value, dict):
            return f"params.yaml: wrong type for '{key}': is a mapping; must be a list like [a, b]"
    return None


def repo_root(start: str | os.PathLike[str] | None = None) -> Path:
    """The DVC/git root: ``DVC_ROOT`` when DVC runs us, else the nearest folder with dvc.yaml.

    Except in a queued or temp experiment (``dvc exp run --queue`` / ``--temp``): DVC runs its
    stages in a clone under ``<repo>/.dvc/tmp/exps/`` with ``DVC_ROOT`` naming the repo it was
    queued from: there a stage would read params.yaml without the experiment's ``-S`` values
    and write its outs into the user's workspace. The root is the clone (the stage's working
    folder), found from the current folder.
    """
    here = Path(start or os.getcwd()).resolve()
    env = os.environ.get("DVC_ROOT")
    if env and Path(env).resolve() / ".dvc" / "tmp" / "exps" not in here.parents:
        return Path(env).resolve()
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
        raise ConfigError(
            f"{path}: not found; run from the project root (the folder with dvc.yaml and params.yaml)"
        )
    schema = OmegaConf.structured(Params)
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml syntax
        if "Invalid loaded object type" in str(exc):  # valid YAML, but a scalar, not a mapping
            raise ConfigError(
                f"{path}: must be a mapping of sections (data, clean, tokenize, ...)"
            ) from None
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
        found = _shape_mismatch(schema, OmegaConf.to_container(loaded), "")
        raise ConfigError(found or _one_line(exc)) from None
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
