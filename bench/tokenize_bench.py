"""Benchmark sharded tokenization against a bare ``Tokenizer.encode_batch``, and its memory.

What:
- throughput: the tokenize stage's ``encode_corpus`` (read JSONL, encode on every core, write
  uint16 token shards, join them) against ``Tokenizer.encode_batch`` over the same texts,
  already in memory, in batches of the same size, in this same script; ratio = bare seconds /
  stage seconds (1.0 = no overhead);
- memory: peak RSS of the stage's encode on a 50 MB and a 200 MB corpus, each in a fresh
  subprocess, measured with ``resource.getrusage(RUSAGE_CHILDREN)`` (includes its workers).

How: ``python bench/tokenize_bench.py [--mb 50] [--big-mb 200] [--runs 3]``. Corpora go to a
temp folder, built from ../shared/data (see clean_data.py). The machine may be shared: the
load averages are printed next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clean_data import make_document, pieces  # noqa: E402

from lmops.config import DataExecutorConfig, TokenizeConfig  # noqa: E402
from lmops.data.shards import BATCH_DOCUMENTS, encode_corpus  # noqa: E402
from lmops.data.tokenizer import special_ids, train_tokenizer  # noqa: E402


def write_corpus(path: Path, mb: float, seed: int = 0) -> int:
    rng = random.Random(seed)
    paragraphs, sentences = pieces()
    size = n = 0
    with open(path, "w", encoding="utf-8") as fh:
        while size < mb * 1e6:
            text = make_document(rng, paragraphs, sentences)
            fh.write(json.dumps({"id": f"d{n}", "text": text}) + "\n")
            size += len(text.encode("utf-8"))
            n += 1
    return size


def ensure_tokenizer(folder: Path, corpus: Path) -> Path:
    path = folder / "tokenizer.json"
    if not path.exists():
        texts = []
        with open(corpus, encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= 5000:
                    break
                texts.append(json.loads(line)["text"])
        train_tokenizer(texts, TokenizeConfig()).save(str(path))
    return path


def encode_child(tokenizer: Path, corpus: Path, out: Path, workers: int) -> None:
    """Runs in a subprocess: the stage's encode, nothing else."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    eos, _ = special_ids(tok, TokenizeConfig())
    t = time.perf_counter()
    tokens, docs = encode_corpus(
        tokenizer,
        corpus,
        out,
        eos,
        "uint16",
        work=out.parent / "work",
        executor=DataExecutorConfig(workers=workers),
    )
    print(json.dumps({"tokens": tokens, "docs": docs, "seconds": time.perf_counter() - t}))


def peak_rss_mb(tokenizer: Path, corpus: Path, out: Path, workers: int) -> dict:
    """Peak RSS (MB) of a fresh process running the stage's encode, workers included."""
    cmd = [sys.executable, __file__, "--child", str(tokenizer), str(corpus), str(out)]
    cmd += ["--workers", str(workers)]
    wrapper = (
        "import resource, subprocess, sys, json\n"
        f"p = subprocess.run({cmd!r}, capture_output=True, text=True)\n"
        "assert p.returncode == 0, p.stderr[-2000:]\n"
        "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
        "print(json.dumps({'maxrss_kb': r.ru_maxrss, 'child': json.loads(p.stdout.splitlines()[-1])}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    res = json.loads(proc.stdout.splitlines()[-1])
    return {"peak_rss_mb": round(res["maxrss_kb"] / 1024, 1), **res["child"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--big-mb", type=float, default=200.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="0: all cores")
    ap.add_argument("--child", nargs=3, default=None)
    args = ap.parse_args()
    if args.child:
        encode_child(*(Path(p) for p in args.child), workers=args.workers)
        return

    from tokenizers import Tokenizer

    with tempfile.TemporaryDirectory(prefix="lmops-tok-bench-") as tmp:
        tmp = Path(tmp)
        small = tmp / "small.jsonl"
        nbytes = write_corpus(small, args.mb)
        tokenizer = ensure_tokenizer(tmp, small)
        tok = Tokenizer.from_file(str(tokenizer))
        eos, _ = special_ids(tok, TokenizeConfig())
        with open(small, encoding="utf-8") as fh:
            texts = [json.loads(line)["text"] for line in fh]
        rows = []
        for i in range(args.runs):
            load = os.getloadavg()
            t = time.perf_counter()
            n_bare = 0
            for s in range(0, len(texts), BATCH_DOCUMENTS):
                n_bare += sum(len(e.ids) for e in tok.encode_batch(texts[s : s + BATCH_DOCUMENTS]))
            bare = time.perf_counter() - t
            t = time.perf_counter()
            tokens, docs = encode_corpus(
                tokenizer,
                small,
                tmp / "stage.bin",
                eos,
                "uint16",
                work=tmp / "work",
                executor=DataExecutorConfig(workers=args.workers),
            )
            stage = time.perf_counter() - t
            assert tokens == n_bare + docs  # same ids, plus one EOS per document
            row = {
                "run": i,
                "mb": round(nbytes / 1e6, 1),
                "bare_s": round(bare, 2),
                "stage_s": round(stage, 2),
                "bare_mb_s": round(nbytes / 1e6 / bare, 2),
                "stage_mb_s": round(nbytes / 1e6 / stage, 2),
                "ratio": round(bare / stage, 3),
                "load_before": [round(x, 2) for x in load],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
        del texts
        big = tmp / "big.jsonl"
        big_bytes = write_corpus(big, args.big_mb, seed=1)
        rss = {}
        for name, corpus, size in (("small", small, nbytes), ("big", big, big_bytes)):
            res = peak_rss_mb(tokenizer, corpus, tmp / f"rss-{name}.bin", args.workers)
            rss[f"{size / 1e6:.0f}MB"] = res
            print(json.dumps({"rss": name, "mb": round(size / 1e6, 1), **res}), flush=True)
    print(
        json.dumps(
            {
                "summary": "median of runs",
                "runs": len(rows),
                "cpus": os.cpu_count(),
                "bare_mb_s": statistics.median(r["bare_mb_s"] for r in rows),
                "stage_mb_s": statistics.median(r["stage_mb_s"] for r in rows),
                "ratio": statistics.median(r["ratio"] for r in rows),
                "peak_rss_mb": {k: v["peak_rss_mb"] for k, v in rss.items()},
                "load_1m": [r["load_before"][0] for r in rows],
            }
        )
    )


if __name__ == "__main__":
    main()
