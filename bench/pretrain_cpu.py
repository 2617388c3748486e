"""nanoGPT's CPU shakespeare-char recipe: a plain PyTorch loop against lmops' Lightning path.

    python bench/pretrain_cpu.py                       # 3 runs of each, median, overhead ratio
    python bench/pretrain_cpu.py --runs 1 --threads 2  # one quick run with 2 threads
    python bench/pretrain_cpu.py --variants lightning --mlflow   # with MLflow tracking on

The recipe (nanoGPT README, "I only have a macbook"): char tokenizer over tinyshakespeare, first
90 % train / last 10 % val, 4 layers, 4 heads, 128 wide, block 64, batch 12, 2000 iterations, lr
1e-3 with 100 warmup steps and a cosine to 1e-4, AdamW beta2 0.99, weight decay 0.1, grad clip
1.0, dropout 0; val loss on 20 batches every 250 steps during training. The reported val loss is
nanoGPT's estimate: the mean loss of 200 random val batches after training.

Both variants run the same GPT class (lmops.models.gpt), the same init (seed), the same fused
AdamW with the same groups and schedule, and the same batches: one int64 tensor of the whole
token array, indexed with pre-drawn random offsets (a gather, no per-sample numpy slicing). So
the runs differ only in the training loop: a hand-written one (``torch``) or lmops'
``CausalLMModule`` + ``build_trainer`` with the pretrain stage's callbacks (``lightning``:
throughput/MFU, NaN guard with weight snapshots, best weights, metric history; train metrics
every ``--log-every`` steps; no logger unless ``--mlflow``). Each run is a fresh process; the
parent times the whole process (interpreter start, imports, data, training, final evaluation)
and the child reports its training-loop time. Variants alternate run by run so that load from
other processes hits both alike.
"""

from __future__ import annotations

import time

PROCESS_START = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"

# the recipe
N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 4, 4, 128, 64, 12
MAX_ITERS, LR, MIN_LR, WARMUP, BETA2, WEIGHT_DECAY, GRAD_CLIP = (
    2000,
    1e-3,
    1e-4,
    100,
    0.99,
    0.1,
    1.0,
)
EVAL_INTERVAL, EVAL_ITERS, FINAL_EVAL_ITERS, SEED = 250, 20, 200, 1337


# ----------------------------------------------------------------------------- child: shared


def load_chars(path: Path):
    """Char-level token ids of the file as one int64 tensor, and the vocabulary size."""
    import numpy as np
    import torch

    text = path.read_text(encoding="utf-8")
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    vocab, ids = np.unique(codes, return_inverse=True)  # sorted chars, as nanoGPT's prepare.py
    return torch.from_numpy(ids.astype(np.int64)), len(vocab)


class Batches:
    """Batch ``i`` = windows at ``offsets[i]``: ``x = data[o:o+T]``, ``y = data[o+1:o+T+1]``.

    A map-style dataset of whole batches (use ``DataLoader(batch_size=None)``) and an indexable
    object for the plain loop alike: one gather per batch.
    """

    def __init__(self, data, n_batches: int, seed: int) -> None:
        import torch

        g = torch.Generator().manual_seed(seed)
        self.data = data
        self.offsets = torch.randint(len(data) - BLOCK, (n_batches, BATCH), generator=g)
        self.span = torch.arange(BLOCK + 1)

    def __len__(self) -> int:
        return len(self.offsets)

    def __getitem__(self, i: int):
        chunk = self.data[self.offsets[i][:, None] + self.span]
        return chunk[:, :-1].contiguous(), chunk[:, 1:].contiguous()


def gpt_config(vocab: int):
    from lmops.config import ModelConfig

    padded = (vocab + 63) // 64 * 64  # as the tokenize stage pads it
    return ModelConfig(
        vocab_size=padded, block_size=BLOCK, n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD
    )


def mean_loss(model, batches) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        total = sum(float(model(x, y)[1]) for x, y in (batches[i] for i in range(len(batches))))
    model.train()
    return total / len(batches)


# ----------------------------------------------------------------------------- child: variants


