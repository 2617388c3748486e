"""CausalLMModule: learns a repeating pattern through build_trainer; logs, optimizer, schedule."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lmops.config import PRECISIONS, ModelConfig, PretrainConfig
from lmops.training.callbacks import MetricHistory, ThroughputLogger
from lmops.training.lm_module import CausalLMModule
from lmops.training.schedule import warmup_cosine_lambda
from lmops.training.trainer import build_trainer
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCK = 16
VOCAB = 64


class PatternWindows(Dataset):
    """Random windows over a token stream that repeats one fixed 7-token cycle."""

    def __init__(self, num_samples: int, seed: int) -> None:
        pattern = torch.randperm(VOCAB, generator=torch.Generator().manual_seed(0))[:7]
        self.tokens = pattern.repeat(64)
        self.num_samples = num_samples
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        start = int(torch.randint(0, len(self.tokens) - BLOCK - 1, (1,), generator=g))
        window = self.tokens[start : start + BLOCK + 1]
        return window[:-1], window[1:]


def tiny_module(pos_embedding: str = "learned", module_kwargs=None, **cfg) -> CausalLMModule:
    gpt = ModelConfig(
        vocab_size=VOCAB,
        block_size=BLOCK,
        n_layer=2,
        n_head=2,
        n_embd=32,
        pos_embedding=pos_embedding,
    )
    defaults = {"max_steps": 60, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5, "val_every": 20}
    defaults.update(cfg)
    return CausalLMModule(gpt, PretrainConfig(**defaults), **(module_kwargs or {}))


def val_loss(module: CausalLMModule, loader: DataLoader) -> float:
    module.eval()
    with torch.no_grad():
        losses = [module.model(x, y)[1].item() for x, y in loader]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("pos_embedding", ["learned", "rope"])
def test_training_reduces_val_loss_and_logs_metrics(tmp_path, pos_embedding: str) -> None:
    L.seed_everything(0)
    module = tiny_module(pos_embedding)
    train = DataLoader(PatternWindows(10_000, seed=1), batch_size=8, shuffle=True)
    val = DataLoader(PatternWindows(32, seed=2), batch_size=8)
    before = val_loss(module, val)
    module.train()  # Lightning keeps the mode it finds
    history = MetricHistory()
    trainer = build_trainer(
        HW,
        max_steps=60,
        precision="32-true",
        val_every=20,
        limit_val_batches=4,
        grad_clip=1.0,
        accumulate=1,
        default_root_dir=tmp_path,
        callbacks=[
            history,
            ThroughputLogger(
                tokens_per_step=8 * BLOCK,
                every_n_steps=10,
                flops_per_token=module.model.flops_per_token(),
                peak_flops=None,
            ),
        ],
    )
    trainer.fit(module, train, val)
    assert trainer.global_step == 60

    val_points = history.series("val/loss")
    assert [s for s, _ in val_points] == [20, 40, 60]
    assert val_points[-1][1] < val_points[0][1]
    assert val_points[-1][1] < before - 2.0  # from ~ln(64) to well below: it learned the cycle
    assert val_loss(module, val) == pytest.approx(val_points[-1][1], rel=1e-4)
    for (_, loss), (_, ppl) in zip(val_points, history.series("val/ppl"), strict=True):
        assert ppl == pytest.approx(math.exp(loss), rel=1e-5)

    train_loss = history.series("train/loss")
    assert [s for s, _ in train_loss] == list(range(1, 61))  # every step, no stale repeats
    lrs = history.series("train/lr")
    schedule = warmup_cosine_lambda(5, 60, 3e-3, 3e-4)
    assert [lr for _, lr in lrs] == pytest.approx([3e-3 * schedule(s) for s in range(60)])
    throughput = history.series("train/tokens_per_sec")
    assert [s for s, _ in throughput] == [11, 21, 31, 41, 51]
    assert all(v > 0 for _, v in throughput)


def test_optimizer_groups_fused_and_step_schedule() -> None:
    module = tiny_module(weight_decay=0.05, beta1=0.8, beta2=0.95)
    config = module.configure_optimizers()
    opt = config["optimizer"]
    assert opt.defaults["fused"] is True
    assert opt.defaults["betas"] == (0.8, 0.95)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert config["lr_scheduler"]["interval"] == "step"
    grouped = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.parameters())


def test_test_split_logs_loss_and_perplexity(tmp_path) -> None:
    module = tiny_module()
    trainer = build_trainer(
        HW,
        max_steps=1,
        precision="32-true",
        val_every=1,
        limit_val_batches=1,
        grad_clip=0.0,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    loader = DataLoader(PatternWindows(16, seed=3), batch_size=8)
    (result,) = trainer.test(module, loader, verbose=False)
    assert result["test/ppl"] == pytest.approx(math.exp(result["test/loss"]), rel=1e-5)
    assert result["test/loss"] == pytest.approx(val_loss(module, loader), rel=1e-5)


def test_compile_and_parallelize_run_once_in_configure_model(tmp_path, monkeypatch) -> None:
    """hardware.compile compiles the GPT in place after the strategy's parallelize hook; a real
    compile takes ~30 s on this CPU, so the compile call itself is recorded, not run."""
    calls: list[str] = []
    module = tiny_module(
        max_steps=2, module_kwargs={"compile": True, "parallelize": lambda m: calls.append("shard")}
    )
    monkeypatch.setattr(module.model, "compile", lambda *a, **k: calls.append("compile"))
    keys = list(module.model.state_dict())
    trainer = build_trainer(
        HW,
        max_steps=2,
        precision="32-true",
        val_every=1,
        limit_val_batches=1,
        grad_clip=1.0,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    data = DataLoader(PatternWindows(64, seed=1), batch_size=8)
    trainer.fit(module, data, data)
    trainer.validate(module, data, verbose=False)
    assert calls == ["shard", "compile"]
    assert list(module.model.state_dict()) == keys
    plain = tiny_module()
    plain.configure_model()
    assert plain.model._compiled_call_impl is None  # off unless asked for


def test_nn_module_compile_keeps_state_dict_keys() -> None:
    """Why configure_model uses ``model.compile()`` and not ``torch.compile(model)``: bundles
    and checkpoints keep the plain GPT's keys (compilation itself is lazy: nothing runs here)."""
    module = tiny_module()
    keys = list(module.model.state_dict())
    module.model.compile()
    assert module.model._compiled_call_impl is not None
    assert list(module.model.state_dict()) == keys


