"""Warmup + cosine LR schedule and the AdamW factory."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmops.training.schedule import (
    fused_allowed,
    make_adamw,
    warmup_cosine_lambda,
    warmup_cosine_scheduler,
)


def test_warmup_then_cosine_to_min_lr() -> None:
    lr, min_lr = 1e-3, 1e-4
    f = warmup_cosine_lambda(warmup_steps=10, max_steps=110, lr=lr, min_lr=min_lr)
    values = [lr * f(s) for s in range(200)]
    assert 0 < values[0] < values[5] < values[9] < lr  # linear warmup, never zero
    assert values[0] == pytest.approx(lr / 11)
    assert values[10] == pytest.approx(lr)  # peak right after warmup
    assert values[60] == pytest.approx((lr + min_lr) / 2)  # half-way down the cosine
    assert all(a >= b for a, b in zip(values[10:110], values[11:111], strict=True))
    assert values[110] == pytest.approx(min_lr)
    assert values[199] == pytest.approx(min_lr)  # flat after max_steps


def test_no_warmup_and_zero_lr() -> None:
    f = warmup_cosine_lambda(warmup_steps=0, max_steps=100, lr=1.0, min_lr=0.0)
    assert f(0) == pytest.approx(1.0)
    assert f(50) == pytest.approx(0.5)
    assert f(100) == pytest.approx(0.0)
    assert warmup_cosine_lambda(5, 10, 0.0, 0.0)(3) == 1.0  # zero base lr stays zero anyway


def test_scheduler_steps_per_optimizer_step() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([p], lr=0.1)
    config = warmup_cosine_scheduler(opt, warmup_steps=2, max_steps=4, lr=0.1, min_lr=0.0)
    assert config["interval"] == "step" and config["frequency"] == 1
    seen = []
    for _ in range(5):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        config["scheduler"].step()
    assert seen == pytest.approx([0.1 / 3, 0.2 / 3, 0.1, 0.05, 0.0])


def test_make_adamw_is_fused_when_supported_and_keeps_groups() -> None:
    w = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(torch.zeros(4))
    groups = [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}]
    opt = make_adamw(groups, lr=1e-3, betas=(0.9, 0.95))
    assert opt.defaults["fused"] is True  # this torch build has fused CPU AdamW
    assert opt.defaults["betas"] == (0.9, 0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert set(groups[0]) == {"params", "weight_decay"}  # caller's dicts untouched
    assert not make_adamw(groups, lr=1e-3, betas=(0.9, 0.95), allow_fused=False).defaults["fused"]


def test_make_adamw_falls_back_when_fused_is_refused() -> None:
    z = torch.nn.Parameter(torch.zeros(3, dtype=torch.complex64))  # fused kernels refuse complex
    opt = make_adamw([{"params": [z], "weight_decay": 0.0}], lr=1e-2, betas=(0.9, 0.99))
    assert not opt.defaults["fused"]
    z.grad = torch.ones_like(z)
    opt.step()
    assert not torch.equal(z.detach(), torch.zeros_like(z))


def test_fused_not_allowed_with_fp16_grad_scaler() -> None:
    def module(precision: str | None) -> SimpleNamespace:
        trainer = None if precision is None else SimpleNamespace(precision=precision)
        return SimpleNamespace(_trainer=trainer)

    assert fused_allowed(module(None))
    assert fused_allowed(module("32-true"))
    assert fused_allowed(module("bf16-mixed"))
    assert not fused_allowed(module("16-mixed"))
    assert math.isfinite(warmup_cosine_lambda(0, 0, 1.0, 0.1)(0))  # max_steps 0: no div by 0
