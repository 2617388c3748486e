"""The whole pretrain stage on nanoGPT's CPU shakespeare-char recipe, against nanoGPT's own script.

    python bench/pretrain_stage.py --runs 3                          # the stage alone
    python bench/pretrain_stage.py --runs 3 --nanogpt /tmp/nanogpt   # and nanoGPT, alternating

What is timed: ``python pipeline/pretrain.py`` as DVC would start it, from interpreter start to
exit (imports, MLflow run with system metrics and per-step metrics, resume checkpoints every
``hardware.checkpoint_every`` steps, best-weights selection, final validation, the model
bundle), with the shipped defaults except the recipe below. The clean and tokenize stages run
once before, untimed, in a temporary copy of the project (``DVC_ROOT`` points there).

The recipe (nanoGPT README, "I only have a macbook"): char tokenizer over Tiny Shakespeare,
4 layers x 4 heads x 128 wide, block 64, batch 12, 2,000 steps, lr 1e-3 -> 1e-4 (100 warmup
steps, cosine), AdamW beta2 0.99, weight decay 0.1, grad clip 1.0, dropout 0, 20 validation
batches every 250 steps. The stage splits train/val by document (the clean stage's
``val_fraction``) where nanoGPT takes the last 10 % of the file, so the val losses are close
but not the same numbers.

``--nanogpt DIR``: a nanoGPT checkout (not part of this repository; its
``data/shakespeare_char`` prepared from ``../shared/data``) run with the same recipe through
its README's CPU command; its runs alternate with the stage's so that machine load hits both.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
SST2 = SHARED / "sst2"
STEPS = 2000

RECIPE = {
    "data": {
        "source": "local",
        "corpus_paths": [str(SHAKESPEARE)],
        "labeled_train_path": str(SST2 / "train.tsv"),  # the clean stage wants one; unused
        "labeled_text_column": "sentence",
        "labeled_test_path": str(SST2 / "dev.tsv"),
        "labeled_test_text_column": "content",
    },
    "tokenize": {"type": "char"},
    "pretrain": {
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0},
        "max_steps": STEPS,
        "batch_size": 12,
        "micro_batch_size": 12,
        "lr": 1e-3,
        "min_lr": 1e-4,
        "warmup_steps": 100,
        "weight_decay": 0.1,
        "beta2": 0.99,
        "grad_clip": 1.0,
        "val_every": 250,
        "val_batches": 20,
    },
    "hardware": {"accelerator": "cpu", "devices": "1", "progress_bar": False},
}

NANOGPT_ARGS = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    f"--max_iters={STEPS}",
    f"--lr_decay_iters={STEPS}",
    "--dropout=0.0",
]


def make_project(where: Path, steps: int) -> Path:
    """A copy of the project's stage scripts with the recipe in params.yaml; clean + tokenize run."""
    project = where / "project"
    project.mkdir()
    shutil.copytree(ROOT / "pipeline", project / "pipeline")
    params = OmegaConf.merge(OmegaConf.load(ROOT / "params.yaml"), RECIPE)
    params.pretrain.max_steps = steps
    (project / "params.yaml").write_text(OmegaConf.to_yaml(params))
    # marks the project root for any process started without DVC_ROOT (lmops.config.repo_root)
    (project / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
    for stage in ("clean.py", "tokenize_corpus.py"):
        subprocess.run(
            [sys.executable, f"pipeline/{stage}"], cwd=project, env=stage_env(project), check=True
        )
    return project


def stage_env(project: Path) -> dict[str, str]:
    return dict(os.environ, DVC_ROOT=str(project), PYTHONWARNINGS="ignore", DVC_NO_ANALYTICS="1")


def run_stage(project: Path) -> dict:
    shutil.rmtree(project / "models" / "pretrain", ignore_errors=True)
    shutil.rmtree(project / ".lmops" / "pretrain", ignore_errors=True)  # no resume: a fresh run
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "pipeline/pretrain.py"],
        cwd=project,
        env=stage_env(project),
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"pretrain stage failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads((project / "models" / "pretrain" / "metrics.json").read_text())
    return {
        "variant": "lmops stage",
        "process_s": round(wall, 2),
        "val_loss": round(metrics["val/loss"], 4),
        "steps": metrics["train/steps"],
        "load1_before": load,
    }


def run_nanogpt(nanogpt: Path, steps: int) -> dict:
    args = [f"--max_iters={steps}" if a.startswith("--max_iters") else a for a in NANOGPT_ARGS]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=nanogpt, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"nanoGPT failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", proc.stdout)
    return {
        "variant": "nanoGPT train.py",
        "process_s": round(wall, 2),
        "val_loss": float(evals[-1][2]) if evals else None,
        "steps": int(evals[-1][0]) if evals else None,
        "load1_before": load,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=STEPS, help="shorter: a smoke test")
    parser.add_argument("--nanogpt", type=Path, help="a nanoGPT checkout to time alongside")
    args = parser.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="lmops-pretrain-stage-") as tmp:
        project = make_project(Path(tmp), args.steps)
        for i in range(args.runs):
            variants = [lambda: run_stage(project)]
            if args.nanogpt:
                variants.append(lambda: run_nanogpt(args.nanogpt, args.steps))
            if i % 2:
                variants.reverse()
            for variant in variants:
                row = variant()
                rows.append(row)
                print(json.dumps(row), flush=True)
    summary = {}
    for name in dict.fromkeys(r["variant"] for r in rows):
        times = [r["process_s"] for r in rows if r["variant"] == name]
        losses = [r["val_loss"] for r in rows if r["variant"] == name]
        summary[name] = {
            "median_s": statistics.median(times),
            "runs_s": times,
            "val_loss": losses,
        }
    if len(summary) == 2:
        summary["ratio_stage_over_nanogpt"] = round(
            summary["lmops stage"]["median_s"] / summary["nanoGPT train.py"]["median_s"], 3
        )
    print(json.dumps({"summary": summary, "cpus": os.cpu_count()}))


if __name__ == "__main__":
    main()
