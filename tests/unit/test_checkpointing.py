"""Resume checkpoints: atomic store, stale-checkpoint handling, stores keyed by what decides a
stage's result, and exact resume of a GPT run (fine-tuning's: test_finetune_resume.py)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from lmops.config import HardwareConfig, ModelConfig, Params, PretrainConfig
from lmops.data.datamodules import TokenDataModule
from lmops.training.callbacks import MetricHistory
from lmops.training.checkpointing import (
    CheckpointStore,
    ResumeCheckpoint,
    ResumePoint,
    checkpoint_key,
    finetune_checkpoint_store,
    pretrain_checkpoint_store,
)
from lmops.training.lm_module import CausalLMModule
from lmops.training.trainer import build_trainer
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# dropout on, so the RNG state matters; two micro-batches per step, so the data position does
CFG = PretrainConfig(
    model=ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, dropout=0.1),
    max_steps=12,
    batch_size=8,
    micro_batch_size=4,
    warmup_steps=2,
    val_every=4,
    val_batches=2,
)
ACCUM = CFG.batch_size // CFG.micro_batch_size


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("tokens")
    rng = np.random.default_rng(0)
    rng.integers(0, 60, 4000).astype(np.uint16).tofile(d / "train.bin")
    rng.integers(0, 60, 600).astype(np.uint16).tofile(d / "val.bin")
    (d / "meta.json").write_text(json.dumps({"dtype": "uint16"}))
    return d


class Killed(Exception):
    """Stands in for a SIGKILL: the run stops between two steps without any clean-up."""


class KillAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            raise Killed


class CountValidations(L.Callback):
    """A callback with state: how many validations it saw (checkpointed like early stopping)."""

    def __init__(self) -> None:
        self.count = 0

    def on_validation_end(self, trainer, pl_module) -> None:
        self.count += 1

    def state_dict(self) -> dict:
        return {"count": self.count}

    def load_state_dict(self, state_dict: dict) -> None:
        self.count = state_dict["count"]


def train(
    tokens: Path,
    store: CheckpointStore,
    every: int,
    *,
    kill_at: int | None = None,
    resume: bool = False,
) -> tuple[dict[str, torch.Tensor] | None, MetricHistory, CountValidations]:
    L.seed_everything(CFG.seed, verbose=False)
    module = CausalLMModule(replace(CFG.model, vocab_size=64), CFG)
    data = TokenDataModule(
        tokens,
        block_size=CFG.model.block_size,
        batch_size=CFG.micro_batch_size,
        seed=CFG.seed,
        train_samples=CFG.max_steps * CFG.batch_size,
        val_samples=8,
    )
    history, validations = MetricHistory(), CountValidations()
    callbacks = [history, validations, ResumeCheckpoint(store, every, CFG.val_every)]
    if kill_at is not None:
        callbacks.append(KillAt(kill_at))
    trainer = build_trainer(
        HW,
        max_steps=CFG.max_steps,
        precision="32-true",
        val_every=CFG.val_every,
        limit_val_batches=CFG.val_batches,
        grad_clip=1.0,
        accumulate=ACCUM,
        default_root_dir=store.base,
        callbacks=callbacks,
        enable_checkpointing=True,
    )
    latest = store.latest() if resume else None
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(latest[0]) if latest else None)
    except Killed:
        return None, history, validations
    return module.model.state_dict(), history, validations


# checkpoint every 3 steps, killed at 7: resumes at 6, saved right after a training step;
# every 4 steps, killed at 10: resumes at 8, saved after that step's validation
@pytest.mark.parametrize(("every", "kill_at", "resume_step"), [(3, 7, 6), (4, 10, 8)])
def test_resume_after_a_kill_ends_exactly_like_an_uninterrupted_run(
    tokens: Path, tmp_path: Path, every: int, kill_at: int, resume_step: int
) -> None:
    whole, whole_history, whole_validations = train(
        tokens, CheckpointStore(tmp_path / "a", "k"), every
    )

    store = CheckpointStore(tmp_path / "b", "k")
    store.prepare()
    killed, _, _ = train(tokens, store, every, kill_at=kill_at)
    assert killed is None
    assert store.latest() == (store.dir / f"step-{resume_step:08d}.ckpt", resume_step)
    resumed, history, validations = train(tokens, store, every, resume=True)

    assert resumed is not None and whole is not None
    for name, tensor in whole.items():
        assert torch.equal(tensor, resumed[name]), name
    # the history carried in the checkpoint plus the resumed steps: every step once
    assert [s for s, _ in history.series("train/loss")] == list(range(1, CFG.max_steps + 1))
    assert [s for s, _ in history.series("train/loss")] == [
        s for s, _ in whole_history.series("train/loss")
    ]
    # the validation at the checkpoint step was neither lost nor repeated
    assert validations.count == whole_validations.count == CFG.max_steps // CFG.val_every
    assert history.series("val/loss")[-1] == whole_history.series("val/loss")[-1]


def test_resume_without_the_data_position_would_differ(
    tokens: Path, tmp_path: Path, monkeypatch
) -> None:
    """The exactness test above is sensitive: drop one ingredient and the weights differ."""
    whole, _, _ = train(tokens, CheckpointStore(tmp_path / "a", "k"), 3)
    store = CheckpointStore(tmp_path / "b", "k")
    store.prepare()
    train(tokens, store, 3, kill_at=7)
    monkeypatch.setattr(TokenDataModule, "load_state_dict", lambda self, state: None)
    resumed, _, _ = train(tokens, store, 3, resume=True)
    assert whole is not None and resumed is not None
    assert not all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_only_the_newest_complete_checkpoint_is_kept(tokens: Path, tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path / "ckpt", "k")
    store.prepare()
    train(tokens, store, 2, kill_at=5)
    assert sorted(p.name for p in store.dir.iterdir()) == ["latest.json", "step-00000004.ckpt"]
    state = torch.load(store.dir / "step-00000004.ckpt", weights_only=True)
    assert state["global_step"] == 4
    assert state["TokenDataModule"]["consumed_samples"] == 4 * CFG.batch_size
    assert {"optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(state)


def test_store_discards_stale_and_half_written_checkpoints(tmp_path: Path) -> None:
    base = tmp_path / "checkpoints"
    stale = base / "0123456789abcdef"
    stale.mkdir(parents=True)
    (stale / "step-00000010.ckpt").write_bytes(b"old params")
    store = CheckpointStore(base, checkpoint_key({"lr": 0.001}, "tokens-sha"))
    assert store.key != checkpoint_key({"lr": 0.002}, "tokens-sha")
    assert store.key == checkpoint_key({"lr": 0.001}, "tokens-sha")
    store.dir.mkdir(parents=True)
    (store.dir / ".tmp-step-00000020.ckpt").write_bytes(b"half")  # killed while writing
    store.prepare()
    assert not stale.exists()
    assert list(store.dir.iterdir()) == []
    assert store.latest() is None

    (store.dir / "step-00000020.ckpt").write_bytes(b"x")
    (store.dir / "latest.json").write_text(json.dumps({"name": "step-00000020.ckpt", "step": 20}))
    assert store.latest() == (store.dir / "step-00000020.ckpt", 20)
    (store.dir / "latest.json").write_text("{not json")
    assert store.latest() is None  # unreadable pointer: start over rather than crash

    assert store.run_id() is None
    store.save_run_id("abc123")
    assert store.run_id() == "abc123"
    store.clear()
    assert not base.exists()


def test_resume_checkpoint_rejects_bad_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        ResumeCheckpoint(CheckpointStore(tmp_path, "k"), 0, None)


def test_stage_checkpoints_are_keyed_by_what_decides_the_result(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json"):
        (tokens / name).write_text(name)

    def key(**hardware) -> str:
        params = Params()
        params.hardware = HardwareConfig(**{"accelerator": "cpu", "devices": "1", **hardware})
        store = pretrain_checkpoint_store(params, tmp_path, tokens)
        assert store is not None and store.base == tmp_path / ".lmops/pretrain/checkpoints"
        return store.key

    base = key()
    # how it runs, not what it computes: same checkpoints
    assert key(checkpoint_every=7, num_workers=2, progress_bar=False) == base
    (tokens / "run.json").write_text("another tokenize run, same tokens")
    assert key() == base
    # another layout of processes or checkpoint files: another folder
    assert key(devices="2") != base
    assert key(strategy="fsdp") != key(strategy="fsdp", fsdp_checkpoint="full")
    # other params or other tokens: another folder
    params = Params()
    params.pretrain.lr = 0.002
    params.hardware = HardwareConfig(accelerator="cpu", devices="1")
    assert pretrain_checkpoint_store(params, tmp_path, tokens).key != base
    (tokens / "train.bin").write_text("other tokens")
    assert key() != base
    params.hardware.checkpoint_every = 0
    assert pretrain_checkpoint_store(params, tmp_path, tokens) is None


def test_finetune_checkpoints_are_keyed_by_what_decides_the_result(tmp_path: Path) -> None:
    pretrained, labeled = tmp_path / "pretrain" / "model", tmp_path / "clean" / "labeled"
    for folder, names in (
        (pretrained, ("model.safetensors", "config.json", "tokenizer.json")),
        (labeled, ("train.jsonl", "val.jsonl", "labels.json")),
    ):
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_text(name)

    def store(params: Params) -> CheckpointStore | None:
        return finetune_checkpoint_store(params, tmp_path, pretrained, labeled)

    def params(**finetune) -> Params:
        p = Params()
        p.hardware = HardwareConfig(accelerator="cpu", devices="1")
        p.finetune = replace(p.finetune, **finetune)
        return p

    base = store(params())
    assert base is not None and base.base == tmp_path / ".lmops/finetune/checkpoints"
    # how it runs, not what it computes: same checkpoints
    fast = params()
    fast.hardware = HardwareConfig(
        accelerator="cpu", devices="1", num_workers=2, checkpoint_every=7
    )
    assert store(fast).key == base.key
    (labeled / "run.json").write_text("another clean run, same rows")
    assert store(params()).key == base.key
    # other finetune params (LoRA's too), other data, another model or layout: another folder
    assert store(params(lr=0.002)).key != base.key
    assert store(params(method="lora")).key != base.key
    lora = params(method="lora")
    lora.finetune.lora.rank = 4
    assert store(lora).key != store(params(method="lora")).key
    other_layout = params()
    other_layout.hardware = HardwareConfig(accelerator="cpu", devices="2")
    assert store(other_layout).key != base.key
    (labeled / "train.jsonl").write_text("other rows")
    changed_data = store(params()).key
    assert changed_data != base.key
    (pretrained / "model.safetensors").write_text("other weights")
    assert store(params()).key not in (base.key, changed_data)
    # nothing to checkpoint
    off = params()
    off.hardware.checkpoint_every = 0
    assert store(off) is None
    assert store(params(task="none")) is None


def test_resume_point_never_resumes_a_checkpoint_of_other_params(tmp_path: Path) -> None:
    base = tmp_path / "checkpoints"
    old = CheckpointStore(base, checkpoint_key({"lr": 0.001}))
    old.prepare()
    (old.dir / "step-00000006.ckpt").write_bytes(b"x")
    (old.dir / "latest.json").write_text(json.dumps({"name": "step-00000006.ckpt", "step": 6}))
    old.save_run_id("run-of-the-killed-attempt")

    again = ResumePoint(CheckpointStore(base, old.key))  # same params: resumes, same run
    assert again.latest == (old.dir / "step-00000006.ckpt", 6)
    assert again.ckpt_path == str(old.dir / "step-00000006.ckpt")
    assert again.run_id == "run-of-the-killed-attempt"
    assert [type(c) for c in again.callbacks(3, None)] == [ResumeCheckpoint]

    other = ResumePoint(CheckpointStore(base, checkpoint_key({"lr": 0.002})))
    assert other.latest is None and other.ckpt_path is None and other.run_id is None
    assert not old.dir.exists()  # discarded, not resumed
    other.finish()
    assert not base.exists()

    off = ResumePoint(None)
    assert off.latest is None and off.run_id is None and off.callbacks(3, None) == []
    off.finish()