def run_torch(train, val_fixed, cfg) -> tuple[object, dict]:
    """The hand-written loop: nanoGPT's structure with lmops' model, optimizer and schedule."""
    import torch

    from lmops.models.gpt import GPT
    from lmops.training.schedule import make_adamw, warmup_cosine_lambda

    torch.manual_seed(SEED)
    model = GPT(cfg)
    opt = make_adamw(model.configure_param_groups(WEIGHT_DECAY), lr=LR, betas=(0.9, BETA2))
    multiplier = warmup_cosine_lambda(WARMUP, MAX_ITERS, LR, MIN_LR)
    params = [p for g in opt.param_groups for p in g["params"]]
    val_curve = []
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in range(MAX_ITERS):
        for group in opt.param_groups:
            group["lr"] = LR * multiplier(step)
        x, y = train[step]
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (step + 1) % EVAL_INTERVAL == 0:
            val_curve.append(mean_loss(model, val_fixed))
    return model, {
        "train_s": time.perf_counter() - start,
        "train_cpu_s": time.process_time() - cpu_start,
        "val_curve": val_curve,
    }


def run_lightning(
    train, val_fixed, cfg, mlflow_dir: str | None, log_every: int
) -> tuple[object, dict]:
    """lmops' path: CausalLMModule + build_trainer + the pretrain stage's callbacks."""
    import torch
    from torch.utils.data import DataLoader

    from lmops.config import HardwareConfig, ModelConfig, PretrainConfig
    from lmops.training.callbacks import pretrain_callbacks
    from lmops.training.lm_module import CausalLMModule
    from lmops.training.trainer import build_trainer

    pcfg = PretrainConfig(
        model=ModelConfig(n_layer=N_LAYER, n_head=N_HEAD, n_embd=N_EMBD, block_size=BLOCK),
        max_steps=MAX_ITERS,
        batch_size=BATCH,
        micro_batch_size=BATCH,
        lr=LR,
        min_lr=MIN_LR,
        warmup_steps=WARMUP,
        weight_decay=WEIGHT_DECAY,
        beta2=BETA2,
        grad_clip=GRAD_CLIP,
        val_every=EVAL_INTERVAL,
        val_batches=EVAL_ITERS,
        seed=SEED,
    )
    hw = HardwareConfig(accelerator="cpu", devices="1", progress_bar=False)
    torch.manual_seed(SEED)
    module = CausalLMModule(cfg, pcfg)
    callbacks = pretrain_callbacks(
        pcfg,
        hw,
        tokens_per_step=BATCH * BLOCK,
        flops_per_token=module.model.flops_per_token(),
        log_every_n_steps=log_every,
    )
    logger = None
    if mlflow_dir is not None:
        from lightning.pytorch.loggers import MLFlowLogger

        logger = MLFlowLogger(
            experiment_name="bench",
            tracking_uri=f"sqlite:///{mlflow_dir}/mlflow.db",
            synchronous=False,
        )
    trainer = build_trainer(
        hw,
        max_steps=MAX_ITERS,
        precision="32-true",
        val_every=EVAL_INTERVAL,
        limit_val_batches=EVAL_ITERS,
        grad_clip=GRAD_CLIP,
        accumulate=1,
        default_root_dir=os.environ.get("TMPDIR", "/tmp"),
        logger=logger,
        callbacks=callbacks.all,
        log_every_n_steps=log_every,  # train loss, lr, grad norm, tokens/s: every N steps
    )
    train_loader = DataLoader(train, batch_size=None)
    val_loader = DataLoader(val_fixed, batch_size=None)
    start, cpu_start = time.perf_counter(), time.process_time()
    trainer.fit(module, train_loader, val_loader)
    train_s, train_cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    val_curve = [v for _, v in callbacks.history.series("val/loss")]
    return module.model, {
        "train_s": train_s,
        "train_cpu_s": train_cpu_s,
        "val_curve": val_curve,
        "steps": trainer.global_step,
        "best_step": callbacks.best.best_step,
        "tokens_per_sec_last": callbacks.history.series("train/tokens_per_sec")[-1][1],
    }


