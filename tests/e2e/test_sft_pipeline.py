"""`dvc repro` with finetune.task sft and LoRA on the built-in sample's prompt -> response pairs:
every stage handles the task, the generator is registered and answers prompts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from safetensors import safe_open

from .project import make_project, run

pytestmark = pytest.mark.e2e

SFT = {
    "pretrain": {"model": {"block_size": 128}, "batch_size": 8, "micro_batch_size": 8},
    "finetune": {
        "task": "sft",
        "method": "lora",
        "lora": {"rank": 4},
        "max_length": 128,
        "max_steps": 40,
        "batch_size": 8,
        "lr": 0.003,
        "val_every": 20,
    },
    "evaluate": {"max_new_tokens": 48, "samples": 5},
    "register": {"model_name": "lmops-sft"},
}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = make_project(tmp_path_factory.mktemp("sft") / "proj", SFT)
    run(["dvc", "repro"], root)
    return root


def test_sft_with_lora_runs_through_every_stage(project: Path) -> None:
    root = project
    first = json.loads((root / "data/clean/labeled/train.jsonl").open().readline())
    assert set(first) == {"id", "prompt", "response"}

    ft = json.loads((root / "models/finetune/metrics.json").read_text())
    assert math.isfinite(ft["val/loss"])
    counts = ft["data"]["train"]
    assert counts["kept"] > 0 and counts["kept"] + counts["dropped"] >= counts["rows"]

    model = root / "models/finetune/model"
    config = json.loads((model / "config.json").read_text())
    assert config["kind"] == "lm" and "{prompt}" in config["prompt_template"]
    with safe_open(str(model / "adapter.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["lora"])["rank"] == "4"
    assert keys and all(k.endswith(("lora_a", "lora_b")) for k in keys)

    ev = json.loads((root / "reports/eval/metrics.json").read_text())
    for key in ("test/bleu", "test/rouge1", "test/rouge2", "test/rougeL", "test/exact_match"):
        assert 0.0 <= ev[key] <= 1.0, key
    assert math.isfinite(ev["test/response_ppl"]) and ev["test/n"] > 0
    assert "## Sample answers" in (root / "reports/eval/report.md").read_text()

    registered = json.loads((root / "models/registry/registered.json").read_text())
    assert registered["finetuned"]["name"] == "lmops-sft"


def test_registered_generator_answers_with_the_template(project: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model("models:/lmops-sft@challenger")
    prompt = json.loads((project / "data/clean/labeled/test.jsonl").open().readline())["prompt"]
    (answer,) = model.predict([prompt], params={"max_new_tokens": 8, "temperature": 0.0})
    assert isinstance(answer, str) and "### Response:" not in answer
