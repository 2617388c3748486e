"""How a training run spreads over processes: ``hardware.strategy`` as a Lightning strategy,
FSDP2 sharding of the GPT, ranks and threads.

The strategies, from the simplest:

- ``auto``: one process (one GPU or the CPU); Lightning picks the device.
- ``ddp``: one process per device, each holding the whole model; gradients averaged.
- ``fsdp``: FSDP2 (``torch.distributed.fsdp.fully_shard``) through Lightning's
  ``ModelParallelStrategy`` with a data-parallel mesh over every process: each rank holds
  1/world of every parameter, gradient and optimizer state. Sharding is applied per transformer
  block and on the root by :func:`shard_gpt`, called from the LightningModule's
  ``configure_model``. Unlike Lightning's classic ``strategy="fsdp"`` (FSDP1, refuses the CPU),
  it also runs on CPU processes with gloo, so CI tests real sharding.
- ``deepspeed``: ZeRO stage ``hardware.deepspeed_stage``, 1 or 2 (optional extra, CUDA only);
  every rank keeps the whole model, so export and best-weights copies work as under DDP.
  Sharding the parameters too is what ``fsdp`` is for.

Multi-node runs (``hardware.num_nodes``) need no code of their own: Lightning detects torchrun
(TorchElastic) and SLURM from their environment variables.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import torch
from lightning.pytorch.strategies import Strategy

from lmops.config import STRATEGIES, HardwareConfig, LmopsError

__all__ = [
    "ShardGPT",
    "build_strategy",
    "check_world_size",
    "configure_threads",
    "env_is_global_zero",
    "expected_world_size",
    "full_state_dict",
    "is_sharded",
    "load_full_state_dict",
    "parallelize_for",
    "resolve_devices",
    "shard_gpt",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- devices and ranks


def resolve_devices(hw: HardwareConfig) -> int | list[int] | str:
    """``hardware.devices`` as Lightning wants it: "auto", a count (-1 = all), or device indices."""
    text = str(hw.devices).strip()
    if text == "auto":
        return "auto"
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        count = int(text)
    except ValueError:
        raise LmopsError(
            f"hardware.devices is {hw.devices!r}; use auto, a count like 2, or indices like 0,1"
        ) from None
    if count == 0 or count < -1:
        raise LmopsError(f"hardware.devices is {count}; use a count >= 1, -1 for all, or auto")
    return count


def _on_gpu(hw: HardwareConfig) -> bool:
    return hw.accelerator in ("gpu", "cuda") or (
        hw.accelerator == "auto" and torch.cuda.is_available()
    )


def expected_world_size(hw: HardwareConfig) -> int:
    """Processes Lightning will start for ``hw``, known before the Trainer exists, so the
    gradient accumulation (a Trainer argument) can be derived from the global batch size."""
    devices = resolve_devices(hw)
    if isinstance(devices, list):
        per_node = len(devices)
    elif devices in ("auto", -1):
        # Lightning's "auto" means all GPUs, but one process on CPU
        per_node = max(1, torch.cuda.device_count()) if _on_gpu(hw) else 1
    else:
        per_node = int(devices)
    return per_node * hw.num_nodes


def env_is_global_zero() -> bool:
    """Whether this process is global rank 0, from the launcher's environment variables, before
    any process group exists (the stage scripts let only rank 0 open the MLflow run and write
    the outputs; every rank trains).

    torchrun sets ``RANK``; Lightning's own launcher starts ranks > 0 with ``LOCAL_RANK`` (and
    the user's ``NODE_RANK`` on other nodes); srun sets ``SLURM_PROCID`` per task. Checked in
    Lightning's order: ``SLURM_PROCID`` is also set in a single-task allocation that Lightning
    itself launches from.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    node_rank = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")))
    if "LOCAL_RANK" in env:
        return int(env["LOCAL_RANK"]) == 0 and node_rank == 0
    if "SLURM_PROCID" in env:
        return int(env["SLURM_PROCID"]) == 0
    return node_rank == 0


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def configure_threads() -> int | None:
    """Give each process its share of the cores when an outside launcher started several.

    Lightning's own launcher already divides the cores between the processes it starts. Under
    torchrun it does nothing: torch then defaults to every core in every process (ranks fight
    for them) or, when torchrun set ``OMP_NUM_THREADS=1`` for several processes, leaves cores
    idle. So under torchrun we use ``cores // LOCAL_WORLD_SIZE``; under SLURM, the task's
    ``SLURM_CPUS_PER_TASK``. ``LMOPS_NUM_THREADS`` overrides both. Returns the count set, or
    ``None`` when the defaults were left alone.
    """
    env = os.environ
    threads: int | None = None
    if env.get("LMOPS_NUM_THREADS"):
        threads = int(env["LMOPS_NUM_THREADS"])
    elif "LOCAL_WORLD_SIZE" in env and "TORCHELASTIC_RUN_ID" in env:
        threads = _cpus() // max(1, int(env["LOCAL_WORLD_SIZE"]))
    elif env.get("SLURM_CPUS_PER_TASK") and int(env.get("SLURM_NTASKS", "1")) > 1:
        threads = int(env["SLURM_CPUS_PER_TASK"])
    if threads is None:
        return None
    threads = max(1, threads)
    torch.set_num_threads(threads)
    env["OMP_NUM_THREADS"] = str(threads)  # for data-loader workers started later
    return threads


# --------------------------------------------------------------------------- strategies


