"""A killed fine-tuning run resumes exactly like pretraining does: the resumed run reads the batches
the uninterrupted one read, in the same order, and ends with the same weights (LoRA adapters
included) and metrics, in the same MLflow run."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import lightning as L
import mlflow
import pytest
import torch
from mlflow import MlflowClient
from torch.utils.data import DataLoader, DistributedSampler

import lmops.training.finetuning as finetuning
from lmops.config import FinetuneConfig, LmopsError, LoraConfig, Params
from lmops.data.datamodules import LabeledDataModule, ShuffledTrainData, ShuffleSampler
from lmops.tracking.runs import stage_run
from lmops.training.checkpointing import (
    ResumeCheckpoint,
    ResumePoint,
    finetune_checkpoint_store,
)
from lmops.training.finetuning import FinetuneResult, finetune
from tests.unit.test_bundle import make_lm_bundle
from tests.unit.test_checkpointing import KillAt, Killed
from tests.unit.test_runs import repo  # noqa: F401  (the fixture: git repo + sqlite store)
from tests.unit.tiny import HW

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORDS = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "park", "a", "good"]

TINY = FinetuneConfig(batch_size=4, warmup_steps=2, lr=3e-3, min_lr=3e-4)
# 18 rows in batches of 4: 5 batches an epoch, the last one short. Validation and a checkpoint
# every 3 steps; killed at 8: resumes at 6 (one batch into the second epoch), the checkpoint
# written after that step's validation; dropout in the head, so the random state matters
CLASSIFICATION = replace(
    TINY, task="classification", max_steps=12, max_length=12, dropout=0.1, val_every=3
)
# 12 rows (unpacked) in batches of 4: 3 batches an epoch. A checkpoint every 3 steps is at an
# epoch's end; killed at 7: resumes at 6, where the third epoch starts; LoRA dropout on
SFT_LORA = replace(
    TINY,
    task="sft",
    method="lora",
    lora=LoraConfig(rank=2, alpha=4.0, dropout=0.1),
    max_steps=10,
    max_length=24,
    packing=False,
    prompt_template="{prompt}:",
    val_every=4,
)


@dataclass
class Inputs:
    pretrained: Path
    classification: Path
    sft: Path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    root = tmp_path_factory.mktemp("inputs")
    g = torch.Generator().manual_seed(0)

    def text(n: int) -> str:
        return " ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS), (n,), generator=g))

    def write(folder: Path, make_row) -> Path:
        folder.mkdir()
        for split, n in (("train", 18), ("val", 6)):
            rows = [json.dumps(make_row(i)) for i in range(n)]
            (folder / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
        return folder

    classification = write(root / "cls", lambda i: {"id": str(i), "text": text(5), "label": i % 2})
    (classification / "labels.json").write_text(json.dumps(["neg", "pos"]))
    sft = write(root / "sft", lambda i: {"id": str(i), "prompt": text(3), "response": text(2)})
    # 12 SFT train rows: fewer than the classification set, so that epochs end on a checkpoint
    lines = (sft / "train.jsonl").read_text().splitlines()[:12]
    (sft / "train.jsonl").write_text("\n".join(lines) + "\n")
    return Inputs(make_lm_bundle(root), classification, sft)


def params_for(cfg: FinetuneConfig, every: int) -> Params:
    params = Params()
    params.finetune = cfg
    params.hardware = replace(HW, checkpoint_every=every)
    return params


class RecordBatches(L.Callback):
    """The batch of every step, in order: the data order a run trained on."""

    def __init__(self) -> None:
        self.batches: list[dict[str, torch.Tensor]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batches.append({k: v.clone() for k, v in batch.items()})


def run_finetune(
    params: Params,
    root: Path,
    pretrained: Path,
    labeled: Path,
    *,
    kill_at: int | None = None,
    run: mlflow.ActiveRun | None = None,
) -> tuple[FinetuneResult | None, list[dict[str, torch.Tensor]], ResumePoint]:
    """One attempt of the stage's training, as the stage runs it (a resume point from the
    stage's store); ``kill_at`` stops it like a SIGKILL after that step."""
    record = RecordBatches()
    extra: list[L.Callback] = [record] + ([KillAt(kill_at)] if kill_at is not None else [])
    build = finetuning.build_trainer
    resume = ResumePoint(finetune_checkpoint_store(params, root, pretrained, labeled))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            finetuning,
            "build_trainer",
            lambda *a, callbacks=(), **kw: build(*a, callbacks=[*callbacks, *extra], **kw),
        )
        try:
            result = finetune(params, root, pretrained, labeled, run, resume)
        except Killed:
            return None, record.batches, resume
    return result, record.batches, resume


_uninterrupted: dict[str, tuple[FinetuneResult, list[dict[str, torch.Tensor]]]] = {}


