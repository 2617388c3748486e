"""MLflow pyfunc models: typed signatures, and they load and answer in a fresh process without lmops."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException

from lmops.config import LmopsError
from lmops.export.bundle import classify, find_bundle, generate_batch, generate_text, load_bundle
from lmops.export.pyfunc import save_pyfunc
from lmops.models.generation import GenerationParams
from tests.unit.test_bundle import LABELS, make_classifier_bundle, make_lm_bundle

# Loads the model in a new interpreter after removing every sys.path entry that holds an
# `lmops` package (the editable install): only the copy shipped in the model's code/ folder
# can satisfy the import, which proves code_paths works.
FRESH = r"""
import json, os, sys
sys.path = [p for p in sys.path if not os.path.isdir(os.path.join(p or os.getcwd(), "lmops"))]
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
params = json.loads(sys.argv[3]) or None
out = model.predict(json.loads(sys.argv[2]), params=params)
import lmops
print(json.dumps({"lmops": lmops.__file__, "out": out}))
"""


def predict_fresh(model_dir: Path, inputs: list[str], params: dict | None, cwd: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(model_dir), json.dumps(inputs), json.dumps(params)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_classifier_pyfunc_signature_and_fresh_process(tmp_path: Path) -> None:
    bundle = make_classifier_bundle(tmp_path)
    out = tmp_path / "pyfunc"
    save_pyfunc(bundle, out)
    assert (out / "code" / "lmops" / "export" / "pyfunc.py").is_file()
    assert find_bundle(out).parent == out / "artifacts"  # the bundle travels inside the model

    sig = mlflow.models.Model.load(str(out)).signature
    assert sig.inputs.to_dict() == [{"type": "string", "required": True}]
    outputs = json.dumps(sig.outputs.to_dict())
    assert '"label"' in outputs and '"probability"' in outputs

    texts = ["the cat sat on the mat", "not good", "a bad film"]
    answer = predict_fresh(out, texts, None, tmp_path)
    assert answer["lmops"].startswith(str(out / "code"))
    expected = classify(load_bundle(bundle), texts)
    assert [a["label"] for a in answer["out"]] == [e["label"] for e in expected]
    assert [a["probability"] for a in answer["out"]] == pytest.approx(
        [e["probability"] for e in expected], abs=1e-5
    )
    assert all(a["label"] in LABELS for a in answer["out"])


def test_generator_pyfunc_params_and_fresh_process(tmp_path: Path) -> None:
    bundle = make_lm_bundle(tmp_path)
    out = tmp_path / "pyfunc"
    save_pyfunc(bundle, out, max_new_tokens=5)
    sig = mlflow.models.Model.load(str(out)).signature
    assert sig.inputs.to_dict() == [{"type": "string", "required": True}]
    assert sig.outputs.to_dict() == [{"type": "string", "required": True}]
    defaults = {p.name: p.default for p in sig.params.params}
    assert defaults == {
        "max_new_tokens": 5,
        "temperature": 0.8,
        "top_k": 0,
        "top_p": 1.0,
        "stop": [],
        "seed": -1,
    }

    prompts = ["the cat", "once upon"]
    answer = predict_fresh(out, prompts, {"max_new_tokens": 4, "temperature": 0.0}, tmp_path)
    assert answer["lmops"].startswith(str(out / "code"))
    b = load_bundle(bundle)
    assert answer["out"] == [
        generate_text(b, p, max_new_tokens=4, temperature=0)[1] for p in prompts
    ]

    # in process: seeded sampling repeats, and the default length comes from save time
    model = mlflow.pyfunc.load_model(str(out))
    first = model.predict(["the"], params={"seed": 3})
    assert first == model.predict(["the"], params={"seed": 3})
    assert first == [generate_text(b, "the", max_new_tokens=5, seed=3)[1]]


def test_save_pyfunc_rejects_a_folder_without_bundle(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(LmopsError, match="no model bundle"):
        save_pyfunc(tmp_path / "empty", tmp_path / "pyfunc")


def test_generator_pyfunc_passes_every_param_through(tmp_path: Path) -> None:
    bundle = make_lm_bundle(tmp_path)
    out = tmp_path / "pyfunc"
    save_pyfunc(bundle, out, max_new_tokens=6)
    model = mlflow.pyfunc.load_model(str(out))
    b = load_bundle(bundle)
    prompts = ["the cat", "once upon a time", "a"]

    def expected(**changes) -> list[str]:
        params = GenerationParams(max_new_tokens=6).replace(**changes)
        return [tail for _, tail in generate_batch(b, prompts, params)]

    greedy = expected(temperature=0.0, max_new_tokens=12)
    assert model.predict(prompts, params={"temperature": 0.0, "max_new_tokens": 12}) == greedy
    stop = greedy[0][4:6]
    assert model.predict(
        prompts, params={"temperature": 0.0, "max_new_tokens": 12, "stop": [stop]}
    ) == (expected(temperature=0.0, max_new_tokens=12, stop=(stop,)))
    assert (
        model.predict(prompts, params={"temperature": 0.0, "max_new_tokens": 12, "stop": [stop]})[0]
        == greedy[0][: greedy[0].find(stop)]
    )
    sampled = {"temperature": 1.2, "top_k": 40, "top_p": 0.9, "seed": 4}
    assert model.predict(prompts, params=sampled) == expected(
        temperature=1.2, top_k=40, top_p=0.9, seed=4
    )
    # a top-p so small that only the likeliest token survives: greedy, as params say
    assert model.predict(prompts, params={"top_p": 1e-6, "max_new_tokens": 12, "seed": 1}) == greedy

    with pytest.raises(MlflowException) as info:
        model.predict(prompts, params={"top_p": 1.5})
    assert "top_p" in str(info.value) and "\n" not in str(info.value.message)


def test_export_records_checksums_and_a_changed_file_fails_to_load(tmp_path: Path) -> None:
    from lmops.export.bundle import CHECKSUMS
    from lmops.export.pyfunc import export_model
    from lmops.io import sha256_file

    assert export_model(make_classifier_bundle(tmp_path), tmp_path / "export")
    bundle = tmp_path / "export" / "bundle"
    sums = (bundle / CHECKSUMS).read_text().splitlines()
    assert sums == [
        f"{sha256_file(bundle / name)}  {name}"
        for name in ("model.safetensors", "config.json", "tokenizer.json")
    ]
    pyfunc = tmp_path / "export" / "pyfunc"
    copy = find_bundle(pyfunc)
    assert (copy / CHECKSUMS).read_text() == (bundle / CHECKSUMS).read_text()
    assert mlflow.pyfunc.load_model(str(pyfunc)).predict(["a good film"])[0]["label"] in LABELS

    # one flipped byte in the registered weights: loading names the file, in one line
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(LmopsError) as err:
        load_bundle(copy)
    message = str(err.value)
    assert "\n" not in message and str(weights) in message and "changed after export" in message
    with pytest.raises(Exception, match="model.safetensors changed after export"):
        mlflow.pyfunc.load_model(str(pyfunc))

    (bundle / "tokenizer.json").unlink()
    shutil.copy(bundle / "config.json", bundle / "tokenizer.json")  # present, but not the same
    with pytest.raises(LmopsError, match="tokenizer.json changed after export"):
        load_bundle(bundle)
    (bundle / CHECKSUMS).write_text("not a checksum line\n")
    with pytest.raises(LmopsError, match="SHA256SUMS line 1 is not"):
        load_bundle(bundle)
