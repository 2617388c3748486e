"""Learning-rate schedule and optimizer construction shared by the LM and classifier modules."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    import lightning as L

__all__ = [
    "current_lr",
    "fused_allowed",
    "make_adamw",
    "warmup_cosine_lambda",
    "warmup_cosine_scheduler",
]


def warmup_cosine_lambda(
    warmup_steps: int, max_steps: int, lr: float, min_lr: float
) -> Callable[[int], float]:
    """Multiplier of the base ``lr`` for ``torch.optim.lr_scheduler.LambdaLR``, per optimizer step.

    Linear warmup over ``warmup_steps`` (starting at lr/(warmup+1), never 0, so step 0 already
    learns), then a cosine from ``lr`` down to ``min_lr`` at ``max_steps``, flat at ``min_lr``
    after. Warmup keeps Adam's early, badly estimated second moments from taking huge steps.
    """
    if lr <= 0.0:
        return lambda step: 1.0  # nothing to scale; LambdaLR keeps the (zero) base lr
    floor = min_lr / lr
    decay_steps = max(1, max_steps - warmup_steps)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / decay_steps)
        return floor + 0.5 * (1.0 + math.cos(math.pi * progress)) * (1.0 - floor)

    return multiplier


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, lr: float, min_lr: float
) -> dict[str, Any]:
    """Lightning's ``lr_scheduler`` config stepping the schedule after every optimizer step."""
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine_lambda(warmup_steps, max_steps, lr, min_lr)
    )
    return {"scheduler": scheduler, "interval": "step", "frequency": 1}


def make_adamw(
    param_groups: Iterable[dict[str, Any]],
    lr: float,
    betas: tuple[float, float],
    allow_fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW, fused (one kernel for all parameters) when this torch build supports it for the
    parameters' device and dtype; the default (foreach) implementation otherwise.

    ``allow_fused=False`` is for fp16 mixed precision with gradient clipping: a fused optimizer
    unscales inside ``step()``, too late for clipping, and Lightning refuses that combination.
    """
    groups = list(param_groups)
    if allow_fused and all(_fused_supported(p) for g in groups for p in g["params"]):
        try:
            # copies: the optimizer writes its defaults (fused=True included) into each group dict
            return torch.optim.AdamW([dict(g) for g in groups], lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):
            pass  # refused at construction by some torch versions
    return torch.optim.AdamW([dict(g) for g in groups], lr=lr, betas=betas)


def _fused_supported(p: torch.Tensor) -> bool:
    """Whether fused AdamW has a kernel for this parameter. Torch checks this only at the first
    ``step()``, too late to fall back, so we ask up front."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices

        devices = set(_get_fused_kernels_supported_devices())
    except ImportError:  # an older/newer torch without the helper: the long-standing kernels
        devices = {"cuda", "cpu"}
    return p.device.type in devices and torch.is_floating_point(p)


def fused_allowed(module: L.LightningModule) -> bool:
    """False under fp16 mixed precision, whose grad scaler cannot unscale a fused optimizer's
    gradients before clipping (Lightning raises on that combination)."""
    trainer = module._trainer
    precision = str(getattr(trainer, "precision", "32-true")) if trainer is not None else "32-true"
    return not precision.startswith("16")


def current_lr(module: L.LightningModule) -> torch.Tensor:
    """The learning rate of the step being taken, as a CPU tensor.

    Logging a Python float makes Lightning build a tensor on the model's device (a host-to-device
    copy that waits for the GPU every step); a CPU tensor is logged without touching the device.
    """
    return torch.tensor(module.trainer.optimizers[0].param_groups[0]["lr"])
