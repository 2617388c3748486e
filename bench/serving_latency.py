"""Serving costs (issue #13): classifier latency PyTorch vs ONNX Runtime, pyfunc load and first answer.

    python bench/serving_latency.py              # default model shape, 64 SST-2 dev sentences
    python bench/serving_latency.py --runs 50 --threads 2

What a served classifier pays per request and at start-up, on this CPU:

- **Batch latency**: the same 64 texts (the first 64 SST-2 dev sentences, read in place from
  ``../shared/data/sst2``), classified by ``lmops.export.bundle.classify`` (PyTorch, what the
  pyfunc runs) and by the export stage's ONNX file in ONNX Runtime on the same padded ids.
  Tokenizing is outside both timings (it is the same code for both). Median of ``--runs``
  after two warm-up calls, alternating PyTorch and ONNX Runtime so that load on a shared
  machine hits both alike; both get the same number of threads.
- **pyfunc load / first answer**: a fresh interpreter loads the saved pyfunc model with
  ``mlflow.pyfunc.load_model`` (imports included, which is what a server start pays) and
  answers one text; median over ``--loads`` processes.

The model is the default ``pretrain.model`` shape (4 layers, 4 heads, 128 wide, block 128) with
a classification head, randomly initialized: latency does not depend on the weights. The
tokenizer is a byte-level BPE of 2,048 trained on SST-2 train sentences, as the pipeline's
tokenize stage would.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = Path(__file__).resolve().parents[1]
SST2 = ROOT.parent / "shared" / "data" / "sst2"
SPECIALS = ["<|endoftext|>", "<|pad|>"]

LOAD_SCRIPT = """
import sys, time
start = time.perf_counter()
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
loaded = time.perf_counter()
model.predict([sys.argv[2]])
print(loaded - start, time.perf_counter() - loaded)
"""


def sentences(path: Path, column: str, n: int) -> list[str]:
    """The first ``n`` values of ``column`` in a TSV with a header."""
    with path.open(encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        at = header.index(column)
        return [line.rstrip("\n").split("\t")[at] for _, line in zip(range(n), f, strict=False)]


def build_bundle(work: Path) -> Path:
    """A default-shaped classifier bundle with an SST-2-trained tokenizer."""
    from lmops.config import ModelConfig
    from lmops.export.bundle import save_classifier_bundle
    from lmops.models.gpt import GPT
    from lmops.models.heads import SequenceClassifier

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sentences(SST2 / "train.tsv", "sentence", 20000), trainer)
    tok_path = work / "tokenizer.json"
    tok.save(str(tok_path))
    torch.manual_seed(0)
    config = ModelConfig().with_vocab(tok.get_vocab_size(), 2048)
    model = SequenceClassifier(GPT(config), num_labels=2).eval()
    eos, pad = (tok.token_to_id(s) for s in SPECIALS)
    return save_classifier_bundle(work / "clf", model, tok_path, ["0", "1"], 64, eos, pad)


def batch_latency(bundle_dir: Path, work: Path, texts: list[str], runs: int) -> dict[str, float]:
    """Median seconds per 64-text batch, PyTorch and ONNX Runtime, and their max |Δprob|."""
    import onnxruntime as ort

    from lmops.export.bundle import encode_padded, load_bundle
    from lmops.export.onnx import export_onnx

    bundle = load_bundle(bundle_dir)
    exported = export_onnx(bundle_dir, work / "onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(exported.path), options, providers=["CPUExecutionProvider"])
    ids, lengths = encode_padded(
        bundle.tokenizer, texts, int(bundle.config["max_length"]), bundle.pad_id
    )
    feeds = {"input_ids": ids.numpy(), "lengths": lengths.numpy()}

    def torch_call() -> np.ndarray:
        with torch.inference_mode():
            return torch.softmax(bundle.model(ids, lengths).float(), dim=-1).numpy()

    def onnx_call() -> np.ndarray:
        logits = session.run(None, feeds)[0]
        e = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    for _ in range(2):
        torch_call(), onnx_call()
    times: dict[str, list[float]] = {"pytorch": [], "onnxruntime": []}
    for _ in range(runs):
        for name, call in (("pytorch", torch_call), ("onnxruntime", onnx_call)):
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    diff = float(np.abs(torch_call() - onnx_call()).max())
    return {name: statistics.median(xs) for name, xs in times.items()} | {"max_abs_dprob": diff}


def pyfunc_load(bundle_dir: Path, work: Path, text: str, loads: int) -> tuple[float, float]:
    """Median (load seconds, first-answer seconds) over ``loads`` fresh interpreters."""
    from lmops.export.pyfunc import save_pyfunc

    target = work / "pyfunc"
    save_pyfunc(bundle_dir, target)
    load, first = [], []
    for _ in range(loads):
        out = subprocess.run(
            [sys.executable, "-c", LOAD_SCRIPT, str(target), text],
            capture_output=True,
            text=True,
            check=True,
        )
        a, b = (float(x) for x in out.stdout.split()[-2:])
        load.append(a)
        first.append(b)
    return statistics.median(load), statistics.median(first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="timed batches of each runtime")
    parser.add_argument("--loads", type=int, default=3, help="fresh-process pyfunc loads")
    parser.add_argument("--threads", type=int, default=1, help="threads of both runtimes")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the pyfunc subprocesses too
    torch.set_num_threads(args.threads)
    texts = sentences(SST2 / "dev.tsv", "content", 64)
    with tempfile.TemporaryDirectory(prefix="serving_") as tmp:
        work = Path(tmp)
        bundle_dir = build_bundle(work)
        lat = batch_latency(bundle_dir, work, texts, args.runs)
        load, first = pyfunc_load(bundle_dir, work, texts[0], args.loads)
    print(f"load average now {os.getloadavg()}; threads {args.threads}; {len(texts)} texts")
    print(
        f"batch of 64: PyTorch {1000 * lat['pytorch']:.1f} ms, ONNX Runtime "
        f"{1000 * lat['onnxruntime']:.1f} ms (PyTorch / ORT {lat['pytorch'] / lat['onnxruntime']:.2f}x"
        f"; max |dprob| {lat['max_abs_dprob']:.1e}; median of {args.runs})"
    )
    print(f"pyfunc: load {load:.2f} s, first answer {1000 * first:.0f} ms (median of {args.loads})")


if __name__ == "__main__":
    main()
