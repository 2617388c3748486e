"""hardware.strategy → Lightning strategy, ranks and threads from the launcher's environment,
and per-rank data windows. Real multi-process training is in tests/e2e/test_distributed.py."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.strategies import ModelParallelStrategy

from lmops.config import HardwareConfig, LmopsError
from lmops.data.datamodules import TokenDataModule, WindowSampler
from lmops.training import strategies
from lmops.training.strategies import (
    ShardGPT,
    build_strategy,
    configure_threads,
    env_is_global_zero,
    parallelize_for,
)
from lmops.training.trainer import build_trainer

LAUNCHER_VARS = (
    "RANK",
    "LOCAL_RANK",
    "NODE_RANK",
    "GROUP_RANK",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
    "LOCAL_WORLD_SIZE",
    "TORCHELASTIC_RUN_ID",
    "LMOPS_NUM_THREADS",
    "OMP_NUM_THREADS",  # configure_threads sets it: restored after each test
    "WORLD_SIZE",
)


def hw(**changes) -> HardwareConfig:
    values = {"accelerator": "cpu", "devices": "1", "progress_bar": False}
    values.update(changes)
    return HardwareConfig(**values)


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCHER_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_auto_and_ddp_map_to_lightnings_names() -> None:
    assert build_strategy(hw()) == "auto"
    assert build_strategy(hw(strategy="ddp", devices="2")) == "ddp"
    assert parallelize_for(hw(strategy="ddp")) is None


@pytest.mark.parametrize(("layout", "distributed"), [("sharded", True), ("full", False)])
def test_fsdp_is_fsdp2_over_a_data_parallel_mesh_of_every_process(layout, distributed) -> None:
    strategy = build_strategy(hw(strategy="fsdp", devices="2", num_nodes=3, fsdp_checkpoint=layout))
    assert isinstance(strategy, ModelParallelStrategy)
    assert strategy._data_parallel_size == 6  # every process shards the model ...
    assert strategy._tensor_parallel_size == 1  # ... and none splits a matmul
    assert strategy._save_distributed_checkpoint is distributed
    assert isinstance(parallelize_for(hw(strategy="fsdp")), ShardGPT)


def test_fsdp_trainer_and_its_precision_limits(tmp_path) -> None:
    kwargs = dict(
        max_steps=1,
        val_every=1,
        limit_val_batches=1,
        grad_clip=0.0,
        accumulate=1,
        default_root_dir=tmp_path,
    )
    trainer = build_trainer(hw(strategy="fsdp"), precision="32-true", **kwargs)
    assert isinstance(trainer.strategy, ModelParallelStrategy)
    with pytest.raises(LmopsError, match="16-mixed.*bf16-mixed"):
        build_trainer(hw(strategy="fsdp"), precision="16-mixed", **kwargs)


def test_deepspeed_missing_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(strategies.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LmopsError, match=r"pip install 'lmops\[deepspeed\]'"):
        build_strategy(hw(strategy="deepspeed", accelerator="gpu"))


def test_deepspeed_refuses_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(strategies.importlib.util, "find_spec", lambda name: object())
    with pytest.raises(LmopsError, match="CUDA GPUs only"):
        build_strategy(hw(strategy="deepspeed"))


def test_launcher_process_count_must_match_devices_and_nodes(clean_env) -> None:
    clean_env.setenv("WORLD_SIZE", "4")  # e.g. torchrun --nnodes 2 --nproc-per-node 2
    assert build_strategy(hw(strategy="ddp", devices="2", num_nodes=2)) == "ddp"
    with pytest.raises(LmopsError, match="4 processes.*hardware.devices x hardware.num_nodes is 2"):
        build_strategy(hw(strategy="ddp", devices="2"))


def test_unknown_strategy_is_a_user_error() -> None:
    with pytest.raises(LmopsError, match="hardware.strategy"):
        build_strategy(hw(strategy="horovod"))


@pytest.mark.parametrize(
    ("env", "zero"),
    [
        ({}, True),  # a plain `python pipeline/pretrain.py`: Lightning's launching process
        ({"LOCAL_RANK": "1"}, False),  # a rank Lightning's launcher started
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),  # rank 0 of the second node
        ({"NODE_RANK": "1"}, False),  # the launching process on the second node
        ({"RANK": "0", "LOCAL_RANK": "0"}, True),  # torchrun
        ({"RANK": "3", "LOCAL_RANK": "1"}, False),
        ({"SLURM_PROCID": "0", "SLURM_NTASKS": "4"}, True),  # srun
        ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4"}, False),
    ],
)
def test_global_zero_from_the_launchers_environment(clean_env, env, zero) -> None:
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert env_is_global_zero() is zero


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_per_process_under_torchrun(clean_env, restore_threads) -> None:
    clean_env.setattr(strategies, "_cpus", lambda: 8)
    clean_env.setenv("OMP_NUM_THREADS", "1")  # what torchrun sets for several processes
    assert configure_threads() is None  # no outside launcher: Lightning's defaults stay
    clean_env.setenv("TORCHELASTIC_RUN_ID", "x")
    clean_env.setenv("LOCAL_WORLD_SIZE", "4")
    assert configure_threads() == 2 == torch.get_num_threads()
    clean_env.setenv("LOCAL_WORLD_SIZE", "16")
    assert configure_threads() == 1  # never zero
    clean_env.setenv("LMOPS_NUM_THREADS", "3")
    assert configure_threads() == 3 == torch.get_num_threads()


def test_threads_per_task_under_slurm(clean_env, restore_threads) -> None:
    clean_env.setenv("SLURM_NTASKS", "8")
    clean_env.setenv("SLURM_CPUS_PER_TASK", "2")
    assert configure_threads() == 2


# --------------------------------------------------------------------------- data windows


@pytest.mark.parametrize(("world", "micro"), [(1, 8), (2, 4), (2, 2), (4, 2), (4, 1)])
def test_each_step_reads_the_same_global_batch_whatever_the_layout(world, micro) -> None:
    """Global batch 8 over ``world`` ranks with ``micro``-sized micro-batches: the windows of
    step s are samples [8s, 8s+8) in every layout, and no two ranks share one."""
    batch, steps = 8, 5
    dataset = list(range(batch * steps))
    accum = batch // (micro * world)
    per_rank = [list(WindowSampler(dataset, world, r)) for r in range(world)]
    for r in range(1, world):
        assert not set(per_rank[0]) & set(per_rank[r])
    per_step = micro * accum
    for s in range(steps):
        seen = sorted(i for rank in per_rank for i in rank[s * per_step : (s + 1) * per_step])
        assert seen == list(range(s * batch, (s + 1) * batch))


def test_sampler_resumes_mid_run_and_keeps_its_length() -> None:
    full = list(WindowSampler(list(range(40)), 2, 1))
    resumed = WindowSampler(list(range(40)), 2, 1, start=16)
    assert list(resumed) == full[8:]
    assert len(resumed) == len(full) == 20  # Lightning counts the consumed batches itself
    with pytest.raises(ValueError):
        WindowSampler(list(range(40)), 2, 0, start=3)


def test_datamodule_carries_its_position_in_a_checkpoint(tmp_path: Path) -> None:
    np.arange(3000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(500, dtype=np.uint16).tofile(tmp_path / "val.bin")
    (tmp_path / "meta.json").write_text(json.dumps({"dtype": "uint16"}))

    def module() -> TokenDataModule:
        return TokenDataModule(tmp_path, 16, 4, seed=7, train_samples=40, val_samples=8)

    batches = list(module().train_dataloader())
    resumed = module()
    resumed.load_state_dict({"consumed_samples": 12, "seed": 7})
    again = list(resumed.train_dataloader())
    assert len(again) == len(batches) - 3
    for (x, y), (x2, y2) in zip(batches[3:], again, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    with pytest.raises(LmopsError, match="seed"):
        module().load_state_dict({"consumed_samples": 12, "seed": 8})
    # making a loader draws nothing from the global RNG (dropout stays aligned on resume)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    iter(module().train_dataloader())
    iter(module().val_dataloader())
    assert torch.equal(state, torch.get_rng_state())
