"""Hugging Face export: the GPT2LMHeadModel folder loads offline with the Auto classes, gives our
logits within 1e-4 and our greedy tokens; a rotary model and a missing extra fail with one line;
the classifier is skipped with the reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lmops.config import ExportConfig, LmopsError, ModelConfig
from lmops.export.bundle import generate_text, load_bundle, save_lm_bundle
from lmops.export.formats import ExtraFormats, check_formats
from lmops.export.hf import (
    CLASSIFIER_NOT_EXACT,
    check_hf_compatible,
    export_hf,
    gpt2_state_dict,
)
from lmops.models.gpt import GPT
from tests.unit.test_bundle import make_classifier_bundle, tiny_tokenizer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def transformers() -> Any:
    """transformers, or a clean skip when the hf extra is not installed."""
    return pytest.importorskip("transformers")


def lm_bundle(root: Path, *, bias: bool, pos_embedding: str = "learned") -> Path:
    tok, eos, pad = tiny_tokenizer(root / "tok" / "tokenizer.json")
    torch.manual_seed(5)
    config = ModelConfig(
        vocab_size=320, block_size=32, n_layer=2, n_head=2, n_embd=16, bias=bias,
        pos_embedding=pos_embedding,
    )  # fmt: skip
    model = GPT(config)
    with torch.no_grad():  # non-trivial LayerNorm gains and biases, so a mapping slip shows
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.normal_(0.0 if name.endswith("bias") else 1.0, 0.3)
    return save_lm_bundle(root / "lm", model, tok, eos, pad)


@pytest.mark.parametrize("bias", [False, True])
def test_hf_folder_gives_our_logits_and_greedy_tokens(
    tmp_path: Path, transformers: Any, bias: bool
) -> None:
    bundle_dir = lm_bundle(tmp_path, bias=bias)
    result = export_hf(bundle_dir, tmp_path / "hf")
    assert result.max_abs_diff <= 1e-4
    names = {p.name for p in result.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names

    bundle = load_bundle(bundle_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(
        str(result.path), local_files_only=True
    ).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(result.path), local_files_only=True)
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert hf.config.activation_function == "gelu"
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()  # tied
    assert (tok.eos_token_id, tok.pad_token_id) == (bundle.eos_id, bundle.pad_id)

    prompt = "the cat sat on"
    ids = tok(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == bundle.tokenizer.encode(prompt, add_special_tokens=False).ids
    # logits at a batch size and length the export's own check did not use
    batch = torch.randint(0, 300, (2, 11))
    with torch.no_grad():
        diff = (hf(input_ids=batch).logits - bundle.model(batch)[0]).abs().max().item()
    assert diff <= 1e-4

    # greedy generation: the same tokens as our KV-cache generate and the same text as
    # `lmops generate` (prompt + new tokens stay within block_size: GPT-2 cannot slide)
    n = 32 - ids.size(1)
    ours = bundle.model.generate(ids, n, temperature=0.0, eos_id=bundle.eos_id)
    theirs = hf.generate(
        ids,
        max_new_tokens=n,
        do_sample=False,
        eos_token_id=bundle.eos_id,
        pad_token_id=bundle.pad_id,
    )
    assert theirs[0].tolist() == ours[0].tolist()
    new = theirs[0, ids.size(1) :].tolist()
    new = new[: new.index(bundle.eos_id)] if bundle.eos_id in new else new
    _, text = generate_text(bundle, prompt, max_new_tokens=n, temperature=0.0)
    assert tok.decode(ids[0].tolist() + new, skip_special_tokens=True) == prompt + text


def test_state_dict_mapping_transposes_conv1d_and_fills_zero_biases() -> None:
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=8))
    sd = gpt2_state_dict(model)
    ours = model.state_dict()
    for name in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        key = f"transformer.h.0.{name}.weight"
        assert torch.equal(sd[key], ours[key].t())
        assert torch.count_nonzero(sd[f"transformer.h.0.{name}.bias"]) == 0  # bias: false
    assert torch.equal(sd["transformer.h.0.ln_1.weight"], ours["transformer.h.0.ln_1.weight"])
    assert sd["lm_head.weight"] is sd["transformer.wte.weight"]


def test_rotary_model_is_refused_with_one_line(tmp_path: Path, transformers: Any) -> None:
    config = ModelConfig(vocab_size=64, block_size=8, n_layer=1, n_head=2, n_embd=8,
                         pos_embedding="rope")  # fmt: skip
    with pytest.raises(LmopsError, match="no GPT-2 equivalent") as info:
        check_hf_compatible(config)
    assert "\n" not in str(info.value)
    bundle = lm_bundle(tmp_path, bias=False, pos_embedding="rope")
    with pytest.raises(LmopsError, match="rope.*no GPT-2 equivalent"):
        export_hf(bundle, tmp_path / "hf")
    # the stage's up-front check names the model folder and the param, before any work
    with pytest.raises(LmopsError, match=r"export\.hf: .*lm: .*no GPT-2 equivalent"):
        check_formats(ExportConfig(hf=True), {"lm": bundle})
    assert not (tmp_path / "hf").exists()


def test_classifier_is_skipped_with_the_reason(tmp_path: Path, transformers: Any) -> None:
    bundle = make_classifier_bundle(tmp_path)
    with pytest.raises(LmopsError, match="no exact Hugging Face equivalent"):
        export_hf(bundle, tmp_path / "hf")
    extras = ExtraFormats(ExportConfig(hf=True))
    assert extras(bundle, tmp_path / "dest") == {}
    assert extras.summary == {"hf": {"skipped": CLASSIFIER_NOT_EXACT}}
    assert not (tmp_path / "dest" / "hf").exists()
    check_formats(ExportConfig(hf=True), {"finetuned": bundle})  # a classifier is no error


def test_missing_extra_is_named_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "transformers" else real(name, *a),
    )
    with pytest.raises(LmopsError, match=r"'hf' extra; missing transformers") as info:
        check_formats(ExportConfig(hf=True), {"lm": tmp_path / "not-read"})
    assert "pip install" in str(info.value) and "\n" not in str(info.value)


def test_sft_prompt_template_travels_in_config(tmp_path: Path, transformers: Any) -> None:
    tok, eos, pad = tiny_tokenizer(tmp_path / "tok" / "tokenizer.json")
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=320, block_size=16, n_layer=1, n_head=2, n_embd=8))
    template = "{prompt}\n### Response:\n"
    bundle = save_lm_bundle(tmp_path / "sft", model, tok, eos, pad, prompt_template=template)
    out = export_hf(bundle, tmp_path / "hf").path
    assert json.loads((out / "config.json").read_text())["lmops_prompt_template"] == template
