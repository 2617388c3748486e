"""A GPT-2 style decoder in one file, read top to bottom.

    ModelConfig -> GPT
                 ├─ wte: token embedding (tied to lm_head)
                 ├─ wpe: learned position embedding         (pos_embedding="learned" only)
                 ├─ n_layer x Block: x + attn(ln_1(x)); x + mlp(ln_2(x))      (pre-LayerNorm)
                 ├─ ln_f
                 └─ lm_head

Positions are either a learned absolute table added to the token embeddings (GPT-2) or rotary
embeddings (RoPE) that rotate each head's queries and keys by an angle proportional to the
position, so attention scores depend on relative distance and there is no position table.

Attention is ``F.scaled_dot_product_attention`` so PyTorch picks the fastest kernel (flash,
memory-efficient or math) for the device. Generation keeps a per-layer key/value cache so each new
token costs one position, not the whole context; the cache is only valid until the context
reaches ``block_size`` (positions are never seen beyond it in training), after which the window
slides and we recompute. Prompts of different lengths decode together left-padded (``left_pad``:
per-row positions and a mask over the padding); the loop itself is in ``generation.py``.

Packed batches (several short examples in one row, e.g. supervised fine-tuning) pass
``segment_ids`` (which example each position belongs to) and ``position_ids`` (restarting at 0
in each example): attention is then block-diagonal causal, so an example sees only its own
earlier positions, and each example gets the positions (learned table or RoPE angles) it would
have alone; its loss is the loss it would have alone. That path hands SDPA an explicit mask
(no flash kernel); without packing information the plain ``is_causal`` path runs unchanged.

``activation_checkpointing`` keeps only each block's input during the forward pass and recomputes
the block during backward: about a third more compute for activation memory that no longer grows
with depth, which is what lets a longer context or a bigger micro-batch fit on a GPU.

Nothing here imports Lightning: the training code wraps this module, and export/inference load it
directly.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from lmops.config import LmopsError, ModelConfig
from lmops.models.generation import BatchDecoder, GenerationParams, left_pad_layout

__all__ = ["GPT", "KVCache", "positions_from_segments", "segment_mask"]

ROPE_BASE = 10_000.0  # the usual RoPE frequency base (RoFormer, LLaMA)


class KVCache:
    """Keys and values of the positions seen so far, for one attention layer.

    Buffers are allocated once at ``max_len`` on the first update, so decoding does not reallocate
    (and copy) the whole cache every token as ``torch.cat`` would.
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k, v`` of shape [B, nh, T, hs]; return all cached keys and values so far."""
        B, nh, T, hs = k.shape
        if self.k is None or self.v is None:
            self.k = k.new_empty(B, nh, self.max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        end = self.length + T
        if end > self.max_len:
            raise LmopsError(f"KV cache overflow: {end} positions > block_size {self.max_len}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


def rope_angles(
    head_size: int, start: int, length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape [length, head_size / 2] for positions ``start .. start+length-1``.

    Computed in float32 on every forward (a [T, hs/2] outer product, negligible next to the
    matmuls) rather than held in a buffer, so casting the model to bf16 cannot coarsen the
    angles and the state dict carries no extra tensors.
    """
    return rope_angles_at(head_size, torch.arange(start, start + length, device=device))


