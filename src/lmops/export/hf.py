"""The LM as a Hugging Face ``GPT2LMHeadModel`` folder, proven equal to ours before it is kept.

The folder (``config.json``, ``generation_config.json``, ``model.safetensors``,
``tokenizer.json``, ``tokenizer_config.json``) loads offline with
``AutoModelForCausalLM.from_pretrained(path)`` and ``AutoTokenizer.from_pretrained(path)``.

Our decoder is GPT-2's architecture, so the mapping is exact when:

- positions are the learned table (``pos_embedding: learned``). GPT-2 has no rotary positions,
  so a RoPE model is refused with one line (:func:`check_hf_compatible`) rather than mapped to
  something that only looks alike;
- GPT-2's ``Conv1D`` (``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) stores its
  weight as [in, out], the transpose of ``nn.Linear``'s [out, in];
- our MLP uses exact GELU, which is ``activation_function: "gelu"`` (GPT-2's default
  ``gelu_new`` is the tanh approximation, off by ~1e-3 per activation);
- GPT-2 always has biases (Linear and LayerNorm): with ``bias: false`` we write zeros, which is
  the same function; LayerNorm eps is 1e-5 in both; attention is scaled by 1/sqrt(head size) in
  both; ``lm_head`` is tied to ``wte`` in both.

The classifier is *not* exported as ``GPT2ForSequenceClassification``: its ``score`` layer is a
Linear without bias, ours (``heads.SequenceClassifier.head``) has a trained bias, and the pooled
state comes after the final LayerNorm, so there is no constant feature to fold the bias into.
The pooling itself would map (HF reads the last non-pad token, we read ``lengths - 1``), but a
classifier that is only nearly ours is not exported: :data:`CLASSIFIER_NOT_EXACT` says why, and
the export stage logs it and skips the classifier.

An SFT model's prompt template travels in ``config.json`` as ``lmops_prompt_template``: HF does
not apply it, so callers wrap a prompt with it before generating, as ``lmops generate`` does.

Needs ``transformers`` (the ``hf`` extra); imported only inside functions.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmops.config import LmopsError, ModelConfig
from lmops.io import atomic_write_json

__all__ = [
    "CLASSIFIER_NOT_EXACT",
    "HfExport",
    "TOLERANCE",
    "check_hf_compatible",
    "export_hf",
    "gpt2_config",
    "gpt2_state_dict",
    "require_hf",
]

log = logging.getLogger(__name__)

TOLERANCE = 1e-4  # max |Δlogit| in fp32 between transformers and our GPT
CONV1D = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")  # stored [in, out] in GPT-2
CLASSIFIER_NOT_EXACT = (
    "GPT2ForSequenceClassification's score layer has no bias and ours has a trained one, so the "
    "classifier has no exact Hugging Face equivalent; only LMs are exported as HF folders"
)


def require_hf() -> None:
    """Fail with one line naming the extra when transformers is missing (before any work)."""
    if importlib.util.find_spec("transformers") is None:
        raise LmopsError(
            "Hugging Face export (export.hf: true) needs the 'hf' extra; missing transformers: "
            "pip install -e '.[hf]' (or set export.hf: false)"
        )


def check_hf_compatible(config: ModelConfig) -> None:
    """Raise one line when GPT-2 cannot express ``config`` exactly.

    Only the position scheme can differ today: everything else in :class:`ModelConfig`
    (bias, dropout, sizes) has an exact GPT-2 counterpart; ``activation_checkpointing`` only
    changes training memory.
    """
    if config.pos_embedding != "learned":
        raise LmopsError(
            f"a model with pos_embedding {config.pos_embedding!r} has no GPT-2 equivalent "
            "(GPT-2 has a learned position table, no rotary positions); set export.hf: false "
            "or pretrain with pretrain.model.pos_embedding: learned"
        )


def gpt2_config(
    config: ModelConfig, eos_id: int, pad_id: int, prompt_template: str | None = None
) -> dict[str, Any]:
    """``GPT2Config`` keyword arguments for our shape: exact GELU, same eps, our special ids."""
    check_hf_compatible(config)
    out: dict[str, Any] = {
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": 4 * config.n_embd,
        "activation_function": "gelu",  # exact erf GELU, as nn.GELU(); gelu_new is tanh
        "layer_norm_epsilon": 1e-5,  # nn.LayerNorm's default
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "bos_token_id": int(eos_id),
        "eos_token_id": int(eos_id),
        "pad_token_id": int(pad_id),
    }
    if prompt_template is not None:
        out["lmops_prompt_template"] = prompt_template
    return out


def gpt2_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Our GPT's weights under GPT-2's names: Conv1D weights transposed, zero biases where we
    have none, ``lm_head`` the same tensor as ``wte`` (tied)."""
    config: ModelConfig = model.config  # type: ignore[assignment]
    check_hf_compatible(config)
    ours = {k: v.detach().float() for k, v in model.state_dict().items()}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in ours.items():
        if name == "lm_head.weight":
            continue  # tied: written once, as wte
        out[name] = tensor.t().contiguous() if _is_conv1d_weight(name) else tensor.clone()

    def zeros_unless(name: str, size: int) -> None:
        out.setdefault(name, torch.zeros(size))

    C = config.n_embd
    for i in range(config.n_layer):
        p = f"transformer.h.{i}."
        zeros_unless(p + "ln_1.bias", C)
        zeros_unless(p + "attn.c_attn.bias", 3 * C)
        zeros_unless(p + "attn.c_proj.bias", C)
        zeros_unless(p + "ln_2.bias", C)
        zeros_unless(p + "mlp.c_fc.bias", 4 * C)
        zeros_unless(p + "mlp.c_proj.bias", C)
    zeros_unless("transformer.ln_f.bias", C)
    out["lm_head.weight"] = out["transformer.wte.weight"]
    return out


