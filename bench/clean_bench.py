"""Benchmark the clean stage end to end on >= 50 MB of real text with injected duplicates.

What: the clean stage's library path (read sources -> datatrove passes with the default
filters, exact dedup and MinHash near-dedup -> train/val JSONL), timed from the first byte
read to the last byte written. Reports MB/s (input MB / wall seconds), the share of injected
exact and near duplicates removed (recall), and the share of distinct documents that passed
the quality filters but were then removed as duplicates (false removals).

How: ``python bench/clean_bench.py [--mb 55] [--runs 3]``. The corpus goes to a temp folder
(from ../shared/data: tinyshakespeare paragraphs and SST-2 sentences, recombined). Prints one
JSON line per run and a summary with medians and load averages; the machine may be shared,
so read the load averages next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clean_data import build  # noqa: E402

from lmops.config import CleanConfig, DataExecutorConfig  # noqa: E402
from lmops.data.cleaning import run_clean, write_splits  # noqa: E402
from lmops.data.ingest import iter_shards  # noqa: E402
from lmops.data.sources import IngestStats, iter_source_documents, parse_sources  # noqa: E402


def one_run(corpus_dir: Path, work: Path, out: Path, cfg: CleanConfig, workers: int) -> dict:
    executor = DataExecutorConfig(workers=workers, keep_work=True)
    start = time.perf_counter()
    stats = IngestStats()
    sources = parse_sources([str(corpus_dir)], corpus_dir)
    docs = iter_source_documents(sources, stats, root=corpus_dir)
    run = run_clean(docs, cfg, work, executor=executor, ingest=stats)
    write_splits(run, out, val_fraction=cfg.val_fraction, seed=cfg.seed)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "report": run.report, "run": run}


def recall(pairs: list[tuple[str, str]], filtered: set[str], final: set[str]) -> tuple[float, int]:
    """Of the injected pairs whose both members passed the quality filters, the share where
    dedup left at most one."""
    live = [(a, b) for a, b in pairs if a in filtered and b in filtered]
    gone = sum(1 for a, b in live if not (a in final and b in final))
    return (gone / len(live) if live else float("nan")), len(live)


def survivors(path: Path, shards: int) -> set[str]:
    return {row["id"] for row in iter_shards(path, shards)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=55.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    ap.add_argument(
        "--shard-mb",
        type=float,
        nargs="+",
        help="clean.shard_mb values to alternate (default: the default)",
    )
    args = ap.parse_args()
    configs = (
        [CleanConfig(shard_mb=mb) for mb in args.shard_mb] if args.shard_mb else [CleanConfig()]
    )
    with tempfile.TemporaryDirectory(prefix="lmops-clean-bench-") as tmp:
        tmp = Path(tmp)
        t = time.perf_counter()
        corpus = build(tmp / "corpus", args.mb)
        print(
            f"built {corpus.bytes / 1e6:.1f} MB in {time.perf_counter() - t:.1f}s: "
            f"{len(corpus.distinct)} distinct, {len(corpus.exact_pairs)} exact and "
            f"{len(corpus.near_pairs)} near duplicates injected",
            flush=True,
        )
        rows = []
        for i in range(args.runs * len(configs)):
            cfg = configs[i % len(configs)]
            load_before = os.getloadavg()
            r = one_run(tmp / "corpus", tmp / f"work{i}", tmp / f"out{i}", cfg, args.workers)
            run = r["run"]
            final = survivors(run.final, run.shards)
            filtered = survivors(run.work / "filtered", run.shards)

            exact_recall, n_exact = recall(corpus.exact_pairs, filtered, final)
            near_recall, n_near = recall(corpus.near_pairs, filtered, final)
            distinct = [d for d in corpus.distinct if d in filtered]
            false_removed = sum(1 for d in distinct if d not in final)
            rep = r["report"]
            row = {
                "run": i,
                "shard_mb": cfg.shard_mb,
                "mb": round(corpus.bytes / 1e6, 2),
                "seconds": round(r["seconds"], 2),
                "mb_per_s": round(corpus.bytes / 1e6 / r["seconds"], 3),
                "exact_recall": round(exact_recall, 4),
                "exact_pairs": n_exact,
                "near_recall": round(near_recall, 4),
                "near_pairs": n_near,
                "false_removal_rate": round(false_removed / max(1, len(distinct)), 5),
                "false_removed": false_removed,
                "distinct_checked": len(distinct),
                "kept_fraction": round(rep["kept_fraction"], 4),
                "steps": {s["name"]: [s["docs_in"], s["docs_out"]] for s in rep["steps"]},
                "minhash": rep.get("minhash"),
                "shards": run.shards,
                "pass_seconds": rep.get("pass_seconds"),
                "load_before": [round(x, 2) for x in load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    for cfg in configs:
        mine = [r for r in rows if r["shard_mb"] == cfg.shard_mb]
        med = {
            k: statistics.median(r[k] for r in mine)
            for k in ("seconds", "mb_per_s", "near_recall", "exact_recall", "false_removal_rate")
        }
        summary = {"summary": "median of runs", "shard_mb": cfg.shard_mb, "runs": len(mine)}
        summary.update(cpus=os.cpu_count(), **med, mb_per_s_runs=[r["mb_per_s"] for r in mine])
        print(json.dumps({**summary, "load_1m": [r["load_before"][0] for r in mine]}))


if __name__ == "__main__":
    main()