def rope_angles_at(head_size: int, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)`` of shape [..., head_size / 2] for integer ``positions`` of any shape [...]
    (e.g. [B, T] per-example positions of a packed batch), in float32 like :func:`rope_angles`."""
    inv_freq = 1.0 / (
        ROPE_BASE
        ** (torch.arange(0, head_size, 2, device=positions.device, dtype=torch.float32) / head_size)
    )
    angles = positions.to(torch.float32).unsqueeze(-1) * inv_freq
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs ``(x[i], x[i + hs/2])`` of ``x`` [B, nh, T, hs] by the position's angles
    (the GPT-NeoX / LLaMA "rotate half" layout); ``cos, sin`` are [T, hs/2], or [B, 1, T, hs/2]
    for positions that differ per row."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


Rope = tuple[torch.Tensor, torch.Tensor] | None


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """Block-diagonal causal mask [B, 1, T, T] (True: may attend) from ``segment_ids`` [B, T]:
    query t sees key s <= t of its own segment only. Every position sees itself, so no row of
    the mask is empty (an empty row would make SDPA's softmax NaN)."""
    T = segment_ids.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    same = segment_ids.unsqueeze(2) == segment_ids.unsqueeze(1)
    return (same & causal).unsqueeze(1)


def positions_from_segments(segment_ids: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] counting from 0 again wherever the segment id changes along a row."""
    T = segment_ids.size(1)
    t = torch.arange(T, device=segment_ids.device).expand_as(segment_ids)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    # the index of the latest segment start at or before t
    last_start = torch.where(starts, t, torch.zeros_like(t)).cummax(dim=1).values
    return t - last_start


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t sees positions <= t only (of its own example
    when packed)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.c_attn = nn.Linear(
            config.n_embd, 3 * config.n_embd, bias=config.bias
        )  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: Rope = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``mask`` [B, 1, T, past + T] (True: may attend) replaces the causal mask: packed rows
        (no cache) or left-padded generation (with a cache)."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # [B, T, C] -> [B, nh, T, hs]
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if rope is not None:  # angles of absolute positions past..past+T-1; keys cached rotated
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)

        past = 0 if cache is None else cache.length
        if cache is not None:
            k, v = cache.update(k, v)
        dropout_p = self.dropout if self.training else 0.0
        if mask is not None:
            # packed rows or left-padded prompts: the mask is built once per forward in _trunk
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        elif past == 0:
            # no earlier positions: the usual causal mask (lets SDPA use its fused kernels)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif T == 1:
            # one new token attends to everything cached, itself included: no mask needed
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            # several new tokens after a cached prefix: query i sits at absolute position past + i
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward: widen 4x, GELU, project back."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: the residual stream is never normalized in place."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(
        self,
        x: torch.Tensor,
        cache: KVCache | None = None,
        rope: Rope = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache, rope, mask)
        return x + self.mlp(self.ln_2(x))


def _packed_layout(
    idx: torch.Tensor,
    caches: list[KVCache] | None,
    position_ids: torch.Tensor | None,
    segment_ids: torch.Tensor | None,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(position_ids, attention mask)`` of a packed row, both None for a plain one (which
    keeps SDPA's fused causal kernel); positions follow from ``segment_ids`` when not given."""
    if position_ids is None and segment_ids is None:
        return None, None
    if caches is not None:
        raise LmopsError(
            "position_ids / segment_ids are for full forward passes, not KV-cache decoding"
        )
    for name, ids in (("position_ids", position_ids), ("segment_ids", segment_ids)):
        if ids is not None and ids.shape != idx.shape:
            raise LmopsError(f"{name} has shape {tuple(ids.shape)}; idx has {tuple(idx.shape)}")
    if segment_ids is None:
        return position_ids, None
    if position_ids is None:
        position_ids = positions_from_segments(segment_ids)
    return position_ids, segment_mask(segment_ids)


class GPT(nn.Module):
    """Decoder-only language model; ``forward(idx, targets)`` returns ``(logits, loss)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise LmopsError(
                "the model config has no vocab_size; size it for its tokenizer first "
                "(ModelConfig.with_vocab)"
            )
        self.config = config
        layers: dict[str, nn.Module] = {"wte": nn.Embedding(config.vocab_size, config.n_embd)}
        if config.pos_embedding == "learned":
            layers["wpe"] = nn.Embedding(config.block_size, config.n_embd)
        layers["drop"] = nn.Dropout(config.dropout)
        layers["h"] = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        layers["ln_f"] = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.transformer = nn.ModuleDict(layers)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # Weight tying: the input and output token embeddings are one matrix (fewer parameters,
        # and it trains better at this size). safetensors' save_model/load_model keep the sharing.
        self.transformer.wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2: each residual branch adds to the stream, 2 per layer; scale their output
        # projections so the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward

    def _trunk(
        self,
        idx: torch.Tensor,
        caches: list[KVCache] | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        left_pad: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embeddings + blocks + final LayerNorm; positions continue after what ``caches`` hold,
        or are ``position_ids`` (derived from ``segment_ids`` when only those are given).

        ``left_pad`` [B] (generation): that many columns at the left of each row, cached ones
        included, are padding; each row's positions start after its padding and no query sees a
        padded key.
        """
        B, T = idx.shape
        start = 0 if caches is None else caches[0].length
        if start + T > self.config.block_size:
            raise LmopsError(
                f"sequence of {start + T} tokens is longer than the model's block_size "
                f"({self.config.block_size}); truncate the input (e.g. finetune.max_length)"
            )
        if left_pad is not None:
            if position_ids is not None or segment_ids is not None:
                raise LmopsError("left_pad is for generation; it takes no position/segment ids")
            position_ids, mask = left_pad_layout(left_pad, start, T)
        else:
            position_ids, mask = _packed_layout(idx, caches, position_ids, segment_ids)
        x = self.transformer.wte(idx)
        rope: Rope = None
        hs = self.config.n_embd // self.config.n_head
        if self.config.pos_embedding == "learned":
            if position_ids is None:
                pos = torch.arange(start, start + T, dtype=torch.long, device=idx.device)
            else:
                pos = position_ids
            x = x + self.transformer.wpe(pos)
        elif position_ids is None:
            rope = rope_angles(hs, start, T, idx.device)
        else:
            cos, sin = rope_angles_at(hs, position_ids)
            rope = cos.unsqueeze(1), sin.unsqueeze(1)  # [B, 1, T, hs/2]: the same for every head
        x = self.transformer.drop(x)
        # recompute blocks in backward only when there is a backward (training, no KV cache)
        recompute = (
            self.config.activation_checkpointing
            and self.training
            and caches is None
            and torch.is_grad_enabled()
        )
        for i, block in enumerate(self.transformer.h):
            if recompute:
                # non-reentrant: works with SDPA, torch.compile and FSDP2, and replays the
                # dropout RNG so the recomputed block equals the stored one
                x = checkpoint(block, x, None, rope, mask, use_reentrant=False)
            else:
                x = block(x, None if caches is None else caches[i], rope, mask)
        return self.transformer.ln_f(x)

    def hidden_states(
        self,
        idx: torch.Tensor,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final-LayerNorm output [B, T, C]: what task heads (classifier) read."""
        return self._trunk(idx, position_ids=position_ids, segment_ids=segment_ids)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        position_ids: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits [B, T, vocab] for every position, and the mean next-token loss when given targets.

        ``logits[:, t]`` is scored against ``targets[:, t]`` (the data shifts targets by one).
        Targets equal to -100 are ignored (padding, prompt tokens); the loss is the mean over
        the remaining target tokens of the whole batch.

        Packed rows pass ``segment_ids`` [B, T] (positions with different ids never attend to each
        other) and ``position_ids`` [B, T] (each example's own positions, from 0); without
        ``position_ids`` they restart at 0 wherever the segment id changes.
        """
        hidden = self._trunk(idx, position_ids=position_ids, segment_ids=segment_ids)
        logits = self.lm_head(hidden)
        if targets is None:
            return logits, None
        # the loss in float32 even under bf16-true: a bf16 log-softmax over the vocab is coarse
        loss = F.cross_entropy(
            logits.view(-1, logits.size(-1)).float(), targets.reshape(-1), ignore_index=-100
        )
        return logits, loss

    # ------------------------------------------------------------------ generation

    def new_kv_caches(self) -> list[KVCache]:
        """One empty cache per layer, sized for a full context window."""
        return [KVCache(self.config.block_size) for _ in range(self.config.n_layer)]

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_id: int | None = None,
        use_cache: bool = True,
        *,
        top_p: float | None = None,
        seed: int | None = None,
    ) -> torch.Tensor:
        """Append up to ``max_new_tokens`` sampled tokens to ``idx`` [B, T]; returns [B, T + n].

        ``temperature == 0`` means greedy (argmax); the sampling arguments are those of
        :class:`~lmops.models.generation.GenerationParams` (row i draws from ``seed + i``). With
        ``eos_id`` generation stops once every row has produced it; rows that finished earlier
        are filled with ``eos_id``. Put the model in ``eval()`` first unless you want dropout
        while sampling. Prompts of different lengths: :class:`~lmops.models.generation.
        BatchDecoder` (which this wraps; text-level stop strings live in ``lmops.export.bundle``).

        The context is the last ``block_size`` tokens. With ``use_cache`` each step feeds only the
        new token while the context fits; once it would exceed ``block_size`` the window slides,
        every absolute position shifts, and the remaining steps recompute the cropped window,
        exactly as the cache-free path does.
        """
        params = GenerationParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        seeds = None if seed is None else [seed + row for row in range(idx.size(0))]
        decoder = BatchDecoder(self, idx, params, eos_id=eos_id, use_cache=use_cache, seeds=seeds)
        new = [token[:, None] for token, _ in decoder]
        return torch.cat((idx, *new), dim=1)

    # ------------------------------------------------------------------ accounting

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; ``non_embedding`` drops the position table (the token table stays,
        because as the tied lm_head it does real compute per token). RoPE has no table."""
        n = sum(p.numel() for p in self.parameters())  # tied weights are counted once
        if non_embedding and "wpe" in self.transformer:
            n -= self.transformer.wpe.weight.numel()
        return n

    def flops_per_token(self) -> float:
        """Training FLOPs per token, forward + backward (PaLM appendix B): 6N + 12·L·C·T.

        The model's FLOPs, what MFU divides by: recomputation under activation checkpointing is
        not counted (it is hardware work, not model work), nor are the RoPE rotations.
        """
        cfg = self.config
        return (
            6 * self.num_params(non_embedding=True) + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size
        )

    def configure_param_groups(self, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW groups: decay the matmul weights only.

        Biases and LayerNorm gains are scale/offset parameters; decaying them towards zero only
        hurts. Embeddings are lookup tables whose rows are touched rarely, so decay would shrink
        rare tokens' vectors. Frozen parameters (``requires_grad=False``) are left out.
        """
        no_decay_ids: set[int] = set()
        for module in self.modules():
            if isinstance(module, nn.Embedding | nn.LayerNorm):
                no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
        decay, no_decay = [], []
        for name, p in self.named_parameters():  # yields the tied weight once
            if not p.requires_grad:
                continue
            if id(p) in no_decay_ids or p.dim() < 2 or name.endswith(".bias"):
                no_decay.append(p)
            else:
                decay.append(p)
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return [g for g in groups if g["params"]]
