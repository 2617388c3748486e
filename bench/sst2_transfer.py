"""SST-2 sentiment: does lmops pretraining transfer? Against TF-IDF and a random init (issue #12 b).

    python bench/sst2_transfer.py                      # tfidf, pretrained, scratch (~45 min busy)
    python bench/sst2_transfer.py --quick              # a tiny budget: checks the plumbing
    python bench/sst2_transfer.py --variants tfidf pretrained frozen lowlr lora scratch
    python bench/sst2_transfer.py --shakespeare        # Tiny Shakespeare added to the corpus
    python bench/sst2_transfer.py --variants pretrained --pretrain-steps 2000 --threads 2

The question is whether pretraining on unlabeled text earns its cost, so every number comes from
what a user gets through ``params.yaml`` alone: the script writes params into a throw-away copy
of the project (``tests/e2e/project.py``) and runs the stages there. The data is read in place
from ``../shared/data/sst2`` (``train.tsv``: 67,349 labeled phrases, columns ``label`` and
``sentence``; ``dev.tsv``: the 872 dev sentences, column ``content``); none of it is copied.

Variants, all scored on the 872 dev sentences (accuracy, macro-F1, MCC):

- ``tfidf``: word 1-2-gram TF-IDF and logistic regression (scikit-learn defaults otherwise) on
  the same train rows. A transformer that cannot beat it has not earned its cost.
- ``pretrained``: pretrain on the train sentences *without* their labels
  (``data.corpus_paths``: ``train.tsv``, ``data.corpus_text_column: sentence``), then fine-tune
  the classifier on the labeled rows; the evaluate stage's ``reports/eval/metrics.json``.
- ``frozen`` / ``lowlr`` / ``lora``: the same pretrained model, fine-tuned with
  ``freeze_layers: 2`` / ``backbone_lr_scale: 0.1`` / ``method: lora``.
- ``scratch``: the same fine-tuning from a randomly initialized model. No param skips
  pretraining (``pretrain.max_steps`` and ``lr`` must be > 0), so the pretrain stage runs one
  step at ``lr: 1e-12``: Adam's first step moves a weight by at most about ``lr`` and the decay
  scales it by ``1 - lr * weight_decay``, below float32's resolution for all but the weights
  within ~1e-5 of zero (init std 0.02), so the bundle holds the seeded initial weights (val
  loss ln 4096: a uniform guess) with the same tokenizer; only pretraining differs.

The clean stage's defaults are made for web documents; on SST-2 phrases (median 7 words, many
a single word) they keep 10 % of the corpus: 16,059 rows are under ``min_chars``, Gopher's
word minimum drops 27,457 more, its stop-word rule 5,608, and MinHash near-dedup 10,519 of
what is left, because the phrases are nested spans of ~6,900 sentences (it keeps whichever span
comes first, not the sentence). As a user would, :data:`CLEAN` keeps every non-empty row
(``min_chars: 1``), turns the Gopher filters and MinHash off, and leaves exact dedup on
(371 rows). The labeled rows go through none of these filters in any case.

Pipeline variants share one project copy, ``scratch`` last, so DVC re-runs only what a
variant changes (finetune + evaluate; pretrain too for ``scratch``). Each stage runs as its own
``dvc repro <stage>``, so the table can split a variant's wall time by stage; a stage DVC skips
counts as cached. ``PYTHONPATH`` points the stages at the copy's ``src``: the editable install
would otherwise import ``lmops`` from the working tree, which may change while this runs.

Threads: on two vCPUs that another job also uses, two OpenMP threads stall each other at every
barrier (see BENCHMARKS.md, pretraining), so ``--threads`` (``OMP_NUM_THREADS`` of the stages)
is 1 by default.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the e2e tests' project helpers

from lmops.data.sources import read_labeled  # noqa: E402
from tests.e2e.project import deep_update, make_project, run, write_params  # noqa: E402

SST2 = ROOT.parent / "shared" / "data" / "sst2"
TRAIN, DEV = SST2 / "train.tsv", SST2 / "dev.tsv"
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
PIPELINE_VARIANTS = ("pretrained", "frozen", "lowlr", "lora", "scratch")  # the order they run in
VARIANTS = ("tfidf", *PIPELINE_VARIANTS)
DEFAULT_VARIANTS = ["tfidf", "pretrained", "scratch"]
STAGES = ("clean", "tokenize", "pretrain", "finetune", "evaluate")  # export/register score nothing
STAGE_LIMIT_S = 3600  # the issue allows a variant 30 minutes; a loaded box needs more
ISSUE_TFIDF_ACC = 0.819  # what the issue reports for the baseline on this box

# Unlabeled: the train phrases alone. Labeled: the same rows with their labels, and the dev
# sentences, whose file names the text column differently.
CORPUS = {"source": "local", "corpus_paths": [str(TRAIN)], "corpus_text_column": "sentence"}
LABELED = {"labeled_train_path": str(TRAIN), "labeled_text_column": "sentence"}
LABELED |= {"labeled_test_path": str(DEV), "labeled_test_text_column": "content"}
DATA = CORPUS | LABELED
# See the module docstring: what the defaults drop from the corpus, and why each is relaxed.
CLEAN = {
    "min_chars": 1,
    "gopher_repetition": {"enabled": False},
    "gopher_quality": {"enabled": False},
    "minhash": {"enabled": False},
    "labeled_val_fraction": 0.02,  # 1,347 rows watch the fine-tuning; the rest trains
}
PARAMS: dict[str, Any] = {
    "data": DATA,
    "clean": CLEAN,
    "tokenize": {"vocab_size": 4096},  # SST-2 has ~15k word types; 2,048 splits common words
    "pretrain": {
        "model": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.1},
        "max_steps": 600,  # 2.5M tokens: ~2.7 passes over the 0.93M-token corpus
        "batch_size": 32,
        "micro_batch_size": 32,
        "lr": 2e-3,
        "min_lr": 2e-4,
        "warmup_steps": 50,
        "val_every": 200,
        "val_batches": 10,
    },
    "finetune": {
        "task": "classification",
        "method": "full",
        "max_steps": 1500,  # ~0.7 epoch of the 66k labeled rows
        "batch_size": 32,
        "lr": 5e-4,
        "min_lr": 5e-5,
        "warmup_steps": 100,
        "val_every": 500,
        "max_length": 64,
        "dropout": 0.1,
    },
    "evaluate": {"ppl_max_batches": 20},
    "tracking": {"log_every_n_steps": 10},
}
QUICK: dict[str, Any] = {
    "pretrain": {"max_steps": 20, "val_every": 10, "val_batches": 2},
    "finetune": {"max_steps": 20, "val_every": 10},
    "evaluate": {"ppl_max_batches": 2},
}
SHAKESPEARE_CORPUS = {"data": {"corpus_paths": [str(TRAIN), str(SHAKESPEARE)]}}
# What each pipeline variant changes on top of PARAMS.
VARIANT_PARAMS: dict[str, dict[str, Any]] = {
    "pretrained": {},
    "frozen": {"finetune": {"freeze_layers": 2}},
    "lowlr": {"finetune": {"backbone_lr_scale": 0.1}},
    "lora": {"finetune": {"method": "lora", "lr": 2e-3, "min_lr": 2e-4}},
    "scratch": {"pretrain": {"max_steps": 1, "lr": 1e-12, "min_lr": 0.0, "warmup_steps": 0}},
}


@dataclass
class Result:
    """One variant's dev scores (0-1) and costs; ``stages_s`` holds only the stages that ran."""

    variant: str
    acc: float
    f1: float
    mcc: float
    wall_s: float
    n: int
    stages_s: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # val loss, fine-tuning steps, counts


