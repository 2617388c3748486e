"""SFT data: prompt-loss masking, overflow, packing equal to alone, references grouped by prompt."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from lmops.config import LmopsError, ModelConfig, TokenizeConfig
from lmops.data.sft import (
    IGNORE_INDEX,
    SFTCounts,
    SFTExample,
    build_example,
    collate_packed,
    collate_padded,
    encode_examples,
    encode_prompt,
    group_references,
    pack,
    split_by_prompt,
)
from lmops.data.tokenizer import special_ids, train_tokenizer
from lmops.models.gpt import GPT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEMPLATE = "Q:{prompt}\nA:"
EOS, PAD = 0, 1  # the char tokenizer's first two ids: its special tokens


@pytest.fixture(scope="module")
def tokenizer():
    cfg = TokenizeConfig(type="char")
    tok = train_tokenizer(["abcdefghijklmnopqrstuvwxyz QA:\n{}"], cfg)
    assert special_ids(tok, cfg) == (EOS, PAD)
    return tok


def text(tokenizer, ids: list[int]) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


# ---------------------------------------------------------------- encoding


def test_prompt_positions_are_masked_and_response_and_eos_are_targets(tokenizer) -> None:
    [ex], counts = encode_examples(
        tokenizer, [("ab", "cd")], eos_id=EOS, max_length=32, template=TEMPLATE
    )
    assert counts == SFTCounts(kept=1, truncated=0, dropped=0)
    assert text(tokenizer, ex.input_ids) == "Q:ab\nA:cd"  # template applied, final EOS not input
    c, d = tokenizer.encode("cd").ids
    # context "Q:ab\nA:" is 7 tokens: targets start where its last token predicts "c"
    assert ex.labels == [IGNORE_INDEX] * 6 + [c, d, EOS]
    assert len(ex.labels) == len(ex.input_ids)
    # shifted for the GPT: labels[t] is the token that follows input_ids[t]
    seq = [*ex.input_ids, EOS]
    assert all(lab in (IGNORE_INDEX, seq[t + 1]) for t, lab in enumerate(ex.labels))
    assert encode_prompt(tokenizer, "ab", TEMPLATE) == ex.input_ids[:7]


def test_default_template_is_the_bare_prompt(tokenizer) -> None:
    [ex], _ = encode_examples(tokenizer, [("ab", "c")], eos_id=EOS, max_length=8)
    assert text(tokenizer, ex.input_ids) == "abc"
    assert ex.labels == [IGNORE_INDEX, tokenizer.encode("c").ids[0], EOS]


def test_truncation_cuts_the_left_of_the_prompt_and_keeps_the_response(tokenizer) -> None:
    # template 5 tokens + response 3 = 8 fixed; max_length 11 leaves 3 prompt tokens
    [ex], counts = encode_examples(
        tokenizer, [("abcdefgh", "xyz")], eos_id=EOS, max_length=11, template=TEMPLATE
    )
    assert text(tokenizer, ex.input_ids) == "Q:fgh\nA:xyz"
    assert ex.truncated and len(ex) == 11
    assert [t for t in ex.labels if t != IGNORE_INDEX] == [*tokenizer.encode("xyz").ids, EOS]
    assert counts == SFTCounts(kept=1, truncated=1, dropped=0)


def test_overflow_drop_and_unfittable_responses_are_counted(tokenizer) -> None:
    rows = [("ab", "cd"), ("abcdefgh", "xyz"), ("a", "b"), ("ab", "abcdefghijk")]
    # fits / too long by its prompt / fits / response alone too long (no prompt token fits)
    truncated, t_counts = encode_examples(
        tokenizer, rows, eos_id=EOS, max_length=11, template=TEMPLATE
    )
    assert t_counts.as_dict() == {"kept": 3, "truncated": 1, "dropped": 1}
    assert [text(tokenizer, e.input_ids) for e in truncated] == [
        "Q:ab\nA:cd",
        "Q:fgh\nA:xyz",
        "Q:a\nA:b",
    ]
    dropped, d_counts = encode_examples(
        tokenizer, rows, eos_id=EOS, max_length=11, template=TEMPLATE, overflow="drop"
    )
    assert d_counts == SFTCounts(kept=2, truncated=0, dropped=2)
    assert [text(tokenizer, e.input_ids) for e in dropped] == ["Q:ab\nA:cd", "Q:a\nA:b"]


def test_bad_template_and_overflow_are_refused(tokenizer) -> None:
    with pytest.raises(LmopsError, match="exactly once"):
        encode_examples(tokenizer, [("a", "b")], eos_id=EOS, max_length=8, template="no field")
    with pytest.raises(LmopsError, match="overflow"):
        build_example([2], [3], eos_id=EOS, max_length=8, overflow="wrap")
    # braces besides {prompt} are plain text
    [ex], _ = encode_examples(
        tokenizer, [("a", "b")], eos_id=EOS, max_length=8, template="{}{prompt}"
    )
    assert text(tokenizer, ex.input_ids) == "{}ab"


def test_an_example_with_nothing_to_predict_is_dropped() -> None:
    assert build_example([], [], eos_id=EOS, max_length=4) is None
    only_response = build_example([], [5, 6], eos_id=EOS, max_length=4)
    assert only_response == SFTExample([5, 6], [6, EOS])  # the first token has no predictor


# ---------------------------------------------------------------- packing


def random_examples(n: int, seed: int, max_len: int = 14) -> list[SFTExample]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = [rng.randrange(2, 64) for _ in range(rng.randint(1, 8))]
        response = [rng.randrange(2, 64) for _ in range(rng.randint(0, 5))]
        out.append(build_example(prompt, response, eos_id=EOS, max_length=max_len))
    return out


def test_pack_keeps_examples_whole_positions_restart_and_pads_a_segment_of_its_own() -> None:
    examples = [SFTExample([2] * n, [IGNORE_INDEX] * (n - 1) + [EOS]) for n in (5, 4, 6, 3, 9)]
    rows = pack(examples, 10, pad_id=PAD)
    assert [r.segment_ids for r in rows] == [
        [0] * 5 + [1] * 4 + [2],
        [0] * 6 + [1] * 3 + [2],
        [0] * 9 + [1],
    ]
    assert rows[0].position_ids == [0, 1, 2, 3, 4, 0, 1, 2, 3, 0]
    assert rows[0].input_ids[-1] == PAD and rows[0].labels[-1] == IGNORE_INDEX
    with pytest.raises(LmopsError, match="does not fit"):
        pack([SFTExample([2] * 11, [EOS] * 11)], 10, pad_id=PAD)


def test_pack_round_trips_every_example_in_order() -> None:
    examples = random_examples(40, seed=3)
    rows = pack(examples, 32, pad_id=PAD)
    recovered = []
    for row in rows:
        assert len(row.input_ids) == len(row.labels) == len(row.position_ids) == 32
        for s in sorted(set(row.segment_ids)):
            at = [i for i, g in enumerate(row.segment_ids) if g == s]
            assert at == list(range(at[0], at[-1] + 1))  # contiguous
            assert [row.position_ids[i] for i in at] == list(range(len(at)))
            recovered.append(
                SFTExample([row.input_ids[i] for i in at], [row.labels[i] for i in at])
            )
    real = [e for e in recovered if any(t != PAD for t in e.input_ids)]
    assert real == examples
    assert len(rows) < len(examples) / 2  # several examples per row


@pytest.fixture(params=["learned", "rope"])
def model(request) -> GPT:
    torch.manual_seed(0)
    cfg = ModelConfig(
        n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=64, pos_embedding=request.param
    )
    return GPT(cfg).eval()


def forward_packed(model: GPT, batch: dict[str, torch.Tensor], *, targets: bool = False):
    """``(logits, loss)`` of collated packed rows, their segment and position ids passed on."""
    with torch.no_grad():
        return model(
            batch["input_ids"],
            batch["labels"] if targets else None,
            position_ids=batch["position_ids"],
            segment_ids=batch["segment_ids"],
        )


def example_losses_packed(model: GPT, rows, *, segments: bool = True) -> list[torch.Tensor]:
    """Per example: mean cross-entropy over its own target positions of the packed rows
    (``segments=False``: the naive packing, one causal sequence per row)."""
    batch = collate_packed(rows)
    if segments:
        logits, _ = forward_packed(model, batch)
    else:
        with torch.no_grad():
            logits, _ = model(batch["input_ids"])
    losses = []
    for b, row in enumerate(rows):
        for s in range(max(row.segment_ids) + 1):
            at = batch["segment_ids"][b] == s
            labels = batch["labels"][b, at]
            if (labels != IGNORE_INDEX).any():  # the padding segment has no targets
                losses.append(F.cross_entropy(logits[b, at], labels, ignore_index=IGNORE_INDEX))
    return losses


def test_packed_loss_of_each_example_equals_its_loss_alone(model: GPT) -> None:
    """For both position encodings (the fixture's params), in eval mode."""
    examples = random_examples(12, seed=1)
    rows = pack(examples, model.config.block_size, pad_id=PAD)
    assert any(max(r.segment_ids) >= 2 for r in rows)  # some row holds several examples
    packed = example_losses_packed(model, rows)
    with torch.no_grad():
        alone = [model(torch.tensor([e.input_ids]), torch.tensor([e.labels]))[1] for e in examples]
    assert len(packed) == len(alone)
    for p, a in zip(packed, alone, strict=True):
        torch.testing.assert_close(p, a, rtol=0, atol=1e-5)

    # the same target tokens, so the batch loss of packed rows equals that of padded rows
    padded = collate_padded(examples, pad_id=PAD)
    with torch.no_grad():
        _, padded_loss = model(padded["input_ids"], padded["labels"])
    _, packed_loss = forward_packed(model, collate_packed(rows), targets=True)
    torch.testing.assert_close(packed_loss, padded_loss, rtol=0, atol=1e-5)

    # naive packing (no segments, positions running on) lets examples see each other
    naive = example_losses_packed(model, rows, segments=False)
    assert max(abs(n - a).item() for n, a in zip(naive, alone, strict=True)) > 1e-3


def test_no_attention_across_examples_of_a_row(model: GPT) -> None:
    first = build_example([3, 4, 5, 6], [7, 8], eos_id=EOS, max_length=32)
    second = build_example([9, 10, 11], [12, 13, 14], eos_id=EOS, max_length=32)
    changed = SFTExample([20, 21, 22, 23, 24, 25], first.labels)

    def logits_of(a: SFTExample, b: SFTExample) -> torch.Tensor:
        batch = collate_packed(pack([a, b], 32, pad_id=PAD))
        assert batch["input_ids"].shape[0] == 1  # both in one row
        return forward_packed(model, batch)[0][0]

    base, other = logits_of(first, second), logits_of(changed, second)
    n = len(first)
    assert not torch.allclose(base[:n], other[:n])  # the first example did change
    assert torch.equal(base[n : n + len(second)], other[n : n + len(second)])


def test_collate_padded_right_pads_with_ignored_labels() -> None:
    examples = [SFTExample([5, 6, 7], [-100, 7, EOS]), SFTExample([8], [EOS])]
    batch = collate_padded(examples, pad_id=PAD)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, PAD, PAD]]
    assert batch["labels"].tolist() == [[-100, 7, EOS], [EOS, -100, -100]]
    assert collate_padded(examples, pad_id=PAD, length=5)["input_ids"].shape == (2, 5)