def child(args: argparse.Namespace) -> None:
    import torch

    global MAX_ITERS
    MAX_ITERS = args.max_iters

    torch.set_num_threads(args.threads)
    imported = time.perf_counter()
    data, vocab = load_chars(DATA)
    n = int(0.9 * len(data))
    train_data, val_data = data[:n], data[n:]
    train = Batches(train_data, MAX_ITERS, seed=SEED)
    val_fixed = Batches(val_data, EVAL_ITERS, seed=SEED + 1)  # same windows at every check
    val_final = Batches(val_data, FINAL_EVAL_ITERS, seed=SEED + 2)
    cfg = gpt_config(vocab)
    if args.child == "torch":
        model, info = run_torch(train, val_fixed, cfg)
    else:
        model, info = run_lightning(train, val_fixed, cfg, args.mlflow_dir, args.log_every)
    start = time.perf_counter()
    info["val_loss"] = mean_loss(model, val_final)
    info["final_eval_s"] = time.perf_counter() - start
    info.update(
        variant=args.child,
        threads=torch.get_num_threads(),
        import_s=imported - PROCESS_START,
        in_process_s=time.perf_counter() - PROCESS_START,
    )
    print("RESULT " + json.dumps(info))


# ----------------------------------------------------------------------------- parent


def run_child(variant: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", variant, "--threads", str(args.threads)]
    cmd += ["--max-iters", str(args.max_iters), "--log-every", str(args.log_every)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    if args.spincount is not None:
        # read by libgomp when torch loads: how long an idle OpenMP thread spins before sleeping
        env["GOMP_SPINCOUNT"] = str(args.spincount)
    tmp = None
    if variant == "lightning" and args.mlflow:
        import tempfile

        tmp = tempfile.TemporaryDirectory()
        cmd += ["--mlflow-dir", tmp.name]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    if tmp is not None:
        tmp.cleanup()
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        sys.exit(f"{variant} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    info = json.loads(lines[-1][len("RESULT ") :])
    info.update(process_s=wall, load1_before=load_before, load1_after=os.getloadavg()[0])
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--variants", default="torch,lightning")
    parser.add_argument("--max-iters", type=int, default=MAX_ITERS, help="shorter: smoke test")
    parser.add_argument("--log-every", type=int, default=10, help="lightning: log_every_n_steps")
    parser.add_argument(
        "--spincount", type=int, help="GOMP_SPINCOUNT for the runs (e.g. 1000 on a busy machine)"
    )
    parser.add_argument("--mlflow", action="store_true", help="lightning with an MLflow logger")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--mlflow-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    variants = args.variants.split(",")
    results: dict[str, list[dict]] = {v: [] for v in variants}
    print(
        f"load averages {os.getloadavg()} | threads {args.threads} | mlflow {args.mlflow} | "
        f"log every {args.log_every} steps | GOMP_SPINCOUNT {args.spincount}"
    )
    for run in range(args.runs):
        for variant in variants if run % 2 == 0 else variants[::-1]:
            info = run_child(variant, args)
            results[variant].append(info)
            print(
                f"run {run + 1} {variant:9s} process {info['process_s']:6.1f} s  "
                f"train {info['train_s']:6.1f} s (cpu {info['train_cpu_s']:6.1f} s)  "
                f"val {info['val_loss']:.4f}  "
                f"load {info['load1_before']:.2f}->{info['load1_after']:.2f}",
                flush=True,
            )

    def median(variant: str, key: str) -> float:
        return statistics.median(r[key] for r in results[variant])

    print("\n| variant | process s | train loop s | train loop CPU s | val loss | runs |")
    print("|---|---|---|---|---|---|")
    for v in variants:
        print(
            f"| {v} | {median(v, 'process_s'):.1f} | {median(v, 'train_s'):.1f} | "
            f"{median(v, 'train_cpu_s'):.1f} | {median(v, 'val_loss'):.4f} | {len(results[v])} |"
        )
    if "torch" in results and "lightning" in results:
        ratios = {
            key: median("lightning", key) / median("torch", key) - 1
            for key in ("train_s", "train_cpu_s", "process_s")
        }
        print(
            f"\nLightning overhead (medians): train loop {ratios['train_s']:+.1%} wall, "
            f"{ratios['train_cpu_s']:+.1%} CPU time; whole process {ratios['process_s']:+.1%}"
        )
    print(f"uptime after: {os.getloadavg()}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
