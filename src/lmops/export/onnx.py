"""ONNX exports of a model bundle, proven equal to PyTorch before they are kept.

A bundle becomes ``<out>/model.onnx`` plus ``<out>/verification.json``:

- an LM (``kind: lm``): ``input_ids`` int64 [batch, seq] -> ``logits`` float32 [batch, seq, vocab];
- a classifier: ``input_ids`` int64 [batch, seq] (right-padded) and ``lengths`` int64 [batch]
  (real tokens per row, as :func:`lmops.export.bundle.encode_padded` gives them) -> ``logits``
  float32 [batch, num_labels]. ``lengths`` rather than an attention mask because that is the
  classifier's own contract: it pools the hidden state at ``lengths - 1``.

Batch and sequence axes are dynamic (the sequence up to ``block_size``). We use the current
exporter, ``torch.onnx.export(..., dynamo=True)`` (torch.export underneath); the deprecated
TorchScript exporter is not used. An exporter can specialise a shape silently (SDPA's causal
mask traced at one length is the known trap), so right after export the file is run in ONNX
Runtime against the PyTorch model at two batch sizes and two sequence lengths, both different
from the traced ones, and any max |Δlogit| above :data:`TOLERANCE` (fp32) fails with one line.

Needs the ``onnx`` extra (onnx, onnxscript, onnxruntime): :func:`require_onnx` says so in one
line, and this module imports them only inside functions, so importing it is free.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmops.config import LmopsError
from lmops.io import atomic_write_json

__all__ = [
    "ONNX_FILE",
    "ONNX_PACKAGES",
    "OnnxExport",
    "TOLERANCE",
    "export_onnx",
    "require_onnx",
    "verify_onnx",
]

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")  # the `onnx` extra in pyproject.toml
TOLERANCE = 1e-4  # max |Δlogit| in fp32 between ONNX Runtime and PyTorch
TRACE_BATCH = 2  # >= 2: torch.export specialises an axis traced at size 0 or 1
VERIFY_BATCHES = (1, 3)  # both differ from TRACE_BATCH


def require_onnx() -> None:
    """Fail with one line naming the extra when any ONNX package is missing.

    Called before any work (the export stage checks this before it opens its run), so a missing
    extra costs nothing and says how to fix it.
    """
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise LmopsError(
            f"ONNX export (export.onnx: true) needs the 'onnx' extra; missing "
            f"{', '.join(missing)}: pip install -e '.[onnx]' (or set export.onnx: false)"
        )


@dataclass
class OnnxExport:
    """What :func:`export_onnx` wrote and measured (also saved as ``verification.json``)."""

    path: Path
    kind: str
    inputs: list[str]
    max_abs_diff: float
    traced: dict[str, int] = field(default_factory=dict)  # batch, seq of the example traced
    checks: list[dict[str, Any]] = field(default_factory=list)  # batch, seq, max_abs_diff each


class _LMLogits(nn.Module):
    """The GPT with only its logits as output: ``forward`` also returns a loss (None here), and
    an ONNX graph should have exactly the outputs a caller reads."""

    def __init__(self, gpt: nn.Module) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.gpt(input_ids)[0]


def _graph_module(kind: str, model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The module to export and its input names, by bundle kind."""
    if kind == "lm":
        return _LMLogits(model).eval(), ["input_ids"]
    if kind == "classifier":
        return model, ["input_ids", "lengths"]  # SequenceClassifier.forward(input_ids, lengths)
    raise LmopsError(f"cannot export a {kind!r} bundle to ONNX; expected lm or classifier")