# ---------------------------------------------------------------- references and splits


def test_references_are_grouped_by_identical_prompt_in_first_seen_order() -> None:
    rows = [("p2", "a"), ("p1", "b"), ("p2", "c"), ("p1 ", "d"), ("p1", "e")]
    assert group_references(rows) == {"p2": ["a", "c"], "p1": ["b", "e"], "p1 ": ["d"]}
    assert list(group_references(rows)) == ["p2", "p1", "p1 "]


def test_split_by_prompt_keeps_each_prompts_rows_together() -> None:
    rows = [(f"p{i % 20}", f"r{i}") for i in range(60)]  # 20 prompts, 3 references each
    train, val, test = split_by_prompt(rows, val_fraction=0.1, test_fraction=0.2, seed=7)
    splits = [{p for p, _ in s} for s in (train, val, test)]
    assert [len(s) for s in splits] == [14, 2, 4]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert sorted(train + val + test) == sorted(rows)
    assert all(len(group_references(s)[p]) == 3 for s in (train, val, test) for p in {*dict(s)})
    assert train == [r for r in rows if r[0] in splits[0]]  # input order kept
    assert split_by_prompt(rows, val_fraction=0.1, test_fraction=0.2, seed=7) == (train, val, test)
    assert split_by_prompt(rows, val_fraction=0.1, test_fraction=0.2, seed=8) != (train, val, test)
    with pytest.raises(LmopsError, match="distinct prompts"):
        split_by_prompt(rows[:2], val_fraction=0.1, test_fraction=0.1, seed=0)
    with pytest.raises(LmopsError, match="test_fraction"):
        split_by_prompt(rows, val_fraction=0.1, test_fraction=1.0, seed=0)
