"""SFTModule: learns to answer on packed batches, under every precision of the schema, and with
LoRA trains the adapters only."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from lmops.config import PRECISIONS, FinetuneConfig, ModelConfig
from lmops.data.sft import SFTExample, collate_packed, pack
from lmops.models.gpt import GPT
from lmops.models.lora import apply_lora
from lmops.training.sft_module import SFTModule
from lmops.training.trainer import build_trainer
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EOS, PAD = 1, 0


def copy_task(n: int, seed: int) -> list[SFTExample]:
    """Prompt: 3 tokens, then a separator (2); response: the same 3 tokens, then EOS. Only
    the response positions are targets."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = torch.randint(3, 32, (3,), generator=g).tolist()
        seq = [*prompt, 2, *prompt, EOS]
        labels = [-100] * 3 + seq[4:]
        out.append(SFTExample(seq[:-1], labels))
    return out


def loader(n: int, seed: int) -> DataLoader:
    return DataLoader(
        pack(copy_task(n, seed), 28, pad_id=PAD), batch_size=8, collate_fn=collate_packed
    )


def make_module(**cfg) -> SFTModule:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=32, block_size=32, n_layer=2, n_head=2, n_embd=32))
    defaults = {"task": "sft", "max_steps": 200, "lr": 5e-3, "min_lr": 5e-4, "warmup_steps": 10}
    return SFTModule(model, FinetuneConfig(**{**defaults, **cfg}))


def fit(module: SFTModule, tmp_path, precision: str = "32-true", steps: int = 200):
    trainer = build_trainer(
        HW,
        max_steps=steps,
        precision=precision,
        val_every=steps,
        limit_val_batches=1.0,
        grad_clip=1.0,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, loader(400, 1), loader(64, 2))
    return trainer


def test_learns_to_copy_the_prompt_on_packed_rows(tmp_path) -> None:
    module = make_module()
    trainer = fit(module, tmp_path)
    # chance is ln(29) = 3.4 per response token; copying three tokens and an EOS is learnable
    assert trainer.callback_metrics["val/loss"] < 1.5
    assert torch.isclose(
        trainer.callback_metrics["val/ppl"], trainer.callback_metrics["val/loss"].exp()
    )


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_of_the_schema_trains_with_clipping(tmp_path, precision: str) -> None:
    module = make_module()
    trainer = fit(module, tmp_path, precision=precision, steps=3)
    assert trainer.global_step == 3
    assert all(torch.isfinite(p.float()).all() for p in module.parameters())


def test_lora_trains_only_the_adapters(tmp_path) -> None:
    module = make_module(method="lora")
    apply_lora(module.model, ["attn.c_attn", "mlp.c_fc"], rank=2, alpha=4.0)
    frozen = {k: v.clone() for k, v in module.model.state_dict().items() if "lora_" not in k}
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    adapters = {id(p) for n, p in module.model.named_parameters() if "lora_" in n}
    assert in_optimizer == adapters and len(adapters) == 2 * 2 * 2  # 2 layers x 2 targets x A, B
    fit(module, tmp_path, steps=5)
    for k, v in module.model.state_dict().items():
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
