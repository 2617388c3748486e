"""Generation tokens/s with and without the KV cache (issue 13's first benchmark).

    OMP_NUM_THREADS=1 python bench/generation_kv_cache.py              # 3 runs each, medians
    python bench/generation_kv_cache.py --runs 5 --configs gpt2-124m    # one config

What is timed: ``GPT.generate(prompt, 256, temperature=0)`` on one prompt of 16 random token
ids, greedy, no end-of-text stop, once with the KV cache (``use_cache=True``: each step feeds one
token) and once without (every step recomputes the whole window), on randomly initialised
weights (speed does not depend on what the weights learned). Tokens/s is new tokens over wall
time. Runs alternate cached / uncached so load from other jobs on the box hits both alike; each
mode gets one short warm-up first. Both modes must produce the same tokens (checked here).

Configs:
- ``default``: ``pretrain.model`` as shipped (4 layers x 4 heads x 128 wide, block_size 128,
  vocab 2048). 16 + 256 tokens do not fit in 128: past the window the context slides, every
  position shifts, and both modes recompute the window each step, so the cache only helps for
  the first 112 tokens.
- ``default-512``: the same model with ``block_size`` 512, so the 256 tokens fit the window.
- ``gpt2-124m``: GPT-2 small (12 x 12 x 768, block 1024, vocab 50257, biases).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from lmops.config import ModelConfig  # noqa: E402
from lmops.models.gpt import GPT  # noqa: E402

CONFIGS = {
    "default": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "vocab_size": 2048},
    "default-512": {
        "n_layer": 4,
        "n_head": 4,
        "n_embd": 128,
        "block_size": 512,
        "vocab_size": 2048,
    },
    "gpt2-124m": {
        "n_layer": 12,
        "n_head": 12,
        "n_embd": 768,
        "block_size": 1024,
        "vocab_size": 50257,
        "bias": True,
    },
}


def timed_generate(model: GPT, prompt: torch.Tensor, new_tokens: int, use_cache: bool):
    start = time.perf_counter()
    out = model.generate(prompt, new_tokens, temperature=0.0, use_cache=use_cache)
    return time.perf_counter() - start, out


def bench_config(name: str, runs: int, new_tokens: int, prompt_tokens: int) -> dict:
    torch.manual_seed(0)
    model = GPT(ModelConfig(**CONFIGS[name])).eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_tokens))
    for use_cache in (True, False):  # warm-up: allocator, kernels, first-call overheads
        timed_generate(model, prompt, 8, use_cache)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, torch.Tensor] = {}
    for run in range(runs):
        for use_cache in (True, False) if run % 2 == 0 else (False, True):
            elapsed, out = timed_generate(model, prompt, new_tokens, use_cache)
            seconds[use_cache].append(elapsed)
            outputs[use_cache] = out
            rate = new_tokens / elapsed
            label = "cached" if use_cache else "uncached"
            print(f"  {name} run {run + 1} {label}: {elapsed:.2f} s, {rate:.1f} tok/s", flush=True)
    if not torch.equal(outputs[True], outputs[False]):
        raise SystemExit(f"{name}: cached and uncached greedy tokens differ")
    cached = new_tokens / statistics.median(seconds[True])
    uncached = new_tokens / statistics.median(seconds[False])
    # printed now too, so a config's result survives a later config being stopped
    print(f"  {name}: median {cached:.1f} vs {uncached:.1f} tok/s, {cached / uncached:.1f}x")
    return {
        "config": name,
        "params_m": model.num_params() / 1e6,
        "cached": cached,
        "uncached": uncached,
        "ratio": cached / uncached,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--threads", type=int, default=None, help="default: OMP_NUM_THREADS")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{platform.processor() or platform.machine()}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = [
        bench_config(name, args.runs, args.new_tokens, args.prompt_tokens)
        for name in args.configs.split(",")
    ]
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    print(
        "\n| config | params | cached tok/s | uncached tok/s | cached / uncached |\n"
        "| --- | --- | --- | --- | --- |"
    )
    for r in rows:
        print(
            f"| {r['config']} | {r['params_m']:.1f} M | {r['cached']:.1f} | {r['uncached']:.1f} "
            f"| {r['ratio']:.1f}x |"
        )


if __name__ == "__main__":
    main()
