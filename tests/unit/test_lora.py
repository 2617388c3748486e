"""LoRA: exact start, only adapters train, merge equals the adapted model, adapter save/load."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from lmops.config import LmopsError, ModelConfig
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier
from lmops.models.lora import (
    LORA_TARGETS,
    LoRALinear,
    apply_lora,
    load_lora_state_dict,
    lora_state_dict,
    merge_lora,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CONFIG = ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, vocab_size=64)
RANK = 4


@pytest.fixture
def base() -> GPT:
    torch.manual_seed(0)
    return GPT(CONFIG).eval()


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, CONFIG.vocab_size, (3, 12), generator=torch.Generator().manual_seed(1))


def adapted(model: nn.Module, dropout: float = 0.0, trainable: tuple[str, ...] = ()) -> list[str]:
    return apply_lora(
        model, LORA_TARGETS, rank=RANK, alpha=8.0, dropout=dropout, trainable=trainable
    )


def train_steps(model: GPT, tokens: torch.Tensor, steps: int = 3) -> torch.optim.Optimizer:
    """A few AdamW steps on whatever still requires grad; returns the optimizer."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        _, loss = model(tokens[:, :-1], tokens[:, 1:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return opt


def logits(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tokens)[0]


def test_adapted_model_starts_exactly_at_the_base_model(base: GPT, tokens: torch.Tensor) -> None:
    expected = logits(base, tokens)
    replaced = adapted(base)
    assert len(replaced) == 4 * CONFIG.n_layer
    assert all(isinstance(base.get_submodule(n), LoRALinear) for n in replaced)
    assert torch.equal(logits(base, tokens), expected)


def test_training_moves_only_the_adapters(base: GPT, tokens: torch.Tensor) -> None:
    before = {k: v.clone() for k, v in base.state_dict().items()}
    replaced = adapted(base)
    opt = train_steps(base, tokens)
    held = [p for group in opt.param_groups for p in group["params"]]
    assert len(held) == 2 * len(replaced)
    adapter = [p for n, p in base.named_parameters() if n.endswith((".lora_a", ".lora_b"))]
    assert {id(p) for p in held} == {id(p) for p in adapter}
    after = base.state_dict()
    for key, value in after.items():
        if key.endswith((".lora_a", ".lora_b")):
            continue
        # the base layer's weights moved under ".base", everything else kept its key
        original = before[key.replace(".base.", ".")]
        assert torch.equal(value, original), key
    assert all(after[f"{n}.lora_b"].abs().sum() > 0 for n in replaced)
    # the tied embedding / lm_head is frozen under both of its names
    assert not base.lm_head.weight.requires_grad
    assert not base.transformer.wte.weight.requires_grad