def _inputs(
    input_names: list[str], vocab_size: int, batch: int, seq: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random token ids (and, for the classifier, random real lengths in [1, seq])."""
    out = {"input_ids": torch.randint(0, vocab_size, (batch, seq), generator=generator)}
    if "lengths" in input_names:
        out["lengths"] = torch.randint(1, seq + 1, (batch,), generator=generator)
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter and its optimizer log every graph pass at INFO (hundreds of lines under the
    stage's INFO logging); keep warnings and errors only while it runs."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _trace_and_check_lengths(block_size: int) -> tuple[int, list[int]]:
    """The sequence length to trace at, and two others to verify at: a short one and the
    longest the model accepts. Checking lengths other than the traced one is what catches an
    axis the exporter specialised (the SDPA trap); tracing at >= 2 keeps torch.export from
    specialising a length of 1. Only a block_size of 2 forces a check at the traced length."""
    trace = max(2, block_size // 2)
    short = 3 if block_size > 3 and trace != 3 else 1
    return trace, sorted({short, block_size})


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def export_onnx(bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> OnnxExport:
    """Export the bundle at ``bundle_dir`` to ``out_dir/model.onnx``, verify it, and return the
    figures; raises :class:`LmopsError` (one line) if the export fails or the logits differ.

    ``out_dir`` is filled in place: callers that need atomicity (the export stage) pass a folder
    inside their own temp directory.
    """
    require_onnx()
    from lmops.export.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    model = bundle.model.float().eval()  # verification is defined in fp32
    module, input_names = _graph_module(bundle.kind, model)
    gpt_config = bundle.config["gpt"]
    block_size = int(gpt_config["block_size"])
    vocab_size = int(gpt_config["vocab_size"])
    if block_size < 2:
        raise LmopsError(f"{bundle_dir}: block_size {block_size} is too short for a dynamic axis")

    trace_seq, lengths = _trace_and_check_lengths(block_size)
    batch_dim = torch.export.Dim("batch")
    seq_dim = torch.export.Dim("seq", max=block_size)
    dynamic_shapes: dict[str, Any] = {"input_ids": {0: batch_dim, 1: seq_dim}}
    if "lengths" in input_names:
        dynamic_shapes["lengths"] = {0: batch_dim}
    example = _inputs(
        input_names, vocab_size, TRACE_BATCH, trace_seq, torch.Generator().manual_seed(0)
    )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ONNX_FILE
    try:
        with torch.no_grad(), _quiet_exporter():
            program = torch.onnx.export(
                module,
                tuple(example[name] for name in input_names),
                dynamo=True,
                input_names=input_names,
                output_names=["logits"],
                dynamic_shapes=tuple(dynamic_shapes[name] for name in input_names),
                verbose=False,
            )
        program.save(str(path))
    except Exception as exc:  # the exporter's messages run to pages; keep the first line
        raise LmopsError(f"ONNX export of {bundle_dir} failed: {_one_line(exc)}") from exc

    checks = verify_onnx(path, module, input_names, vocab_size, VERIFY_BATCHES, lengths)
    worst = max(c["max_abs_diff"] for c in checks)
    result = OnnxExport(
        path=path,
        kind=bundle.kind,
        inputs=input_names,
        max_abs_diff=worst,
        traced={"batch": TRACE_BATCH, "seq": trace_seq},
        checks=checks,
    )
    summary = {k: v for k, v in asdict(result).items() if k != "path"}
    atomic_write_json(
        out / "verification.json", {"file": ONNX_FILE, "tolerance": TOLERANCE, **summary}
    )
    log.info(
        "onnx: %s model verified in ONNX Runtime, max |Δlogit| %.2e over %d shapes",
        bundle.kind,
        worst,
        len(checks),
    )
    return result


def verify_onnx(
    path: str | os.PathLike[str],
    module: nn.Module,
    input_names: list[str],
    vocab_size: int,
    batches: tuple[int, ...] | list[int],
    lengths: tuple[int, ...] | list[int],
    tolerance: float = TOLERANCE,
) -> list[dict[str, Any]]:
    """Run ``path`` in ONNX Runtime and ``module`` in PyTorch on the same random inputs at every
    (batch, length); return each max |Δlogit|, or raise one line at the first above
    ``tolerance``. Lengths other than the traced one are what catch a specialised shape."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # share the CPU as torch is told to
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:
        raise LmopsError(f"{path} does not load in ONNX Runtime: {_one_line(exc)}") from exc
    generator = torch.Generator().manual_seed(1)
    checks = []
    for batch in batches:
        for seq in lengths:
            inputs = _inputs(input_names, vocab_size, batch, seq, generator)
            with torch.no_grad():
                expected = module(*(inputs[name] for name in input_names)).float().numpy()
            try:
                got = session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0]
            except Exception as exc:
                raise LmopsError(
                    f"{path} fails in ONNX Runtime at batch {batch}, length {seq}: {_one_line(exc)}"
                ) from exc
            if got.shape != expected.shape:
                raise LmopsError(
                    f"{path} gives logits of shape {tuple(got.shape)} at batch {batch}, length "
                    f"{seq}; PyTorch gives {tuple(expected.shape)} (a specialised axis?)"
                )
            diff = float(np.abs(got.astype(np.float32) - expected).max())
            if not diff <= tolerance:  # also catches NaN
                raise LmopsError(
                    f"{path} differs from PyTorch: max |Δlogit| {diff:.2e} > {tolerance:.0e} "
                    f"at batch {batch}, length {seq}"
                )
            checks.append({"batch": batch, "seq": seq, "max_abs_diff": diff})
    return checks
