"""Model bundles: save → load gives the same model; broken bundles fail with one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lmops.config import LmopsError, ModelConfig
from lmops.export.bundle import (
    answer_greedy,
    classify,
    encode_padded,
    find_bundle,
    generate_text,
    load_bundle,
    save_classifier_bundle,
    save_lm_bundle,
)
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier

SPECIALS = ["<|endoftext|>", "<|pad|>"]
LABELS = ["negative", "positive"]
TEXT = [
    "the cat sat on the mat and the dog ran to the park.",
    "a good film is not a bad film, but a bad film is never good.",
    "once upon a time there was a small robot who liked tea.",
] * 20


# ----------------------------------------------------------------- helpers (reused by other tests)


def tiny_tokenizer(path: Path) -> tuple[Path, int, int]:
    """A byte-level BPE tokenizer saved at ``path``; returns (path, eos_id, pad_id)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT, trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path, tok.token_to_id(SPECIALS[0]), tok.token_to_id(SPECIALS[1])


def tiny_gpt(seed: int = 0, block_size: int = 32) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(vocab_size=320, block_size=block_size, n_layer=1, n_head=2, n_embd=16))


def make_lm_bundle(root: Path, seed: int = 0) -> Path:
    tok, eos, pad = tiny_tokenizer(root / "tok" / "tokenizer.json")
    return save_lm_bundle(root / "lm", tiny_gpt(seed), tok, eos, pad)


def make_classifier_bundle(root: Path, seed: int = 0, max_length: int = 12) -> Path:
    tok, eos, pad = tiny_tokenizer(root / "tok" / "tokenizer.json")
    model = SequenceClassifier(tiny_gpt(seed), num_labels=len(LABELS), dropout=0.1)
    with torch.no_grad():  # a head that is not all zeros, so predictions depend on the input
        model.head.weight.normal_(0.0, 1.0)
    return save_classifier_bundle(root / "clf", model, tok, LABELS, max_length, eos, pad)


# ----------------------------------------------------------------- tests


def test_lm_bundle_round_trip_same_logits_and_tied_weights(tmp_path: Path) -> None:
    tok, eos, pad = tiny_tokenizer(tmp_path / "tokenizer.json")
    model = tiny_gpt(1).eval()
    out = save_lm_bundle(tmp_path / "b", model, tok, eos, pad)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]
    config = json.loads((out / "config.json").read_text())
    assert config == {"kind": "lm", "gpt": model.config.to_dict(), "eos_id": eos, "pad_id": pad}

    b = load_bundle(out)
    assert b.kind == "lm" and not b.model.training
    assert b.model.lm_head.weight.data_ptr() == b.model.transformer.wte.weight.data_ptr()
    idx = torch.randint(0, 300, (2, 10))
    assert torch.equal(b.model(idx)[0], model(idx)[0])
    assert b.tokenizer.encode("the cat").ids == Tokenizer.from_file(str(tok)).encode("the cat").ids


def test_classifier_bundle_round_trip(tmp_path: Path) -> None:
    out = make_classifier_bundle(tmp_path)
    config = json.loads((out / "config.json").read_text())
    assert config["kind"] == "classifier" and config["labels"] == LABELS
    assert config["max_length"] == 12
    b = load_bundle(out)
    assert b.labels == LABELS and not b.model.training
    # weights survived: the loaded head is the random one we saved, not a fresh init
    from safetensors.torch import load_file

    saved = load_file(str(out / "model.safetensors"))
    assert torch.equal(b.model.head.weight, saved["head.weight"])
    assert any(k.startswith("backbone.") for k in saved)


def test_classifier_label_count_must_match_head(tmp_path: Path) -> None:
    tok, eos, pad = tiny_tokenizer(tmp_path / "tokenizer.json")
    model = SequenceClassifier(tiny_gpt(), num_labels=2)
    with pytest.raises(LmopsError, match="3 label names"):
        save_classifier_bundle(tmp_path / "b", model, tok, ["a", "b", "c"], 8, eos, pad)


def test_missing_file_and_mismatched_weights_fail_clearly(tmp_path: Path) -> None:
    out = make_lm_bundle(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "tokenizer.json").unlink()
    with pytest.raises(LmopsError, match="missing tokenizer.json"):
        load_bundle(broken)

    config = json.loads((out / "config.json").read_text())
    config["gpt"]["n_embd"] = 32
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(LmopsError, match="does not match config.json"):
        load_bundle(out)


def test_find_bundle_inside_a_pyfunc_like_folder(tmp_path: Path) -> None:
    out = make_lm_bundle(tmp_path)
    nested = tmp_path / "pyfunc" / "artifacts" / "bundle"
    shutil.copytree(out, nested)
    assert find_bundle(tmp_path / "pyfunc") == nested
    assert find_bundle(out) == out
    with pytest.raises(LmopsError, match="no model bundle"):
        find_bundle(tmp_path / "tok")


