"""Lightning's fixed cost per optimizer step, in CPU milliseconds, for lmops' pretraining path.

    python bench/pretrain_step_overhead.py            # 2000 steps x 3 repeats, median
    python bench/pretrain_step_overhead.py --steps 500 --repeats 1

A GPT so small (1 layer, 8 wide, 2 x 8 tokens) that its forward/backward costs about a
millisecond, trained for the same steps by a plain PyTorch loop and by ``CausalLMModule`` +
``build_trainer`` with the pretrain stage's callbacks, with train metrics logged every step and
every 10 steps. The difference per step is what Lightning, the callbacks and ``self.log`` add
to every step of a real run, whatever the model: divide it by a real step's time for the
overhead ratio. Measured as process CPU time (single-threaded), which other processes on a
busy machine disturb far less than wall time.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings

import torch
from torch.utils.data import DataLoader

from lmops.config import HardwareConfig, ModelConfig, PretrainConfig
from lmops.models.gpt import GPT
from lmops.training.callbacks import pretrain_callbacks
from lmops.training.lm_module import CausalLMModule
from lmops.training.schedule import make_adamw, warmup_cosine_lambda
from lmops.training.trainer import build_trainer

CFG = ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=1, n_embd=8)
DATA = torch.randint(0, 64, (10_000,))


class Batches:
    """Pre-drawn random windows: batch ``i`` is the same in both loops."""

    def __init__(self, n: int) -> None:
        self.offsets = torch.randint(0, len(DATA) - 9, (n, 2), generator=torch.Generator())
        self.span = torch.arange(9)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        chunk = DATA[self.offsets[i][:, None] + self.span]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def plain(steps: int) -> float:
    model = GPT(CFG)
    opt = make_adamw(model.configure_param_groups(0.1), lr=1e-3, betas=(0.9, 0.99))
    schedule = warmup_cosine_lambda(100, steps, 1e-3, 1e-4)
    params, batches = list(model.parameters()), Batches(steps)
    start = time.process_time()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * schedule(step)
        x, y = batches[step]
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.process_time() - start


def lightning(steps: int, log_every: int) -> float:
    cfg = PretrainConfig(max_steps=steps, batch_size=2, micro_batch_size=2, val_every=10**9)
    hw = HardwareConfig(accelerator="cpu", devices="1", progress_bar=False)
    module = CausalLMModule(CFG, cfg)
    callbacks = pretrain_callbacks(
        cfg, hw, tokens_per_step=16, flops_per_token=1.0, log_every_n_steps=log_every
    )
    trainer = build_trainer(
        hw,
        max_steps=steps,
        precision="32-true",
        val_every=10**9,
        limit_val_batches=0,
        grad_clip=1.0,
        accumulate=1,
        default_root_dir="/tmp",
        callbacks=callbacks.all,
        log_every_n_steps=log_every,
    )
    start = time.process_time()
    trainer.fit(module, DataLoader(Batches(steps), batch_size=None))
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    runs: dict[str, list[float]] = {"torch": [], "lightning, log every step": [], "every 10": []}
    for _ in range(args.repeats):
        runs["torch"].append(plain(args.steps))
        runs["lightning, log every step"].append(lightning(args.steps, 1))
        runs["every 10"].append(lightning(args.steps, 10))
    ms = {k: statistics.median(v) / args.steps * 1e3 for k, v in runs.items()}
    print("| loop | CPU ms per step | added per step |")
    print("|---|---|---|")
    for name, value in ms.items():
        print(f"| {name} | {value:.2f} | {value - ms['torch']:+.2f} |")


if __name__ == "__main__":
    main()
