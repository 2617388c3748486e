"""GPT: shapes, loss, causality, init, tied weights, KV-cache generation, accounting, groups,
packed rows (block-diagonal attention, per-example positions)."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_model, save_model

from lmops.config import LmopsError, ModelConfig
from lmops.models.gpt import (
    GPT,
    ROPE_BASE,
    apply_rope,
    positions_from_segments,
    rope_angles,
    segment_mask,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_config(**overrides) -> ModelConfig:
    values = {"vocab_size": 64, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
    values.update(overrides)
    return ModelConfig(**values)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config()).eval()


def test_config_round_trip_and_unknown_keys() -> None:
    cfg = tiny_config(dropout=0.1, bias=True)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(LmopsError, match="unknown keys"):
        ModelConfig.from_dict({**cfg.to_dict(), "n_kv_head": 2})
    partial = cfg.to_dict()
    del partial["n_layer"]  # a default must not stand in for a shape the file lacks
    with pytest.raises(LmopsError, match="lacks \\['n_layer'\\]"):
        ModelConfig.from_dict(partial)
    with pytest.raises(LmopsError, match="divisible"):
        tiny_config(n_embd=30, n_head=4)


def test_model_needs_a_vocabulary() -> None:
    with pytest.raises(LmopsError, match="no vocab_size"):
        GPT(ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8))


def test_forward_shapes_and_initial_loss(model: GPT) -> None:
    idx = torch.randint(0, 64, (3, 16))
    targets = torch.randint(0, 64, (3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 64)
    # small init: the untrained model is close to uniform over the vocabulary
    assert abs(loss.item() - math.log(64)) < 0.2
    logits_only, no_loss = model(idx)
    assert no_loss is None
    torch.testing.assert_close(logits_only, logits)


def test_ignore_index_excludes_positions(model: GPT) -> None:
    idx = torch.randint(0, 64, (2, 8))
    targets = torch.randint(0, 64, (2, 8))
    masked = targets.clone()
    masked[:, :4] = -100
    logits, loss = model(idx, masked)
    expected = torch.nn.functional.cross_entropy(
        logits[:, 4:].reshape(-1, 64), targets[:, 4:].reshape(-1)
    )
    torch.testing.assert_close(loss, expected)


def test_attention_is_causal(model: GPT) -> None:
    idx = torch.randint(0, 64, (1, 12))
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 64
    a, _ = model(idx)
    b, _ = model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_too_long_input_is_a_clear_error(model: GPT) -> None:
    with pytest.raises(LmopsError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_weights_are_tied_and_survive_safetensors(model: GPT, tmp_path) -> None:
    assert model.transformer.wte.weight is model.lm_head.weight
    save_model(model, str(tmp_path / "model.safetensors"))
    torch.manual_seed(1)
    other = GPT(tiny_config()).eval()
    load_model(other, str(tmp_path / "model.safetensors"))
    assert other.transformer.wte.weight is other.lm_head.weight
    idx = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(other(idx)[0], model(idx)[0])


def test_gpt2_init_scales_residual_projections() -> None:
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=8, n_embd=64, n_head=4)
    m = GPT(cfg)
    residual_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    for block in m.transformer.h:
        for proj in (block.attn.c_proj.weight, block.mlp.c_proj.weight):
            assert proj.std().item() == pytest.approx(residual_std, rel=0.1)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.1)
    assert m.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.1)


def _reference_greedy(model: GPT, idx: torch.Tensor, n: int) -> torch.Tensor:
    """The textbook loop: full forward over the cropped context, argmax of the last position."""
    for _ in range(n):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat((idx, logits[:, -1].argmax(-1, keepdim=True)), dim=1)
    return idx


@pytest.mark.parametrize("prompt_len", [1, 5, 16, 21])
def test_cached_greedy_generation_equals_uncached(model: GPT, prompt_len: int) -> None:
    torch.manual_seed(prompt_len)
    prompt = torch.randint(0, 64, (2, prompt_len))
    # 20 new tokens: the context crosses block_size (16) for every prompt length
    cached = model.generate(prompt, 20, temperature=0.0)
    uncached = model.generate(prompt, 20, temperature=0.0, use_cache=False)
    reference = _reference_greedy(model, prompt, 20)
    assert cached.shape == (2, prompt_len + 20)
    assert torch.equal(cached[:, :prompt_len], prompt)
    assert torch.equal(cached, reference)
    assert torch.equal(uncached, reference)


def test_kv_cache_logits_match_full_forward(model: GPT) -> None:
    idx = torch.randint(0, 64, (2, 12))
    full, _ = model(idx)
    caches = model.new_kv_caches()
    with torch.no_grad():
        h = model._trunk(idx[:, :5], caches)  # prefill
        torch.testing.assert_close(model.lm_head(h), full[:, :5])
        h = model._trunk(idx[:, 5:6], caches)  # one token
        torch.testing.assert_close(model.lm_head(h), full[:, 5:6])
        h = model._trunk(idx[:, 6:12], caches)  # several tokens after a cached prefix
        torch.testing.assert_close(model.lm_head(h), full[:, 6:12])
    assert caches[0].length == 12


def test_top_k_one_sampling_is_greedy(model: GPT) -> None:
    prompt = torch.randint(0, 64, (2, 4))
    torch.manual_seed(0)
    sampled = model.generate(prompt, 8, temperature=0.7, top_k=1)
    assert torch.equal(sampled, model.generate(prompt, 8, temperature=0.0))


def test_sampling_is_seeded_and_stays_in_vocab(model: GPT) -> None:
    prompt = torch.randint(0, 64, (1, 3))
    torch.manual_seed(123)
    a = model.generate(prompt, 10, temperature=1.0, top_k=10)
    torch.manual_seed(123)
    b = model.generate(prompt, 10, temperature=1.0, top_k=10)
    assert torch.equal(a, b)
    assert int(a.min()) >= 0 and int(a.max()) < 64


def test_generation_stops_at_eos(model: GPT) -> None:
    prompt = torch.randint(0, 64, (1, 4))
    greedy = model.generate(prompt, 6, temperature=0.0)
    eos = int(greedy[0, 4])  # the first generated token: declare it end-of-text
    stopped = model.generate(prompt, 6, temperature=0.0, eos_id=eos)
    assert stopped.shape == (1, 5)
    assert torch.equal(stopped, greedy[:, :5])


def test_num_params_and_flops() -> None:
    cfg = tiny_config()
    m = GPT(cfg)
    V, T, L, C = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    per_layer = 12 * C * C + 2 * C  # qkv + proj + mlp (no bias) + two LayerNorm gains
    total = V * C + T * C + L * per_layer + C  # tied lm_head counted once, final LayerNorm
    assert m.num_params(non_embedding=False) == total
    assert m.num_params() == total - T * C
    assert m.flops_per_token() == 6 * (total - T * C) + 12 * L * C * T


@pytest.mark.parametrize("bias", [False, True])
def test_param_groups_cover_every_parameter_once(bias: bool) -> None:
    m = GPT(tiny_config(bias=bias))
    groups = m.configure_param_groups(weight_decay=0.1)
    seen = [id(p) for g in groups for p in g["params"]]
    assert len(seen) == len(set(seen))
    assert set(seen) == {id(p) for p in m.parameters()}
    decay = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    names = {id(p): n for n, p in m.named_parameters()}
    decayed_names = sorted(names[i] for i in decay)
    assert decayed_names and all(
        n.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")) for n in decayed_names
    )
    assert id(m.transformer.wte.weight) not in decay  # embedding (and tied lm_head)
    assert id(m.transformer.wpe.weight) not in decay
    assert id(m.transformer.ln_f.weight) not in decay
    if bias:
        assert id(m.transformer.h[0].attn.c_attn.bias) not in decay


def test_param_groups_skip_frozen_parameters() -> None:
    m = GPT(tiny_config())
    m.transformer.h[0].requires_grad_(False)
    grouped = {id(p) for g in m.configure_param_groups(0.1) for p in g["params"]}
    assert grouped == {id(p) for p in m.parameters() if p.requires_grad}


# ---------------------------------------------------------------- config compatibility


def test_config_without_newer_keys_loads_with_defaults() -> None:
    """A config.json written before pos_embedding / activation_checkpointing existed."""
    old = {"vocab_size": 64, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32}
    old.update(dropout=0.0, bias=False)
    cfg = ModelConfig.from_dict(old)
    assert cfg.pos_embedding == "learned" and cfg.activation_checkpointing is False
    assert "wpe" in GPT(cfg).transformer


def test_pos_embedding_is_validated() -> None:
    with pytest.raises(LmopsError, match="pos_embedding"):
        tiny_config(pos_embedding="alibi")
    with pytest.raises(LmopsError, match="even head size"):
        tiny_config(pos_embedding="rope", n_embd=30, n_head=2)  # head size 15


# ---------------------------------------------------------------- rotary positions


@pytest.fixture
def rope_model() -> GPT:
    torch.manual_seed(0)
    return GPT(tiny_config(pos_embedding="rope")).eval()


def test_rope_has_no_position_table_and_counts_params(rope_model: GPT) -> None:
    assert "wpe" not in rope_model.transformer
    assert not any("wpe" in name for name in rope_model.state_dict())
    cfg = rope_model.config
    per_layer = 12 * cfg.n_embd**2 + 2 * cfg.n_embd
    total = cfg.vocab_size * cfg.n_embd + cfg.n_layer * per_layer + cfg.n_embd
    assert rope_model.num_params() == rope_model.num_params(non_embedding=False) == total
    assert rope_model.flops_per_token() == 6 * total + 12 * cfg.n_layer * cfg.n_embd * 16


def test_rope_scores_depend_on_relative_position_only() -> None:
    torch.manual_seed(0)
    hs = 8
    q, k = torch.randn(1, 1, 1, hs), torch.randn(1, 1, 1, hs)

    def score(m: int, n: int) -> torch.Tensor:
        qm = apply_rope(q, *(t[-1:] for t in rope_angles(hs, 0, m + 1, q.device)))
        kn = apply_rope(k, *(t[-1:] for t in rope_angles(hs, 0, n + 1, k.device)))
        return (qm * kn).sum()

    torch.testing.assert_close(score(5, 2), score(12, 9))  # same distance, same score
    assert not torch.allclose(score(5, 2), score(5, 4))  # another distance, another score
    rotated = apply_rope(q, *rope_angles(hs, 3, 1, q.device))
    torch.testing.assert_close(rotated.norm(), q.norm())  # a rotation keeps the length


def test_rope_model_is_causal_and_position_aware(rope_model: GPT) -> None:
    idx = (torch.arange(12) * 5 % 64).unsqueeze(0)  # distinct tokens
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % 64
    a, _ = rope_model(idx)
    b, _ = rope_model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    # without positions attention is blind to order: swapping two earlier tokens would leave the
    # last position's output unchanged
    swapped = idx.clone()
    swapped[0, [2, 6]] = idx[0, [6, 2]]
    assert not torch.allclose(rope_model(swapped)[0][0, -1], a[0, -1])


@pytest.mark.parametrize("prompt_len", [1, 5, 16, 21])
def test_rope_cached_generation_equals_uncached(rope_model: GPT, prompt_len: int) -> None:
    torch.manual_seed(prompt_len)
    prompt = torch.randint(0, 64, (2, prompt_len))
    cached = rope_model.generate(prompt, 20, temperature=0.0)
    uncached = rope_model.generate(prompt, 20, temperature=0.0, use_cache=False)
    assert torch.equal(cached, _reference_greedy(rope_model, prompt, 20))
    assert torch.equal(uncached, cached)


def test_rope_kv_cache_logits_match_full_forward(rope_model: GPT) -> None:
    idx = torch.randint(0, 64, (2, 12))
    full, _ = rope_model(idx)
    caches = rope_model.new_kv_caches()
    with torch.no_grad():
        h1 = rope_model._trunk(idx[:, :5], caches)
        h2 = rope_model._trunk(idx[:, 5:6], caches)
        h3 = rope_model._trunk(idx[:, 6:12], caches)
    torch.testing.assert_close(rope_model.lm_head(torch.cat((h1, h2, h3), 1)), full)


def test_rope_weights_survive_safetensors(rope_model: GPT, tmp_path) -> None:
    save_model(rope_model, str(tmp_path / "m.safetensors"))
    other = GPT(ModelConfig.from_dict(rope_model.config.to_dict())).eval()
    load_model(other, str(tmp_path / "m.safetensors"), strict=True)
    idx = torch.randint(0, 64, (2, 10))
    torch.testing.assert_close(other(idx)[0], rope_model(idx)[0])


# ---------------------------------------------------------------- activation checkpointing


def _loss_and_grads(cfg: ModelConfig, idx: torch.Tensor, targets: torch.Tensor):
    torch.manual_seed(0)
    m = GPT(cfg).train()
    torch.manual_seed(1)  # the dropout masks
    _, loss = m(idx, targets)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}


@pytest.mark.parametrize(
    ("pos_embedding", "dropout"), [("learned", 0.0), ("rope", 0.0), ("learned", 0.2)]
)
def test_activation_checkpointing_gives_same_loss_and_grads(
    pos_embedding: str, dropout: float
) -> None:
    idx = torch.randint(0, 64, (3, 16))
    targets = torch.randint(0, 64, (3, 16))
    plain = tiny_config(pos_embedding=pos_embedding, dropout=dropout)
    ckpt = tiny_config(pos_embedding=pos_embedding, dropout=dropout, activation_checkpointing=True)
    loss_a, grads_a = _loss_and_grads(plain, idx, targets)
    loss_b, grads_b = _loss_and_grads(ckpt, idx, targets)
    torch.testing.assert_close(loss_b, loss_a)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)


def test_activation_checkpointing_recomputes_blocks_in_backward_only_when_training() -> None:
    torch.manual_seed(0)
    m = GPT(tiny_config(activation_checkpointing=True))
    calls = []
    m.transformer.h[0].attn.register_forward_pre_hook(lambda *_: calls.append(1))
    idx = torch.randint(0, 64, (2, 8))
    m.train()
    _, loss = m(idx, idx)
    assert len(calls) == 1
    loss.backward()
    assert len(calls) == 2  # the block ran again during backward: its activations were dropped
    calls.clear()
    m.eval()
    with torch.no_grad():
        m(idx, idx)
    m.generate(idx[:, :3], 2)
    assert len(calls) == 1 + 2  # no recomputation outside training


# ---------------------------------------------------------------- packed sequences


def _reference_unpacked_logits(m: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The plain forward written out with the textbook ops (SDPA with ``is_causal=True``)."""
    cfg = m.config
    B, T = idx.shape
    C, nh = cfg.n_embd, cfg.n_head
    hs = C // nh
    x = m.transformer.wte(idx)
    if cfg.pos_embedding == "learned":
        x = x + m.transformer.wpe(torch.arange(T))
    else:
        inv_freq = 1.0 / (ROPE_BASE ** (torch.arange(0, hs, 2, dtype=torch.float32) / hs))
        angles = torch.outer(torch.arange(T, dtype=torch.float32), inv_freq)
        cos, sin = angles.cos(), angles.sin()

    def rotate(t: torch.Tensor) -> torch.Tensor:
        a, b = t[..., : hs // 2], t[..., hs // 2 :]
        return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)

    for block in m.transformer.h:
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        if cfg.pos_embedding == "rope":
            q, k = rotate(q), rotate(k)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + block.attn.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return m.lm_head(m.transformer.ln_f(x))


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_unpacked_forward_is_bit_identical_to_the_plain_causal_path(
    pos_embedding: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    m = GPT(tiny_config(pos_embedding=pos_embedding)).eval()
    idx = torch.randint(0, 64, (2, 16))
    with torch.no_grad():
        expected = _reference_unpacked_logits(m, idx)
    calls: list[dict] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with torch.no_grad():
        logits, _ = m(idx)
    assert torch.equal(logits, expected)
    # no packing information: the fused causal kernel, never an explicit mask
    assert len(calls) == m.config.n_layer
    assert all(c.get("is_causal") is True and c.get("attn_mask") is None for c in calls)


def test_segment_mask_and_positions_restart_per_segment() -> None:
    seg = torch.tensor([[0, 0, 0, 1, 1, 2], [0, 1, 1, 1, 1, 1]])
    assert positions_from_segments(seg).tolist() == [[0, 1, 2, 0, 1, 0], [0, 0, 1, 2, 3, 4]]
    mask = segment_mask(seg)
    assert mask.shape == (2, 1, 6, 6)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(mask[0, 0], expected)


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_packed_rows_give_each_segment_its_logits_alone(pos_embedding: str) -> None:
    torch.manual_seed(0)
    m = GPT(tiny_config(pos_embedding=pos_embedding)).eval()
    a, b = torch.randint(0, 64, (1, 7)), torch.randint(0, 64, (1, 9))
    row = torch.cat((a, b), dim=1)
    seg = torch.tensor([[0] * 7 + [1] * 9])
    pos = positions_from_segments(seg)
    with torch.no_grad():
        packed, _ = m(row, position_ids=pos, segment_ids=seg)
        derived, _ = m(row, segment_ids=seg)  # positions derived from the segments
        torch.testing.assert_close(packed[:, :7], m(a)[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(packed[:, 7:], m(b)[0], rtol=0, atol=1e-5)
        assert torch.equal(derived, packed)
        # positions alone (no segments) shift the second example back to 0 but let it see the
        # first: the logits differ from alone
        leaky, _ = m(row, position_ids=pos)
        assert not torch.allclose(leaky[:, 7:], m(b)[0], atol=1e-3)


def test_packing_arguments_are_checked(model: GPT) -> None:
    idx = torch.randint(0, 64, (2, 8))
    with pytest.raises(LmopsError, match="segment_ids has shape"):
        model(idx, segment_ids=torch.zeros(2, 7, dtype=torch.long))
    with pytest.raises(LmopsError, match="KV-cache"):
        model._trunk(idx, model.new_kv_caches(), segment_ids=torch.zeros_like(idx))


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_activation_checkpointing_with_packed_rows(pos_embedding: str) -> None:
    torch.manual_seed(2)
    idx = torch.randint(0, 64, (2, 16))
    targets = torch.randint(0, 64, (2, 16))
    seg = torch.tensor([[0] * 5 + [1] * 11, [0] * 12 + [1] * 4])
    pos = positions_from_segments(seg)

    def loss_and_grads(checkpointing: bool):
        torch.manual_seed(0)
        cfg = tiny_config(
            pos_embedding=pos_embedding, dropout=0.2, activation_checkpointing=checkpointing
        )
        m = GPT(cfg).train()
        torch.manual_seed(1)
        _, loss = m(idx, targets, position_ids=pos, segment_ids=seg)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters()}

    loss_a, grads_a = loss_and_grads(False)
    loss_b, grads_b = loss_and_grads(True)
    torch.testing.assert_close(loss_b, loss_a)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], msg=name)


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_position_ids_are_honoured(pos_embedding: str) -> None:
    """Under the block mask RoPE is blind to a shift of a whole segment (scores depend on
    relative distance), so check the ids directly: counting ones equal the default positions,
    others (all at position 0) change the output."""
    torch.manual_seed(0)
    m = GPT(tiny_config(pos_embedding=pos_embedding)).eval()
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        plain, _ = m(idx)
        counted, _ = m(idx, position_ids=torch.arange(12).expand(2, 12))
        flat, _ = m(idx, position_ids=torch.zeros(2, 12, dtype=torch.long))
    torch.testing.assert_close(counted, plain)
    assert not torch.allclose(flat[:, 1:], plain[:, 1:])  # (an untrained model: small effects)