def check_world_size(hw: HardwareConfig) -> None:
    """Under an outside launcher (torchrun, or a rank Lightning started), its process count must
    be ``hardware.devices x hardware.num_nodes``: the gradient accumulation that keeps the global
    batch was derived from that product, and Lightning would stop later with a traceback."""
    launched = os.environ.get("WORLD_SIZE")
    expected = expected_world_size(hw)
    if launched and int(launched) != expected:
        raise LmopsError(
            f"{launched} processes were started but hardware.devices x hardware.num_nodes is "
            f"{expected}; set hardware.devices to the processes per node (torchrun "
            "--nproc-per-node, srun --ntasks-per-node) and hardware.num_nodes to the nodes"
        )


def build_strategy(hw: HardwareConfig, precision: str = "32-true") -> str | Strategy:
    """The Lightning strategy for ``hardware.strategy``; user-fixable problems as LmopsError."""
    check_world_size(hw)
    name = hw.strategy
    if name == "auto":
        return "auto"
    if name == "ddp":
        return "ddp"
    if name == "fsdp":
        return _fsdp2(hw, precision)
    if name == "deepspeed":
        return _deepspeed(hw)
    raise LmopsError(f"hardware.strategy is {name!r}; allowed: {', '.join(STRATEGIES)}")


def _fsdp2(hw: HardwareConfig, precision: str) -> Strategy:
    from lightning.pytorch.strategies import ModelParallelStrategy

    if precision == "16-mixed":
        raise LmopsError(
            "precision 16-mixed is not supported with hardware.strategy fsdp (FSDP2 has no "
            "gradient scaler in Lightning); use bf16-mixed or bf16-true"
        )
    world = expected_world_size(hw)
    return ModelParallelStrategy(
        data_parallel_size=world,  # every process is a data-parallel shard ...
        tensor_parallel_size=1,  # ... and none splits a matmul
        save_distributed_checkpoint=hw.fsdp_checkpoint == "sharded",
    )


def _deepspeed(hw: HardwareConfig) -> Strategy:
    if importlib.util.find_spec("deepspeed") is None:
        raise LmopsError(
            "hardware.strategy is deepspeed but DeepSpeed is not installed; "
            "pip install 'lmops[deepspeed]' (or pick auto, ddp or fsdp)"
        )
    if not _on_gpu(hw):
        raise LmopsError(
            "hardware.strategy deepspeed runs on CUDA GPUs only; set hardware.accelerator to gpu "
            "or use ddp / fsdp on this machine"
        )
    from lightning.pytorch.strategies import DeepSpeedStrategy

    return DeepSpeedStrategy(stage=hw.deepspeed_stage)


# --------------------------------------------------------------------------- FSDP2


def shard_gpt(
    model: torch.nn.Module,
    device_mesh: Any,
    activation_checkpointing: bool = False,
    param_dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """FSDP2-shard a :class:`~lmops.models.gpt.GPT` in place over ``device_mesh`` (1-D, the
    data-parallel dimension): each transformer block is its own FSDP unit, so only one block's
    full parameters exist at a time in forward and backward; the root unit holds the rest
    (embeddings, tied with the LM head, and the final LayerNorm).

    ``activation_checkpointing`` turns on the model's per-block recomputation. ``param_dtype``
    (e.g. bf16 under ``bf16-mixed``) makes FSDP gather and compute in that dtype while
    gradients are reduced and the optimizer steps in float32.
    Call it from ``LightningModule.configure_model`` (``device_mesh["data_parallel"]``).
    """
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(model, FSDPModule):
        return model  # configure_model may run more than once (fit, then validate)
    if activation_checkpointing:
        model.config.activation_checkpointing = True
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    blocks = list(model.transformer.h)
    for i, block in enumerate(blocks):
        # the last block's parameters are needed again right away by backward: keep them
        fully_shard(
            block, mesh=device_mesh, mp_policy=mp, reshard_after_forward=i < len(blocks) - 1
        )
    fully_shard(model, mesh=device_mesh, mp_policy=mp)
    return model


class ShardGPT:
    """The ``parallelize`` hook of :class:`~lmops.training.lm_module.CausalLMModule` for
    ``hardware.strategy: fsdp``: shards ``module.model`` over the data-parallel mesh that
    ``ModelParallelStrategy`` gave the module (a no-op without one). A class, not a closure, so
    the module stays picklable."""

    def __init__(self, param_dtype: torch.dtype | None = None) -> None:
        self.param_dtype = param_dtype

    def __call__(self, module: Any) -> None:
        mesh = getattr(module, "device_mesh", None)
        if mesh is not None:
            shard_gpt(module.model, mesh["data_parallel"], param_dtype=self.param_dtype)


def parallelize_for(hw: HardwareConfig) -> ShardGPT | None:
    """What the LightningModule must apply in ``configure_model`` under ``hw``'s strategy."""
    return ShardGPT() if hw.strategy == "fsdp" else None


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_gpt` (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full, unsharded state dict on the CPU, for export.

    A collective under FSDP2: every rank must call it; rank 0 gets the tensors (the others get
    an empty dict). For an unsharded model it is just a CPU copy of ``state_dict()``.
    """
    if not is_sharded(model):
        return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


def load_full_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor] | None) -> None:
    """Load a full state dict (from :func:`full_state_dict`) into ``model``. Under FSDP2 a
    collective: rank 0's ``state`` is broadcast and each rank keeps its shards (the others may
    pass ``None``)."""
    if not is_sharded(model):
        if state is None:
            raise ValueError("an unsharded model needs the state dict on every rank")
        model.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
    set_model_state_dict(model, state or {}, options=options)