def uninterrupted(
    name: str, params: Params, tmp_path: Path, pretrained: Path, labeled: Path
) -> tuple[FinetuneResult, list[dict[str, torch.Tensor]]]:
    """The run that nothing interrupts (checkpoints written all the same), once per module."""
    if name not in _uninterrupted:
        result, batches, resume = run_finetune(params, tmp_path / "whole", pretrained, labeled)
        assert result is not None and resume.latest is None
        _uninterrupted[name] = result, batches
    return _uninterrupted[name]


def assert_same_run(resumed: FinetuneResult, whole: FinetuneResult) -> None:
    assert resumed.model is not None and whole.model is not None
    expected = whole.model.state_dict()
    for name, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name
    assert resumed.metrics == whole.metrics
    assert resumed.history == whole.history  # the steps before the kill travel in the checkpoint


def assert_same_batches(got: list[dict], expected: list[dict]) -> None:
    assert len(got) == len(expected)
    for step, (a, b) in enumerate(zip(got, expected, strict=True)):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"batch {step}"


# --------------------------------------------------------------------------- exact resume


def test_killed_classification_resumes_exactly_in_the_same_mlflow_run(
    inputs: Inputs,
    tmp_path: Path,
    repo: Path,  # noqa: F811
) -> None:
    params = params_for(CLASSIFICATION, every=3)
    whole, whole_batches = uninterrupted(
        "classification", params, tmp_path, inputs.pretrained, inputs.classification
    )
    args = (params, repo, inputs.pretrained, inputs.classification)

    with pytest.raises(Killed), stage_run("finetune", params, root=repo) as run:
        first = run.info.run_id
        run_finetune(*args, kill_at=8, run=run)
        raise Killed  # the stage's run ends as a killed process leaves it: not finished
    store = finetune_checkpoint_store(*args)
    assert store is not None and store.latest() == (store.dir / "step-00000006.ckpt", 6)
    state = torch.load(store.dir / "step-00000006.ckpt", weights_only=True)
    # one batch of 4 into the second epoch of 18 rows
    assert state["LabeledDataModule"] == {"consumed_samples": 22, "seed": CLASSIFICATION.seed}

    resume = ResumePoint(store)
    assert resume.run_id == first
    with stage_run("finetune", params, root=repo, resume_run_id=resume.run_id) as run:
        assert run.info.run_id == first
        resumed, batches, resume = run_finetune(*args, run=run)
    assert resume.latest is not None and resume.latest[1] == 6

    assert resumed is not None
    assert_same_run(resumed, whole)
    assert_same_batches(batches, whole_batches[6:])
    (only,) = MlflowClient().search_runs([run.info.experiment_id])
    assert only.info.run_id == first and only.info.status == "FINISHED"
    assert only.data.tags["lmops.resumed_from_step"] == "6"
    resume.finish()  # the stage's outputs are written
    assert not store.dir.exists()


def test_killed_sft_lora_resumes_exactly_with_the_same_adapters(
    inputs: Inputs, tmp_path: Path
) -> None:
    params = params_for(SFT_LORA, every=3)
    whole, whole_batches = uninterrupted("sft", params, tmp_path, inputs.pretrained, inputs.sft)
    root = tmp_path / "killed"
    args = (params, root, inputs.pretrained, inputs.sft)

    killed, _, resume = run_finetune(*args, kill_at=7)
    assert killed is None and resume.store is not None
    path, step = resume.store.latest() or (None, None)
    assert step == 6
    state = torch.load(path, weights_only=True)
    # LoRA is applied before the optimizer is built: the checkpoint holds the adapters
    assert any(k.endswith(".lora_a") for k in state["state_dict"])
    assert state["SFTDataModule"]["consumed_samples"] == 2 * 12  # two whole epochs

    resumed, batches, resume = run_finetune(*args)
    assert resume.latest is not None and resume.latest[1] == 6
    assert resumed is not None and resumed.adapter is not None and whole.adapter is not None
    assert resumed.adapter.keys() == whole.adapter.keys()
    for name, tensor in whole.adapter.items():
        assert torch.equal(resumed.adapter[name], tensor), name
    assert_same_run(resumed, whole)  # the merged model too
    assert_same_batches(batches, whole_batches[6:])


@pytest.mark.parametrize(
    "ingredient",
    [
        pytest.param((ShuffledTrainData, "load_state_dict"), id="data-position"),
        pytest.param((ResumeCheckpoint, "load_state_dict"), id="random-state"),
    ],
)
def test_resume_without_an_ingredient_would_differ(
    inputs: Inputs, tmp_path: Path, ingredient: tuple[type, str]
) -> None:
    """The exactness tests above are sensitive: drop one ingredient and the weights differ."""
    params = params_for(CLASSIFICATION, every=3)
    whole, _ = uninterrupted(
        "classification", params, tmp_path, inputs.pretrained, inputs.classification
    )
    args = (params, tmp_path / "killed", inputs.pretrained, inputs.classification)
    run_finetune(*args, kill_at=8)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(*ingredient, lambda self, state: None)
        resumed, _, _ = run_finetune(*args)
    assert resumed is not None and resumed.model is not None and whole.model is not None
    expected = whole.model.state_dict()
    assert not all(torch.equal(v, expected[k]) for k, v in resumed.model.state_dict().items())


