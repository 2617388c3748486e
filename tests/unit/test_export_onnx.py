"""ONNX exports: the file ONNX Runtime runs gives PyTorch's logits (within 1e-4) at lengths and
batch sizes other than the traced ones, a difference fails with one line, and a missing extra
says which one before any work."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmops.config import ExportConfig, LmopsError, ModelConfig
from lmops.export import onnx as lmops_onnx
from lmops.export.bundle import encode_padded, load_bundle, save_classifier_bundle
from lmops.export.formats import ExtraFormats, check_formats
from lmops.export.pyfunc import export_model
from lmops.models.gpt import GPT
from lmops.models.heads import SequenceClassifier
from tests.unit.test_bundle import LABELS, make_lm_bundle, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def ort() -> Any:
    """onnxruntime, or a clean skip when the onnx extra is not installed."""
    for name in lmops_onnx.ONNX_PACKAGES:
        pytest.importorskip(name)
    import onnxruntime

    return onnxruntime


def session(ort: Any, path: Path) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_lm_onnx_equals_pytorch_at_a_second_length_and_rides_in_the_pyfunc(
    tmp_path: Path, ort: Any
) -> None:
    bundle = make_lm_bundle(tmp_path)
    extras = ExtraFormats(ExportConfig(onnx=True))
    assert export_model(bundle, tmp_path / "export" / "lm", extras=extras)

    dest = tmp_path / "export" / "lm"
    model_file = dest / "onnx" / "model.onnx"
    # the pyfunc model (what gets registered) carries the same file
    carried = dest / "pyfunc" / "artifacts" / "onnx" / "model.onnx"
    assert carried.read_bytes() == model_file.read_bytes()
    report = json.loads((dest / "onnx" / "verification.json").read_text())
    assert report["max_abs_diff"] <= 1e-4 and len(report["checks"]) == 4
    assert {c["batch"] for c in report["checks"]} == {1, 3}
    # two lengths, neither the traced one: a shape specialised at export would fail there
    seqs = {c["seq"] for c in report["checks"]}
    assert len(seqs) == 2 and report["traced"]["seq"] not in seqs
    assert extras.metrics["onnx_max_abs_diff"] == report["max_abs_diff"]
    assert extras.summary["onnx"]["inputs"] == ["input_ids"]

    # our own check, at shapes the export's verification did not use
    model = load_bundle(bundle).model
    run = session(ort, model_file)
    names = [i.name for i in run.get_inputs()]
    assert names == ["input_ids"] and run.get_inputs()[0].shape == ["batch", "seq"]
    for batch, seq in ((2, 5), (4, 17)):
        ids = torch.randint(0, 300, (batch, seq))
        with torch.no_grad():
            expected = model(ids)[0]
        got = torch.from_numpy(run.run(["logits"], {"input_ids": ids.numpy()})[0])
        assert got.shape == (batch, seq, model.config.vocab_size)
        assert (got - expected).abs().max().item() <= 1e-4


def test_classifier_onnx_rope_with_bias_matches_classify(tmp_path: Path, ort: Any) -> None:
    tok, eos, pad = tiny_tokenizer(tmp_path / "tok" / "tokenizer.json")
    torch.manual_seed(3)
    gpt = GPT(
        ModelConfig(
            vocab_size=320, block_size=24, n_layer=1, n_head=2, n_embd=16, bias=True,
            pos_embedding="rope",
        )
    )  # fmt: skip
    model = SequenceClassifier(gpt, num_labels=len(LABELS))
    with torch.no_grad():
        for p in model.parameters():  # biases too, so a dropped bias would show
            p.normal_(0.0, 0.3)
    bundle = save_classifier_bundle(tmp_path / "clf", model, tok, LABELS, 24, eos, pad)

    result = lmops_onnx.export_onnx(bundle, tmp_path / "onnx")
    assert result.inputs == ["input_ids", "lengths"] and result.max_abs_diff <= 1e-4

    texts = ["a good film", "the cat sat on the mat and the dog ran to the park.", ""]
    ids, lengths = encode_padded(load_bundle(bundle).tokenizer, texts, 24, pad)
    with torch.no_grad():
        expected = load_bundle(bundle).model(ids, lengths)
    got = session(ort, result.path).run(
        ["logits"], {"input_ids": ids.numpy(), "lengths": lengths.numpy()}
    )[0]
    assert got.shape == (3, len(LABELS))
    assert (torch.from_numpy(got) - expected).abs().max().item() <= 1e-4


def test_a_difference_fails_with_one_line(tmp_path: Path, ort: Any) -> None:
    bundle = make_lm_bundle(tmp_path)
    result = lmops_onnx.export_onnx(bundle, tmp_path / "onnx")
    other = load_bundle(make_lm_bundle(tmp_path / "other", seed=7)).model
    with pytest.raises(LmopsError, match=r"differs from PyTorch: max \|Δlogit\|") as info:
        lmops_onnx.verify_onnx(
            result.path, lmops_onnx._LMLogits(other), ["input_ids"], 320, [1], [4]
        )
    assert "\n" not in str(info.value)


def test_missing_extra_is_named_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "onnxruntime" else real(name, *a),
    )
    with pytest.raises(LmopsError, match=r"'onnx' extra; missing onnxruntime") as info:
        check_formats(ExportConfig(onnx=True), {"lm": tmp_path / "does-not-matter"})
    assert "pip install" in str(info.value) and "\n" not in str(info.value)
    check_formats(ExportConfig(onnx=False), {"lm": tmp_path})  # off: nothing is required
