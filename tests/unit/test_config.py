"""params.yaml schema: defaults load, and each kind of mistake gives one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmops.config import (
    ConfigError,
    FinetuneConfig,
    ModelConfig,
    Params,
    load_params,
    to_flat_dict,
)

REPO = Path(__file__).resolve().parents[2]


def _load(tmp_path: Path, text: str, overrides: list[str] | None = None) -> Params:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return load_params(path, overrides)


def test_repo_params_match_schema_defaults() -> None:
    # The shipped params.yaml spells out the schema's defaults, so docs and code agree.
    assert load_params(REPO / "params.yaml") == Params()


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == Params()


def test_overrides_apply(tmp_path: Path) -> None:
    p = _load(tmp_path, "pretrain:\n  lr: 0.01\n", ["pretrain.model.n_layer=2"])
    assert p.pretrain.lr == 0.01 and p.pretrain.model.n_layer == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pretrain:\n  model:\n    n_layr: 3\n", "unknown key 'pretrain.model.n_layr'"),
        ("bogus: 1\n", "unknown key 'bogus'"),
        ("pretrain:\n  max_steps: lots\n", "wrong type for 'pretrain.max_steps'"),
        ("pretrain:\n  model:\n    n_embd: 130\n", "must be divisible by pretrain.model.n_head"),
        ("tokenize:\n  type: wordpiece\n", "allowed: bpe, char"),
        ("clean:\n  val_fraction: 0.9\n", "clean.val_fraction"),
        ("pretrain:\n  micro_batch_size: 5\n", "pretrain.micro_batch_size"),
        ("data:\n  source: local\n", "data.corpus_paths"),
        ("finetune:\n  min_lr: 1.0\n", "finetune.min_lr"),
        ("- a\n- b\n", "must be a mapping"),
        ("data:\n  txt_split: sentences\n", "data.txt_split is 'sentences'; allowed: paragraphs"),
        ("data:\n  txt_block_chars: 0\n", "data.txt_block_chars must be >= 1"),
        ("data:\n  corpus_header: maybe\n", "wrong type for 'data.corpus_header'"),
        ("data:\n  labeled_header: maybe\n", "wrong type for 'data.labeled_header'"),
        (
            "data:\n  source: local\n  corpus_paths: [a.tsv]\n  corpus_header: false\n",
            "data.corpus_text_column is 'text', but data.corpus_header is false",
        ),
        ("clean:\n  language: klingon\n", "clean.language is 'klingon'; allowed: en, pt, es, de"),
        ("clean:\n  language: zh-CN\n", "clean.language is 'zh-CN'; allowed: en, pt, es, de"),
        ("clean:\n  language: zh\n  c4:\n    enabled: true\n", "clean.c4.enabled is true"),
        (
            "clean:\n  gopher_quality:\n    min_stop_words: many\n",
            "clean.gopher_quality.min_stop_words is 'many'; must be a number",
        ),
        (
            "clean:\n  gopher_quality:\n    max_avg_word_length: -1\n",
            "clean.gopher_quality.max_avg_word_length is -1",
        ),
        (
            "clean:\n  gopher_quality:\n    stop_words: the\n",
            "clean.gopher_quality.stop_words is 'the'; must be a list of words",
        ),
        (
            "clean:\n  fineweb_quality:\n    line_punct_thr: 1.5\n",
            "clean.fineweb_quality.line_punct_thr is 1.5; must be a number in [0, 1]",
        ),
        (
            "clean:\n  fineweb_quality:\n    line_punct_thr: -0.1\n",
            "clean.fineweb_quality.line_punct_thr is -0.1",
        ),
        (
            "clean:\n  fineweb_quality:\n    line_punct_thr: half\n",
            "clean.fineweb_quality.line_punct_thr is 'half'; must be a number in [0, 1]",
        ),
        (
            "clean:\n  fineweb_quality:\n    line_punct_thr: true\n",
            "clean.fineweb_quality.line_punct_thr is True",
        ),
    ],
)
def test_bad_params_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message


def test_unknown_key_lists_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="allowed keys here: n_layer, n_head"):
        _load(tmp_path, "pretrain:\n  model:\n    layers: 3\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_flat_dict_uses_dotted_names() -> None:
    flat = to_flat_dict(Params().pretrain, "pretrain")
    assert flat["pretrain.model.n_layer"] == 4
    assert "pretrain.lr" in flat and not any(isinstance(v, dict) for v in flat.values())


def test_allowed_values_are_named_from_the_field_declaration(tmp_path: Path) -> None:
    # one declaration (one_of) gives the default, the check and the message
    assert Params().hardware.strategy == "auto" and Params().hardware.deepspeed_stage == 2
    with pytest.raises(ConfigError, match=r"hardware.strategy is 'zero'; allowed: auto, ddp"):
        _load(tmp_path, "hardware:\n  strategy: zero\n")
    with pytest.raises(ConfigError, match=r"deepspeed_stage is 3; allowed: 1, 2 \(to shard"):
        _load(tmp_path, "hardware:\n  deepspeed_stage: 3\n")


def test_sections_check_their_fields_when_built_directly() -> None:
    # the checks live in the dataclasses, so code that builds a section skips none of them
    with pytest.raises(ConfigError, match="pretrain.model.n_embd"):
        ModelConfig(n_embd=130, n_head=4)
    with pytest.raises(ConfigError, match="finetune.min_lr must be between 0 and lr"):
        FinetuneConfig(lr=1e-4, min_lr=1e-3)


def test_model_vocab_comes_from_the_tokenizer_unless_set(tmp_path: Path) -> None:
    shape = _load(tmp_path, "").pretrain.model
    assert shape.vocab_size is None
    assert shape.with_vocab(2000, 2048).vocab_size == 2048
    wide = _load(tmp_path, "pretrain:\n  model:\n    vocab_size: 4096\n").pretrain.model
    assert wide.with_vocab(2000, 2048).vocab_size == 4096
    with pytest.raises(ConfigError, match="pretrain.model.vocab_size .* smaller than"):
        ModelConfig(vocab_size=1000).with_vocab(2000, 2048)


def test_labeled_set_is_optional_only_without_fine_tuning(tmp_path: Path) -> None:
    local = "data:\n  source: local\n  corpus_paths: [x.txt]\n"
    with pytest.raises(ConfigError, match="data.labeled_train_path is not set"):
        _load(tmp_path, local)
    assert _load(tmp_path, local + "finetune:\n  task: none\n").finetune.task == "none"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        # each of these used to pass validation and end in a traceback or a silent surprise
        ("pretrain.val_batches=0", "pretrain.val_batches"),
        ("pretrain.max_steps=100000000000000000000", "pretrain.max_steps"),
        ("pretrain.beta1=1.5", "pretrain.beta1"),
        ("hardware.num_workers=-1", "hardware.num_workers"),
        ("data.sample.n_documents=-5", "data.sample.n_documents"),
        ("data.sample.n_labeled_test=0", "data.sample.n_labeled_test"),
        ("tracking.experiment=''", "tracking.experiment"),
        ("finetune.max_length=500", "finetune.max_length"),
        ("tokenize.vocab_size=32", "tokenize.vocab_size"),
        ("pretrain.lr=0", "pretrain.lr"),
        ("finetune.grad_clip=-1", "finetune.grad_clip"),
        ("pretrain.weight_decay=-0.1", "pretrain.weight_decay"),
        ("tokenize.special_tokens=[a,a]", "tokenize.special_tokens"),
        ("export.max_new_tokens=-1", "export.max_new_tokens"),
        ("evaluate.ppl_max_batches=0", "evaluate.ppl_max_batches"),
    ],
)
def test_values_that_used_to_fail_late_fail_at_load(
    tmp_path: Path, override: str, key: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "", [override])
    message = str(err.value)
    assert message.startswith(f"params.yaml: {key} ") and "\n" not in message


def test_warmup_longer_than_training_is_said(tmp_path: Path, caplog) -> None:
    with caplog.at_level("WARNING", logger="lmops.config"):
        _load(tmp_path, "", ["finetune.max_steps=10", "finetune.warmup_steps=30"])
    assert "finetune.warmup_steps (30) >= max_steps (10)" in caplog.text