# --------------------------------------------------------------------------- data order


def epochs_of(sampler: ShuffleSampler, epochs: range) -> list[list[int]]:
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append(list(sampler))
    return out


@pytest.mark.parametrize("n", [18, 5])
def test_shuffle_order_is_the_seeded_shuffling_loaders(n: int) -> None:
    """A fresh run reads its rows in the order fine-tuning always used: that of a DataLoader
    shuffling with a seeded generator, epoch after epoch."""
    rows = list(range(n))
    loader = DataLoader(
        rows, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3)
    )
    expected = [[i for batch in loader for i in batch.tolist()] for _ in range(4)]
    assert epochs_of(ShuffleSampler(rows, seed=3), range(4)) == expected
    assert len({tuple(e) for e in expected}) == 4  # reshuffled every epoch


def test_shuffle_order_with_several_processes_is_lightnings_distributed_one() -> None:
    rows = list(range(11))
    for rank in (0, 1):
        ours = ShuffleSampler(rows, seed=5, num_replicas=2, rank=rank)
        theirs = DistributedSampler(rows, num_replicas=2, rank=rank, shuffle=True, seed=5)
        for epoch in range(3):
            theirs.set_epoch(epoch)
            assert epochs_of(ours, range(epoch, epoch + 1)) == [list(theirs)]


@pytest.mark.parametrize("num_replicas", [1, 2])
def test_a_resumed_sampler_continues_where_the_interrupted_one_was(num_replicas: int) -> None:
    rows = list(range(18))
    whole = [
        epochs_of(ShuffleSampler(rows, 9, num_replicas, rank), range(4))
        for rank in range(num_replicas)
    ]
    per_epoch = ShuffleSampler(rows, 9, num_replicas).total_size
    for consumed in range(0, 3 * per_epoch + 1, num_replicas):
        epoch, skip = divmod(consumed, per_epoch)
        for rank in range(num_replicas):
            resumed = ShuffleSampler(rows, 9, num_replicas, rank, consumed=consumed)
            assert resumed.epoch == epoch
            got = epochs_of(resumed, range(epoch, 4))
            assert got[0] == whole[rank][epoch][skip // num_replicas :]
            assert got[1:] == whole[rank][epoch + 1 :]


def test_consumed_samples_count_an_epochs_short_last_batch() -> None:
    sampler = ShuffleSampler(list(range(18)), seed=0)
    assert sampler.consumed(epoch=0, batches=1, batch_size=4) == 4
    assert sampler.consumed(epoch=0, batches=5, batch_size=4) == 18  # 4 + 4 + 4 + 4 + 2
    assert sampler.consumed(epoch=2, batches=3, batch_size=4) == 2 * 18 + 12
    two = ShuffleSampler(list(range(11)), seed=0, num_replicas=2)  # 6 a rank, one padded
    assert two.consumed(epoch=1, batches=2, batch_size=4) == 12 + 12
    with pytest.raises(ValueError):
        ShuffleSampler(list(range(11)), seed=0, num_replicas=2, consumed=3)


def test_checkpoints_off_write_nothing(inputs: Inputs, tmp_path: Path) -> None:
    params = params_for(replace(SFT_LORA, max_steps=2, val_every=2), every=0)
    result, _, resume = run_finetune(params, tmp_path, inputs.pretrained, inputs.sft)
    assert result is not None and resume.store is None and resume.latest is None
    assert not (tmp_path / ".lmops" / "finetune" / "checkpoints").exists()


def test_train_loaders_carry_their_position_and_draw_no_global_randomness(inputs: Inputs) -> None:
    def module(seed: int = 11) -> LabeledDataModule:
        tokenizer = inputs.pretrained / "tokenizer.json"
        return LabeledDataModule(
            inputs.classification, tokenizer, max_length=12, batch_size=4, pad_id=0, seed=seed
        )

    whole = [b["input_ids"] for b in module().train_dataloader()]
    resumed = module()
    resumed.load_state_dict({"consumed_samples": 8, "seed": 11})
    assert resumed.state_dict() == {"consumed_samples": 8, "seed": 11}  # not training yet
    again = [b["input_ids"] for b in resumed.train_dataloader()]
    assert len(again) == len(whole) - 2
    assert all(torch.equal(a, b) for a, b in zip(again, whole[2:], strict=True))
    with pytest.raises(LmopsError, match="seed"):
        module().load_state_dict({"consumed_samples": 8, "seed": 12})
    # making and reading the train loader draws nothing from the global RNG (dropout's)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    list(module().train_dataloader())
    assert torch.equal(state, torch.get_rng_state())