# ----------------------------------------------------------------------------- the baseline


def score_tfidf() -> Result:
    """TF-IDF 1-2-grams + logistic regression; wall time covers reading, fitting and scoring."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    start = time.perf_counter()
    train = read_labeled(TRAIN, "sentence", "label")
    dev = read_labeled(DEV, "content", "label")
    vectorizer = TfidfVectorizer(ngram_range=(1, 2))
    features = vectorizer.fit_transform([text for text, _ in train])
    model = LogisticRegression(max_iter=1000).fit(features, [label for _, label in train])
    predicted = model.predict(vectorizer.transform([text for text, _ in dev]))
    gold = [label for _, label in dev]
    return Result(
        "tfidf",
        acc=float(accuracy_score(gold, predicted)),
        f1=float(f1_score(gold, predicted, average="macro")),
        mcc=float(matthews_corrcoef(gold, predicted)),
        wall_s=time.perf_counter() - start,
        n=len(gold),
        extra={"features": int(features.shape[1])},
    )


# ----------------------------------------------------------------------------- the pipeline


def reproduce(root: Path) -> tuple[float, dict[str, float]]:
    """Each stage up to evaluate as its own ``dvc repro``; total wall time and the time of
    every stage DVC actually ran (a skipped one costs DVC's check only, ~2 s)."""
    start = time.perf_counter()
    ran: dict[str, float] = {}
    for stage in STAGES:
        began = time.perf_counter()
        proc = run(["dvc", "repro", "--single-item", stage], root, timeout=STAGE_LIMIT_S)
        if f"Running stage '{stage}'" in proc.stdout:
            ran[stage] = time.perf_counter() - began
    return time.perf_counter() - start, ran


def read_metrics(root: Path, relative: str) -> dict[str, Any]:
    """A stage's ``metrics.json`` in the project copy."""
    return json.loads((root / relative / "metrics.json").read_text())


def run_variant(root: Path, variant: str, params: dict[str, Any], baseline: str) -> Result:
    """Write ``params`` into the project, reproduce up to evaluate, collect the figures.

    ``write_params`` merges into the project's current ``params.yaml``, so the file goes back to
    ``baseline`` (as ``make_project`` wrote it) first: otherwise a key that one variant sets and
    the next does not name (``freeze_layers``, ``backbone_lr_scale``) would carry over.
    """
    (root / "params.yaml").write_text(baseline)
    write_params(root, params)
    written = yaml.safe_load((root / "params.yaml").read_text())
    wall, stages = reproduce(root)
    scores = read_metrics(root, "reports/eval")
    tuned = read_metrics(root, "models/finetune")
    cleaned = read_metrics(root, "data/clean")
    return Result(
        variant,
        acc=float(scores["test/acc"]),
        f1=float(scores["test/f1"]),
        mcc=float(scores["test/mcc"]),
        wall_s=wall,
        n=int(scores["test/n"]),
        stages_s=stages,
        extra={
            "pretrain_val_loss": read_metrics(root, "models/pretrain").get("val/loss"),
            "finetune_steps": tuned.get("train/steps"),
            "finetune_val_acc": tuned.get("val/acc"),
            "corpus_docs": {k: cleaned[k] for k in ("docs_in", "docs_out")},
            "labeled_train_rows": cleaned.get("labeled_train"),
            "params": {k: written[k] for k in ("tokenize", "pretrain", "finetune")},
        },
    )


def variant_params(variant: str, extra: list[dict[str, Any]]) -> dict[str, Any]:
    """PARAMS, each of ``extra`` (corpus, budget) on top, then the variant's own changes last,
    so that no budget gives ``scratch`` pretraining steps that move its weights."""
    layers = [*extra, VARIANT_PARAMS[variant]]
    return functools.reduce(
        lambda acc, layer: deep_update(acc, copy.deepcopy(layer)), layers, copy.deepcopy(PARAMS)
    )


def run_pipeline(variants: list[str], root: Path, extra: list[dict[str, Any]]) -> list[Result]:
    """The pipeline variants in one project copy at ``root``, in :data:`PIPELINE_VARIANTS`
    order, each result printed as soon as it is known (the whole run takes most of an hour)."""
    os.environ["PYTHONPATH"] = str(root / "src")  # env() hands it to the stages
    make_project(root, variant_params("pretrained", extra))
    baseline = (root / "params.yaml").read_text()
    todo = [v for v in PIPELINE_VARIANTS if v in variants]
    results = []
    for variant in todo:
        print(f"[{time.strftime('%H:%M:%S')}] {variant} ...", flush=True)
        results.append(run_variant(root, variant, variant_params(variant, extra), baseline))
        print(f"[{time.strftime('%H:%M:%S')}] {row(results[-1])}", flush=True)
    return results


# ----------------------------------------------------------------------------- output


def row(result: Result) -> str:
    """A line of the results table: scores in percent, then wall time and what it went to."""
    stages = " ".join(f"{k}={v:.0f}" for k, v in result.stages_s.items())
    return (
        f"{result.variant:10s} {100 * result.acc:6.2f} {100 * result.f1:6.2f} "
        f"{100 * result.mcc:6.2f} {result.wall_s:8.1f}  {stages}"
    )


def verdicts(by_name: dict[str, Result]) -> list[str]:
    """The issue's three targets, for whichever variants ran."""
    lines = []
    if "pretrained" in by_name:
        acc = 100 * by_name["pretrained"].acc
        lines.append(f"pretrained dev accuracy {acc:.2f} % (target >= 85)")
        if "tfidf" in by_name:
            gap = acc - 100 * by_name["tfidf"].acc
            lines.append(f"pretrained vs tfidf: {gap:+.2f} points (must be > 0)")
        if "scratch" in by_name:
            gain = acc - 100 * by_name["scratch"].acc
            lines.append(f"pretrained vs scratch: {gain:+.2f} points (target >= +2)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=DEFAULT_VARIANTS)
    parser.add_argument("--quick", action="store_true", help="tiny budget: the plumbing only")
    parser.add_argument("--shakespeare", action="store_true", help="add Tiny Shakespeare")
    parser.add_argument("--threads", default="1", help="OMP_NUM_THREADS of the stages")
    parser.add_argument("--pretrain-steps", type=int, help="pretrain.max_steps (default 600)")
    parser.add_argument(
        "--out", type=Path, help="keep the project copy and results.json in this folder"
    )
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = args.threads  # env() hands it to the stages
    extra = [SHAKESPEARE_CORPUS] if args.shakespeare else []
    extra += [QUICK] if args.quick else []
    extra += [{"pretrain": {"max_steps": args.pretrain_steps}}] if args.pretrain_steps else []

    results = [score_tfidf()] if "tfidf" in args.variants else []
    for result in results:
        print(f"{row(result)}  (issue: {100 * ISSUE_TFIDF_ACC:.1f} % acc)", flush=True)
    with tempfile.TemporaryDirectory(prefix="sst2_") as tmp:
        out = args.out or Path(tmp)
        if set(args.variants) - {"tfidf"}:
            results += run_pipeline(args.variants, out / "project", extra)
        (out / "results.json").write_text(json.dumps([asdict(r) for r in results], indent=2))

    print(f"\nSST-2 dev: {results[0].n} sentences; load average now {os.getloadavg()}")
    print("variant       acc     F1    MCC   wall s  stages run (s)")
    print("\n".join(row(r) for r in results))
    print("\n".join(verdicts({r.variant: r for r in results})))


if __name__ == "__main__":
    main()