def _is_conv1d_weight(name: str) -> bool:
    return name.endswith(".weight") and any(f".{m}." in f".{name}" for m in CONV1D)


@dataclass
class HfExport:
    """What :func:`export_hf` wrote and measured (also saved as ``lmops_verification.json``)."""

    path: Path
    max_abs_diff: float
    checks: list[dict[str, Any]] = field(default_factory=list)


def export_hf(bundle_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> HfExport:
    """Write the LM bundle at ``bundle_dir`` as a ``GPT2LMHeadModel`` folder at ``out_dir``,
    reload it with ``AutoModelForCausalLM`` and compare logits at two batch sizes and two
    lengths; raises :class:`LmopsError` (one line) on a classifier, a rotary model or a
    difference above :data:`TOLERANCE`."""
    require_hf()
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-shard bars are noise in a stage log

    from lmops.export.bundle import load_bundle

    bundle = load_bundle(bundle_dir)
    if bundle.kind != "lm":
        raise LmopsError(f"{bundle_dir}: {CLASSIFIER_NOT_EXACT}")
    model = bundle.model.float().eval()
    config = model.config
    check_hf_compatible(config)

    hf_config = GPT2Config(
        **gpt2_config(config, bundle.eos_id, bundle.pad_id, bundle.config.get("prompt_template"))
    )
    hf_model = GPT2LMHeadModel(hf_config)
    missing, unexpected = hf_model.load_state_dict(gpt2_state_dict(model), strict=False)
    # GPT-2 may keep non-persistent buffers (the causal mask) out of the state dict; anything
    # else missing or left over means the name mapping is wrong
    if unexpected or [k for k in missing if not k.endswith((".attn.bias", ".masked_bias"))]:
        raise LmopsError(f"GPT-2 name mapping is off: missing {missing}, unexpected {unexpected}")
    hf_model.tie_weights()

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_model.save_pretrained(str(out))
    _write_tokenizer(bundle, out)

    checks = _verify(out, model, int(config.vocab_size), int(config.block_size))
    worst = max(c["max_abs_diff"] for c in checks)
    atomic_write_json(
        out / "lmops_verification.json",
        {"tolerance": TOLERANCE, "max_abs_diff": worst, "checks": checks},
    )
    log.info(
        "hf: GPT2LMHeadModel folder verified, max |Δlogit| %.2e over %d shapes", worst, len(checks)
    )
    return HfExport(path=out, max_abs_diff=worst, checks=checks)


def _write_tokenizer(bundle: Any, out: Path) -> None:
    """``tokenizer.json`` as trained, plus a ``tokenizer_config.json`` naming the special tokens.

    Written by hand rather than by ``PreTrainedTokenizerFast.save_pretrained``: transformers 5
    records its own ``TokenizersBackend`` class there, which transformers 4 cannot load, while
    ``PreTrainedTokenizerFast`` loads in both.
    """
    shutil.copyfile(bundle.path / "tokenizer.json", out / "tokenizer.json")
    eos = bundle.tokenizer.id_to_token(bundle.eos_id)
    pad = bundle.tokenizer.id_to_token(bundle.pad_id)
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": eos,
        "eos_token": eos,
        "pad_token": pad,
        "model_max_length": int(bundle.config["gpt"]["block_size"]),
        "clean_up_tokenization_spaces": False,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")


def _verify(
    folder: Path, model: torch.nn.Module, vocab_size: int, block_size: int
) -> list[dict[str, Any]]:
    """Reload the folder the way a user would and compare its logits with ours."""
    from transformers import AutoModelForCausalLM

    hf_model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    generator = torch.Generator().manual_seed(2)
    checks = []
    for batch in (1, 3):
        for seq in sorted({min(3, block_size), block_size}):
            ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
            with torch.no_grad():
                expected = model(ids)[0].float()
                got = hf_model(input_ids=ids).logits.float()
            diff = float((got - expected).abs().max())
            if not diff <= TOLERANCE:  # also catches NaN
                raise LmopsError(
                    f"{folder} differs from the lmops model: max |Δlogit| {diff:.2e} > "
                    f"{TOLERANCE:.0e} at batch {batch}, length {seq}"
                )
            checks.append({"batch": batch, "seq": seq, "max_abs_diff": diff})
    return checks