class PreClipGradNorm(L.Callback):
    """The gradient norm before clipping, computed independently, by optimizer step."""

    def __init__(self) -> None:
        self.by_step: dict[int, float] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad.norm() for p in pl_module.parameters() if p.grad is not None]
        self.by_step[trainer.global_step + 1] = float(torch.stack(grads).norm())


def test_train_metrics_follow_log_every_n_steps_with_grad_norm(tmp_path) -> None:
    """Each self.log costs ~0.5 ms of Python: train metrics are logged on logging steps only."""
    L.seed_everything(0)
    module = tiny_module(max_steps=20)
    history = MetricHistory()
    norms = PreClipGradNorm()
    trainer = build_trainer(
        HW,
        max_steps=20,
        precision="32-true",
        val_every=1000,
        limit_val_batches=0,
        grad_clip=0.5,  # clipping happens after the logged norm is taken
        accumulate=1,
        default_root_dir=tmp_path,
        callbacks=[history, norms],
        log_every_n_steps=5,
    )
    trainer.fit(module, DataLoader(PatternWindows(1000, seed=1), batch_size=8))
    for name in ("train/loss", "train/lr", "train/grad_norm"):
        assert [s for s, _ in history.series(name)] == [5, 10, 15, 20], name
    for step, value in history.series("train/grad_norm"):
        assert value == pytest.approx(norms.by_step[step], rel=1e-4)
    assert any(value > 0.5 for _, value in history.series("train/grad_norm"))  # pre-clip


def test_bf16_mixed_clips_gradients_with_the_fused_optimizer(tmp_path, monkeypatch) -> None:
    """Lightning refuses to clip for a fused optimizer under any mixed precision; bf16 has no
    grad scaler, so the module clips itself and keeps fused AdamW (the GPU recipe's setting)."""
    clipped: list[float] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *args, **kwargs):
        clipped.append(max_norm)
        return real_clip(params, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    module = tiny_module(max_steps=3)
    trainer = build_trainer(
        HW,
        max_steps=3,
        precision="bf16-mixed",
        val_every=1000,
        limit_val_batches=0,
        grad_clip=0.7,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(PatternWindows(64, seed=1), batch_size=8))
    assert trainer.global_step == 3
    assert trainer.optimizers[0].defaults["fused"] is True
    assert clipped == [0.7, 0.7, 0.7]
    assert all(torch.isfinite(p).all() for p in module.parameters())


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_of_the_schema_trains_with_clipping(tmp_path, precision: str) -> None:
    module = tiny_module(max_steps=3)
    trainer = build_trainer(
        HW,
        max_steps=3,
        precision=precision,
        val_every=1000,
        limit_val_batches=0,
        grad_clip=PretrainConfig().grad_clip,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader(PatternWindows(64, seed=1), batch_size=8))
    assert trainer.global_step == 3
    assert all(torch.isfinite(p.float()).all() for p in module.parameters())
