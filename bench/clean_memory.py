"""Peak memory of the clean stage on line-per-document text files of growing size (issue #15).

    python bench/clean_memory.py                 # 10 MB and 50 MB, one process each
    python bench/clean_memory.py --mb 10 25 50

What: a ``.txt`` corpus with one document per line (``data.txt_split: lines``), no blank lines,
built from SST-2 train sentences and Tiny Shakespeare lines (read in place from
``../shared/data``), each line made distinct by a counter so that dedup does not shrink the
bigger file more than the smaller. Each size is cleaned by the clean stage's library path
(read → datatrove passes with the default rules → train/val JSONL), one data worker, in a fresh
interpreter; the figure is that process's peak RSS (``ru_maxrss``, children included) and its
wall time. Flat memory means the peak does not grow with the file: the reader streams and the
passes work shard by shard.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

CHILD = """
import json, resource, sys, time
from pathlib import Path
from lmops.config import CleanConfig, DataExecutorConfig
from lmops.data.cleaning import run_clean, write_splits
from lmops.data.sources import IngestStats, iter_source_documents, parse_sources

corpus, work, out = (Path(p) for p in sys.argv[1:4])
cfg = CleanConfig()
if sys.argv[4] == "no-dedup":  # what the dedup indexes add: they grow with the documents
    cfg.exact_dedup = False
    cfg.minhash.enabled = False
start = time.perf_counter()
stats = IngestStats()
sources = parse_sources([str(corpus)], corpus.parent)
docs = iter_source_documents(sources, stats, root=corpus.parent, txt_split="lines")
run = run_clean(docs, cfg, work, executor=DataExecutorConfig(workers=1), ingest=stats)
write_splits(run, out, val_fraction=cfg.val_fraction, seed=cfg.seed)
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": time.perf_counter() - start, "self_mb": self_kb / 1024,
                  "children_mb": children_kb / 1024,
                  "docs_in": run.report.get("docs_in"), "docs_out": run.report.get("docs_out")}))
"""


def source_lines() -> list[str]:
    """Sentences and verse lines long enough to pass the default length rules when joined."""
    sst = (SHARED / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
    sentences = [row.split("\t")[0] for row in sst]
    verse = (SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").splitlines()
    return [s for s in sentences + verse if len(s.split()) >= 5]


def build(path: Path, megabytes: float, lines: list[str]) -> Path:
    """``megabytes`` of text, one document per line: four source lines joined, plus a counter."""
    target = int(megabytes * 1e6)
    written, i = 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < target:
            doc = " ".join(lines[(i * 4 + k) % len(lines)] for k in range(4)) + f" ({i})\n"
            f.write(doc)
            written += len(doc.encode("utf-8"))
            i += 1
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, nargs="+", default=[10.0, 50.0])
    parser.add_argument("--no-dedup", action="store_true", help="exact and MinHash dedup off")
    args = parser.parse_args()
    lines = source_lines()
    rows = []
    with tempfile.TemporaryDirectory(prefix="clean_memory_") as tmp:
        for mb in args.mb:
            folder = Path(tmp) / f"{mb:g}mb"
            folder.mkdir()
            corpus = build(folder / "corpus.txt", mb, lines)
            started = time.perf_counter()
            out = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    CHILD,
                    str(corpus),
                    str(folder / "work"),
                    str(folder / "out"),
                    "no-dedup" if args.no_dedup else "dedup",
                ],
                capture_output=True,
                text=True,
                check=True,
                env=dict(os.environ, OMP_NUM_THREADS="1"),
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row |= {"mb": mb, "wall": time.perf_counter() - started}
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nload average now {os.getloadavg()}")
    print("MB    docs in    docs out   clean s   peak RSS MB (process / largest child)")
    for r in rows:
        print(
            f"{r['mb']:<5g} {r['docs_in']:>9} {r['docs_out']:>10} {r['seconds']:>8.1f}   "
            f"{r['self_mb']:.0f} / {r['children_mb']:.0f}"
        )


if __name__ == "__main__":
    main()