def test_trainable_prefixes_stay_trainable() -> None:
    torch.manual_seed(0)
    model = SequenceClassifier(GPT(CONFIG), num_labels=3)
    head_before = model.head.weight.detach().clone()
    replaced = adapted(model, trainable=("head",))
    assert replaced[0].startswith("backbone.transformer.h.0.")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"head.weight", "head.bias"} <= trainable
    assert len(trainable) == 2 * len(replaced) + 2
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, CONFIG.vocab_size, (4, 8))
    loss = nn.functional.cross_entropy(model(ids, torch.full((4,), 8)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert not torch.equal(model.head.weight, head_before)
    with pytest.raises(LmopsError, match="'heads'"):
        adapted(SequenceClassifier(GPT(CONFIG), num_labels=3), trainable=("heads",))


def test_merged_model_equals_adapted_and_loads_as_a_plain_gpt(
    base: GPT, tokens: torch.Tensor
) -> None:
    plain_keys = set(base.state_dict())
    adapted(base)
    train_steps(base, tokens)
    expected = logits(base, tokens)
    assert not torch.allclose(expected, logits(GPT(CONFIG), tokens))  # sanity: it did train

    merged = merge_lora(base)
    assert not any(isinstance(m, LoRALinear) for m in merged.modules())
    torch.testing.assert_close(logits(merged, tokens), expected, atol=1e-5, rtol=1e-5)
    assert set(merged.state_dict()) == plain_keys
    fresh = GPT(CONFIG)
    fresh.load_state_dict(merged.state_dict(), strict=True)
    torch.testing.assert_close(logits(fresh, tokens), expected, atol=1e-5, rtol=1e-5)


def test_adapter_alone_saves_small_and_loads_back(
    base: GPT, tokens: torch.Tensor, tmp_path: Path
) -> None:
    pristine = copy.deepcopy(base)
    adapted(base)
    train_steps(base, tokens)
    expected = logits(base, tokens)

    state = lora_state_dict(base)
    assert state and all(k.endswith((".lora_a", ".lora_b")) for k in state)
    # per block: c_attn C->3C, attn.c_proj C->C, c_fc C->4C, mlp.c_proj 4C->C
    C = CONFIG.n_embd
    per_block = RANK * ((C + 3 * C) + (C + C) + (C + 4 * C) + (4 * C + C))
    assert sum(t.numel() for t in state.values()) == CONFIG.n_layer * per_block
    save_file(state, str(tmp_path / "adapter.safetensors"))

    adapted(pristine)
    assert not torch.equal(logits(pristine, tokens), expected)
    load_lora_state_dict(pristine, load_file(str(tmp_path / "adapter.safetensors")))
    assert torch.equal(logits(pristine, tokens), expected)


def test_loading_an_adapter_that_does_not_fit_fails(base: GPT) -> None:
    with pytest.raises(LmopsError, match="apply_lora"):
        load_lora_state_dict(base, {})
    adapted(base)
    state = dict(lora_state_dict(base))
    key = next(iter(state))
    with pytest.raises(LmopsError, match="1 missing"):
        load_lora_state_dict(base, {k: v for k, v in state.items() if k != key})
    with pytest.raises(LmopsError, match="1 unexpected"):
        load_lora_state_dict(base, {**state, "lm_head.lora_a": state[key]})
    with pytest.raises(LmopsError, match="shape"):
        load_lora_state_dict(base, {**state, key: torch.zeros(RANK + 1, 2)})


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        (["lm_head"], "unknown LoRA target(s) 'lm_head'; allowed: attn.c_attn"),
        (["c_attn"], "unknown LoRA target(s) 'c_attn'"),
        ([], "no LoRA targets; allowed"),
    ],
)
def test_bad_targets_fail_with_one_line(base: GPT, targets: list[str], expected: str) -> None:
    with pytest.raises(LmopsError) as err:
        apply_lora(base, targets, rank=RANK, alpha=8.0, dropout=0.0)
    assert expected in str(err.value) and "\n" not in str(err.value)
    assert not any(isinstance(m, LoRALinear) for m in base.modules())


def test_target_matching_nothing_fails_and_adapting_twice_fails(base: GPT) -> None:
    head = SequenceClassifier(GPT(CONFIG), num_labels=2).head
    with pytest.raises(LmopsError, match="'mlp.c_fc' match no nn.Linear") as err:
        apply_lora(nn.Sequential(head), ["mlp.c_fc"], rank=RANK, alpha=8.0)
    assert "\n" not in str(err.value)
    adapted(base)
    with pytest.raises(LmopsError, match="already has LoRA"):
        adapted(base)


def test_adapter_dropout_only_in_train_mode() -> None:
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), rank=RANK, alpha=8.0, dropout=0.5)
    nn.init.normal_(layer.lora_b)  # B = 0 would hide any dropout
    x = torch.randn(5, 16)
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    layer.eval()
    no_dropout = layer.base(x) + x @ layer.lora_a.T @ layer.lora_b.T * layer.scaling
    torch.testing.assert_close(layer(x), no_dropout)
    assert torch.equal(layer(x), layer(x))


def test_merge_folds_the_update_into_the_weight() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(16, 8)
    weight = linear.weight.detach().clone()
    layer = LoRALinear(linear, rank=RANK, alpha=8.0)
    nn.init.normal_(layer.lora_b)
    x = torch.randn(5, 16)
    expected = layer(x)
    merged = layer.merge()
    assert merged is linear and layer.merged
    torch.testing.assert_close(merged.weight, weight + 2.0 * layer.lora_b @ layer.lora_a)
    torch.testing.assert_close(merged(x), expected)
    torch.testing.assert_close(layer(x), expected)  # the merged wrapper does not add it twice
    layer.merge()  # idempotent
    torch.testing.assert_close(merged(x), expected)
