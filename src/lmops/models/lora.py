"""LoRA: fine-tune a frozen GPT through small low-rank adapters on its linear layers.

A LoRA layer keeps the pretrained ``W`` frozen and learns ``ΔW = B @ A`` with ``A`` [r, in] and
``B`` [out, r], r much smaller than in/out (Hu et al., 2021)::

    y = x W^T + b + dropout(x) A^T B^T · (alpha / r)

``B`` starts at zero, so the adapted model starts out computing exactly what the base model
computes, and training only moves away from it as far as the data asks. The adapter is tiny
(``r · (in + out)`` numbers per layer), so it can be saved alone, and after training it folds
back into ``W`` (:func:`merge_lora`): the merged model is a plain GPT with the base model's
state-dict keys, no extra inference cost, and it loads wherever a GPT bundle loads.

The usual flow::

    adapted = apply_lora(model, ["attn.c_attn", "attn.c_proj"], rank=8, alpha=16, dropout=0.05)
    ... train the parameters that still require grad ...
    save_file(lora_state_dict(model), "adapter.safetensors")   # the adapter alone
    merge_lora(model)                                           # a plain GPT again

Only the four linear layers of each block can be adapted. ``lm_head`` is tied to the token
embedding ``wte``; adapting it would change the input embedding too and break the tie, so it is
not offered. Plain torch: nothing here imports Lightning or the training code.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from lmops.config import LORA_TARGETS, LmopsError

__all__ = [
    "LORA_TARGETS",
    "LoRALinear",
    "apply_lora",
    "load_lora_state_dict",
    "lora_state_dict",
    "merge_lora",
]

ADAPTER_SUFFIXES = (".lora_a", ".lora_b")


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``scaling · B @ A``.

    The wrapped layer stays a child called ``base``, so its weights keep their names
    (``<layer>.base.weight``) and :meth:`merge` can hand it back unchanged in type. The adapter
    lives next to it as ``lora_a`` / ``lora_b``, the only parameters this module adds.
    """

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if rank < 1:
            raise LmopsError(f"LoRA rank must be >= 1, got {rank}")
        if alpha <= 0:
            raise LmopsError(f"LoRA alpha must be > 0, got {alpha}")
        if not 0.0 <= dropout < 1.0:
            raise LmopsError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        self.in_features = base.in_features
        self.out_features = base.out_features
        self.rank = rank
        self.alpha = alpha
        # alpha / r keeps the update's size steady when r changes, so lr need not be re-tuned
        self.scaling = alpha / rank
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        factory = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **factory))
        self.lora_b = nn.Parameter(torch.empty(base.out_features, rank, **factory))
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """``A`` like an ``nn.Linear`` weight, ``B`` zero: the update starts at exactly zero while
        ``A`` already passes gradient on to ``B`` (both zero would never train)."""
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        nn.init.zeros_(self.lora_b)

    def delta_weight(self) -> torch.Tensor:
        """``scaling · B @ A`` [out, in] in float32, what :meth:`merge` adds to the base weight."""
        return (self.lora_b.float() @ self.lora_a.float()) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)
        if self.merged:  # the update is inside base.weight already
            return y
        # two thin matmuls through rank r, never the [out, in] product: cheaper for r << in, out
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return y + update * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """Fold the update into the base weight (once) and return the base layer.

        Summed in float32 and cast back, so a bf16 base does not lose the small update to
        rounding twice. After this the module's forward is the base layer's alone.
        """
        if not self.merged:
            weight = self.base.weight
            weight.copy_((weight.float() + self.delta_weight()).to(weight.dtype))
            self.merged = True
        return self.base

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha}, merged={self.merged}"


def _lora_layers(model: nn.Module) -> list[tuple[str, LoRALinear]]:
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def _replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def _prefix_matches(name: str, prefix: str) -> bool:
    """Whole dotted parts only: ``head`` covers ``head.weight`` but not ``header.weight``."""
    return name == prefix or name.startswith(prefix + ".")


def _target_layers(model: nn.Module, targets: Sequence[str]) -> list[str]:
    """The names of the nn.Linear layers ``targets`` name (as suffixes), each target required
    to match at least one."""
    matched: dict[str, list[str]] = {t: [] for t in targets}
    for name, module in model.named_modules():
        target = next((t for t in targets if name == t or name.endswith("." + t)), None)
        if target is not None and isinstance(module, nn.Linear):
            matched[target].append(name)
    missing = [t for t, names in matched.items() if not names]
    if missing:
        raise LmopsError(
            f"LoRA target(s) {', '.join(map(repr, missing))} match no nn.Linear in "
            f"{type(model).__name__}"
        )
    return sorted(name for names in matched.values() for name in names)


