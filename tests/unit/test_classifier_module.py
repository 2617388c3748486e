"""ClassifierModule: learns a separable toy task, logs val/test metrics, freezes the backbone."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from lmops.config import PRECISIONS, FinetuneConfig, LmopsError, ModelConfig
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier
from lmops.training.callbacks import MetricHistory
from lmops.training.classifier_module import ClassifierModule
from lmops.training.trainer import build_trainer
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAD = 0


class LastTokenTask(Dataset):
    """Label 1 when the last real token is >= 32. Rows are right-padded with PAD to length 12,
    so a model that pools the wrong position (padding, first token) stays at chance."""

    def __init__(self, n: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.lengths = torch.randint(2, 13, (n,), generator=g)
        self.ids = torch.randint(1, 64, (n, 12), generator=g)
        self.ids[torch.arange(12)[None, :] >= self.lengths[:, None]] = PAD
        last = self.ids[torch.arange(n), self.lengths - 1]
        self.labels = (last >= 32).long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "lengths": self.lengths[i], "labels": self.labels[i]}


def make_module(**cfg) -> ClassifierModule:
    torch.manual_seed(0)
    backbone = GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    defaults = {"max_steps": 40, "lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5, "dropout": 0.1}
    defaults.update(cfg)
    finetune = FinetuneConfig(**defaults)
    return ClassifierModule(SequenceClassifier(backbone, 2, finetune.dropout), finetune, 2)


def fit(module: ClassifierModule, tmp_path, callbacks=(), max_steps: int = 40) -> MetricHistory:
    L.seed_everything(0)
    history = MetricHistory()
    trainer = build_trainer(
        HW,
        max_steps=max_steps,
        precision="32-true",
        val_every=20,
        limit_val_batches=1.0,
        grad_clip=1.0,
        accumulate=1,
        default_root_dir=tmp_path,
        callbacks=[history, *callbacks],
    )
    train = DataLoader(LastTokenTask(2000, seed=1), batch_size=32, shuffle=True)
    val = DataLoader(LastTokenTask(256, seed=2), batch_size=64)
    trainer.fit(module, train, val)
    return history


def test_learns_a_separable_task_above_chance(tmp_path) -> None:
    module = make_module()
    history = fit(module, tmp_path)
    acc = history.series("val/acc")
    assert [s for s, _ in acc] == [20, 40]
    assert acc[-1][1] > 0.9
    assert history.series("val/f1")[-1][1] > 0.9
    val_loss = history.series("val/loss")
    assert val_loss[-1][1] < 0.5  # ln 2 = 0.69 is chance
    assert len(history.series("train/loss")) == 40

    trainer = build_trainer(
        HW,
        max_steps=1,
        precision="32-true",
        val_every=1,
        limit_val_batches=1.0,
        grad_clip=0.0,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    test = DataLoader(LastTokenTask(256, seed=3), batch_size=64)
    (result,) = trainer.test(module, test, verbose=False)
    assert result["test/acc"] > 0.9
    assert {"test/loss", "test/acc", "test/f1"} <= set(result)
    probs = torch.cat(trainer.predict(module, test))
    assert probs.shape == (256, 2)
    torch.testing.assert_close(probs.sum(-1), torch.ones(256))


class ModeProbe(Callback):
    """Records whether the frozen backbone and the head's dropout are in train mode per step."""

    def __init__(self) -> None:
        self.backbone_training: list[bool] = []
        self.dropout_training: list[bool] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.backbone_training.append(pl_module.model.backbone.training)
        self.dropout_training.append(pl_module.model.dropout.training)


def test_freeze_backbone_trains_only_the_head(tmp_path) -> None:
    module = make_module(freeze_backbone=True, lr=1e-2)
    backbone_before = {k: v.clone() for k, v in module.model.backbone.state_dict().items()}
    head_before = module.model.head.weight.clone()
    optimizer = module.configure_optimizers()["optimizer"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {
        id(module.model.head.weight),
        id(module.model.head.bias),
    }
    probe = ModeProbe()
    fit(module, tmp_path, callbacks=[probe], max_steps=25)  # validation at step 20 in between
    for k, v in module.model.backbone.state_dict().items():
        torch.testing.assert_close(v, backbone_before[k], rtol=0, atol=0)
    assert not torch.equal(module.model.head.weight, head_before)
    assert probe.backbone_training == [False] * 25
    assert probe.dropout_training == [True] * 25


def test_label_count_mismatch_is_a_clear_error() -> None:
    backbone = GPT(ModelConfig(vocab_size=64, block_size=16, n_layer=1, n_head=1, n_embd=16))
    with pytest.raises(LmopsError, match="labels"):
        ClassifierModule(SequenceClassifier(backbone, 3), FinetuneConfig(), num_labels=2)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_every_precision_of_the_schema_trains_with_clipping(tmp_path, precision: str) -> None:
    """finetune.precision bf16-mixed / 16-mixed with the default grad_clip used to end in
    Lightning's "does not allow for gradient clipping" traceback: the shared base clips."""
    module = make_module(max_steps=3)
    trainer = build_trainer(
        HW,
        max_steps=3,
        precision=precision,
        val_every=1000,
        limit_val_batches=0,
        grad_clip=FinetuneConfig().grad_clip,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    before = module.model.head.weight.detach().float().clone()
    trainer.fit(module, DataLoader(LastTokenTask(64, seed=1), batch_size=8))
    assert trainer.global_step == 3
    assert all(torch.isfinite(p.float()).all() for p in module.parameters())
    assert not torch.equal(module.model.head.weight.detach().float(), before)


def test_freeze_layers_keeps_embeddings_and_lower_blocks(tmp_path) -> None:
    module = make_module(freeze_layers=1, lr=1e-2)
    backbone = module.model.backbone
    frozen = {
        k: v.clone()
        for k, v in backbone.state_dict().items()
        if k.startswith(("transformer.wte", "transformer.wpe", "transformer.h.0."))
    }
    top_before = backbone.transformer.h[1].mlp.c_fc.weight.clone()
    fit(module, tmp_path, max_steps=5)
    for k, v in backbone.state_dict().items():
        if k in frozen:
            torch.testing.assert_close(v, frozen[k], rtol=0, atol=0)
    assert not torch.equal(backbone.transformer.h[1].mlp.c_fc.weight, top_before)
    with pytest.raises(LmopsError, match="freeze_layers is 5 but the model has 2 blocks"):
        make_module(freeze_layers=5)


def test_backbone_learns_at_a_scaled_rate(tmp_path) -> None:
    module = make_module(lr=1e-3, backbone_lr_scale=0.1)
    backbone = {id(p) for p in module.model.backbone.parameters()}
    rates = {
        id(p): g["initial_lr"]  # "lr" is already scaled by the warmup
        for g in module.configure_optimizers()["optimizer"].param_groups
        for p in g["params"]
    }
    assert sorted({rates[i] for i in rates if i in backbone}) == pytest.approx([1e-4])
    assert sorted({rates[i] for i in rates if i not in backbone}) == pytest.approx([1e-3])