def test_encode_padded_truncates_to_first_tokens_and_right_pads(tmp_path: Path) -> None:
    tok_path, eos, pad = tiny_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_path))
    long_text, short_text = TEXT[1], "the cat"
    full = tok.encode(long_text).ids
    short = tok.encode(short_text).ids
    assert len(full) > 6 > len(short)
    ids, lengths = encode_padded(tok, [long_text, short_text, ""], 6, pad)
    assert ids.shape == (3, 6)
    assert ids[0].tolist() == full[:6]
    assert ids[1, : len(short)].tolist() == short
    assert ids[1, len(short) :].tolist() == [pad] * (6 - len(short))
    assert lengths.tolist() == [6, len(short), 1]
    assert ids[2, 0].item() == pad  # an empty text still has a last position to pool


def test_encode_padded_agrees_with_training_batches(tmp_path: Path) -> None:
    datamodules = pytest.importorskip("lmops.data.datamodules")
    tok_path, _, pad = tiny_tokenizer(tmp_path / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_path))
    texts = [TEXT[1], "the cat", "", TEXT[0]]
    ids, lengths = encode_padded(tok, texts, 8, pad)
    ref = datamodules.encode_labeled(tok, texts, 8, pad)
    assert torch.equal(ids, ref["input_ids"]) and torch.equal(lengths, ref["lengths"])


def test_classify_matches_a_manual_forward(tmp_path: Path) -> None:
    b = load_bundle(make_classifier_bundle(tmp_path))
    texts = [TEXT[0], "not good", TEXT[2], "a"]
    answers = classify(b, texts, batch_size=3)  # two batches
    ids, lengths = encode_padded(b.tokenizer, texts, 12, b.pad_id)
    probs = torch.softmax(b.model(ids, lengths), dim=-1)
    assert [a["label"] for a in answers] == [LABELS[i] for i in probs.argmax(-1).tolist()]
    for a, p in zip(answers, probs, strict=True):
        assert a["probability"] == pytest.approx(float(p.max()), abs=1e-5)
        assert 0.5 <= a["probability"] <= 1.0
    with pytest.raises(LmopsError, match="needs an LM"):
        generate_text(b, "hi")


def test_generate_text_greedy_seeded_and_eos(tmp_path: Path) -> None:
    b = load_bundle(make_lm_bundle(tmp_path))
    head, tail = generate_text(b, "the cat", max_new_tokens=5, temperature=0)
    assert head == "the cat"
    assert generate_text(b, "the cat", max_new_tokens=5, temperature=0) == (head, tail)
    # a greedy continuation is the argmax path of the model itself
    ids = b.tokenizer.encode("the cat").ids
    expected = b.model.generate(torch.tensor([ids]), 5, temperature=0, eos_id=b.eos_id)[0]
    new = expected[len(ids) :].tolist()
    new = new[: new.index(b.eos_id)] if b.eos_id in new else new
    assert tail == b.tokenizer.decode(ids + new)[len(head) :]

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate_text(b, "once", max_new_tokens=8, temperature=1.0, top_k=50, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    assert generate_text(b, "once", max_new_tokens=8, temperature=1.0, top_k=50, seed=7) == a

    # a model that always says end-of-text: nothing is generated, the prompt comes back
    always_eos = torch.nn.Linear(16, 320)
    with torch.no_grad():
        always_eos.weight.zero_()
        always_eos.bias.zero_()
        always_eos.bias[b.eos_id] = 10.0
    b.model.lm_head = always_eos
    _, tail = generate_text(b, "the", max_new_tokens=6, temperature=0)
    assert tail == ""
    with pytest.raises(LmopsError, match="classifier"):
        classify(b, ["x"])


@pytest.mark.parametrize("template", [None, "Q: {prompt}\nA:"])
def test_answer_greedy_batches_equal_one_prompt_at_a_time(tmp_path: Path, template) -> None:
    tok, eos, pad = tiny_tokenizer(tmp_path / "tok" / "tokenizer.json")
    path = save_lm_bundle(tmp_path / "lm", tiny_gpt(3), tok, eos, pad, prompt_template=template)
    b = load_bundle(path)
    prompts = ["the cat", "a dog", "the cat sat on the mat", "once", "the dog", "a cat"]
    alone = [generate_text(b, p, max_new_tokens=6, temperature=0)[1] for p in prompts]
    assert answer_greedy(b, prompts, max_new_tokens=6, batch_size=2) == alone
    if template is not None:  # the template is applied: its text opens the decoded prompt
        assert generate_text(b, "once", max_new_tokens=1, temperature=0)[0].startswith("Q: once")