def apply_lora(
    model: nn.Module,
    targets: Sequence[str],
    rank: int,
    alpha: float,
    dropout: float = 0.0,
    trainable: Sequence[str] = (),
) -> list[str]:
    """Put a :class:`LoRALinear` on every linear layer named by ``targets``; freeze the rest.

    ``targets`` are name suffixes from :data:`LORA_TARGETS`, so the same list works for a bare
    GPT (``transformer.h.0.attn.c_attn``) and for a GPT inside a task model
    (``backbone.transformer.h.0.attn.c_attn``). Afterwards only the adapters require grad, plus
    the parameters under the ``trainable`` prefixes (e.g. ``"head"`` for a classifier's new head,
    which has no pretrained weights to keep), so an optimizer over ``requires_grad`` parameters
    trains exactly those. Returns the names of the adapted layers.

    Raises :class:`LmopsError` for a target that is not in :data:`LORA_TARGETS`, a target or a
    ``trainable`` prefix that matches nothing (a typo would otherwise train nothing there
    silently), or a model that already has adapters.
    """
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown or not targets:
        what = (
            f"unknown LoRA target(s) {', '.join(map(repr, unknown))}"
            if unknown
            else "no LoRA targets"
        )
        raise LmopsError(f"{what}; allowed: {', '.join(LORA_TARGETS)}")
    if _lora_layers(model):
        raise LmopsError("the model already has LoRA adapters; apply_lora once per model")

    replaced = _target_layers(model, targets)
    model.requires_grad_(False)
    for name in replaced:
        base = model.get_submodule(name)
        assert isinstance(base, nn.Linear)
        _replace_module(model, name, LoRALinear(base, rank, alpha, dropout))

    # remove_duplicate=False: a tied weight answers to each of its names (lm_head and wte)
    named = list(model.named_parameters(remove_duplicate=False))
    for prefix in trainable:
        prefix = prefix.rstrip(".")
        hits = [p for name, p in named if _prefix_matches(name, prefix)]
        if not hits:
            raise LmopsError(f"trainable prefix {prefix!r} matches no parameter of the model")
        for p in hits:
            p.requires_grad_(True)
    return replaced


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights alone (``*.lora_a``, ``*.lora_b``), keyed as in ``model.state_dict()``.

    This is what to save after LoRA training when the base model is kept anyway: a few
    ``r · (in + out)`` numbers per layer instead of the whole model. The tensors share storage
    with the model (as ``state_dict`` does); clone them to keep a snapshot while training goes on.
    Parameters kept trainable through ``apply_lora(trainable=...)`` are not included.
    """
    return {k: v for k, v in model.state_dict().items() if k.endswith(ADAPTER_SUFFIXES)}


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Copy saved adapter weights into a model that :func:`apply_lora` has adapted the same way.

    Strict, because a partial load would leave some layers at ``B = 0`` and quietly behave like
    the base model there: missing or unexpected keys, or a different shape (another rank), raise
    :class:`LmopsError`.
    """
    layers = _lora_layers(model)
    if not layers:
        raise LmopsError("the model has no LoRA adapters; call apply_lora before loading one")
    if any(layer.merged for _, layer in layers):
        raise LmopsError("the model's LoRA adapters are merged already; load into a fresh one")
    own = lora_state_dict(model)
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    if missing or unexpected:
        raise LmopsError(
            f"LoRA adapter does not fit the model: {len(missing)} missing key(s) "
            f"{missing[:3]}, {len(unexpected)} unexpected key(s) {unexpected[:3]}"
        )
    for key, tensor in own.items():
        if state[key].shape != tensor.shape:
            raise LmopsError(
                f"LoRA adapter {key} has shape {tuple(state[key].shape)}, the model's is "
                f"{tuple(tensor.shape)} (another rank?)"
            )
    for key, tensor in own.items():
        tensor.copy_(state[key])


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base weight and put the plain ``nn.Linear`` back, in place.

    The result computes what the adapted model computed (in eval mode) at the cost of the base
    model, and its state dict has exactly the un-adapted model's keys, so it saves and loads as
    an ordinary GPT bundle. ``requires_grad`` flags are left as :func:`apply_lora` set them
    (base weights frozen); call ``requires_grad_(True)`` to train the merged model further.
    Returns ``model`` itself for chaining.
    """
    for name, layer in _lora_layers(model):
        _replace_module(model, name, layer.merge())
    return model
