"""Registered models served over HTTP for real, as a user serves them.

A tiny classifier and a tiny LM are exported (``export_model``: bundle, checksums, pyfunc),
registered in a throw-away SQLite store and promoted to champion; then ``mlflow models serve -m
models:/<name>@champion --env-manager local`` serves the classifier and ``lmops serve`` the LM,
each on a free loopback port, started together. The answers must equal the bundle's own
(``classify``, ``generate_batch``) on the same inputs and params, and a malformed request must get
an HTTP 4xx whose message says what is wrong. No pipeline run: the models are built directly, so
the module costs two server start-ups (≈ 10 s here).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient

from lmops.export.bundle import Bundle, classify, generate_batch, load_bundle
from lmops.export.pyfunc import export_model
from lmops.models.generation import GenerationParams
from lmops.tracking.registry import promote, register_model
from tests.unit.test_bundle import LABELS, make_classifier_bundle, make_lm_bundle
from tests.unit.test_runs import sqlite_store

from .project import env
from .servers import http_processes

pytestmark = pytest.mark.e2e

CLASSIFIER, LM = "serve-clf", "serve-lm"
MAX_NEW_TOKENS = 6  # the generator's default answer length, registered with the model
TIMEOUT = 60  # seconds per request: a tiny model answers in well under one


@dataclass
class Served:
    """The two servers' base URLs and the bundles they serve, loaded here for comparison."""

    classifier_url: str
    lm_url: str
    classifier: Bundle
    lm: Bundle


def _register(root: Path, name: str, bundle: Path, run_id: str) -> Bundle:
    """Export ``bundle`` as the pipeline does, register it and make it champion; the exported
    bundle, loaded (what the pyfunc inside the registered model loads)."""
    export = root / "export" / name
    assert export_model(bundle, export, max_new_tokens=MAX_NEW_TOKENS)
    register_model(
        export / "pyfunc",
        name,
        export_hash=name,
        metrics={"test/acc": 0.5},
        run_id=run_id,
        promote_metric="test/acc",
        higher_is_better=True,
    )
    assert promote(name).changed
    return load_bundle(export / "bundle")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("serving")
    uri = sqlite_store(root / "store")
    mlflow.set_tracking_uri(uri)
    try:
        client = MlflowClient()
        exp = client.create_experiment("serve", artifact_location=(root / "mlartifacts").as_uri())
        run_id = client.create_run(exp).info.run_id
        classifier = _register(root, CLASSIFIER, make_classifier_bundle(root / "clf"), run_id)
        lm = _register(root, LM, make_lm_bundle(root / "lm"), run_id)
        client.set_terminated(run_id)
    finally:
        mlflow.set_tracking_uri(None)

    serve_env = env()  # the venv's bin on PATH: the scoring server execs uvicorn by name
    serve_env["MLFLOW_TRACKING_URI"] = uri
    lmops = Path(sys.executable).parent / "lmops"
    lmops_cmd = [str(lmops)] if lmops.exists() else [sys.executable, "-m", "lmops.cli"]
    commands = {
        "mlflow-models-serve": [
            sys.executable, "-m", "mlflow", "models", "serve",
            "-m", f"models:/{CLASSIFIER}@champion", "--env-manager", "local",
            "-h", "127.0.0.1", "-p", "{port}",
        ],
        "lmops-serve": [*lmops_cmd, "serve", LM, "--port", "{port}"],
    }  # fmt: skip
    with http_processes(commands, "/ping", root, serve_env, cwd=root) as urls:
        yield Served(urls["mlflow-models-serve"], urls["lmops-serve"], classifier, lm)


def invocations(url: str, payload: Any) -> requests.Response:
    return requests.post(f"{url}/invocations", json=payload, timeout=TIMEOUT)


def error_message(response: requests.Response) -> str:
    """The scoring server's error text (``{"error_code", "message"}``), asserting it is a 4xx."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body = response.json()
    assert body.get("error_code") and body.get("message"), body
    return str(body["message"])


def test_classifier_served_answers_like_the_bundle(served: Served) -> None:
    texts = ["a good film", "not good at all", "", "the cat sat on the mat " * 10]
    response = invocations(served.classifier_url, {"inputs": texts})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = classify(served.classifier, texts)
    assert [p["label"] for p in predictions] == [e["label"] for e in expected]
    assert all(p["label"] in LABELS for p in predictions)
    assert [p["probability"] for p in predictions] == pytest.approx(
        [e["probability"] for e in expected], abs=1e-6
    )


def test_generator_served_by_lmops_serve_answers_like_the_bundle(served: Served) -> None:
    prompts = ["the cat", "once upon a time there was", "a"]
    # defaults: the registered max_new_tokens; greedy so the answer is the bundle's exactly
    response = invocations(served.lm_url, {"inputs": prompts, "params": {"temperature": 0.0}})
    assert response.status_code == 200, response.text
    greedy = GenerationParams(max_new_tokens=MAX_NEW_TOKENS, temperature=0.0)
    expected = [tail for _, tail in generate_batch(served.lm, prompts, greedy, batch_size=16)]
    assert response.json()["predictions"] == expected

    # every schema param reaches the model: seeded top-k / top-p sampling, a stop string
    params = {"max_new_tokens": 9, "temperature": 1.2, "top_k": 40, "top_p": 0.95, "seed": 7}
    sampled = GenerationParams(max_new_tokens=9, temperature=1.2, top_k=40, top_p=0.95, seed=7)
    response = invocations(served.lm_url, {"inputs": prompts, "params": params})
    assert response.status_code == 200, response.text
    expected = [tail for _, tail in generate_batch(served.lm, prompts, sampled, batch_size=16)]
    assert response.json()["predictions"] == expected
    stop = {"temperature": 0.0, "max_new_tokens": 12, "stop": [" "]}
    response = invocations(served.lm_url, {"inputs": ["the cat"], "params": stop})
    assert response.status_code == 200, response.text
    assert " " not in response.json()["predictions"][0]


def test_malformed_requests_get_a_4xx_that_says_why(served: Served) -> None:
    # not one of the payload keys the scoring server knows
    message = error_message(invocations(served.classifier_url, {"texts": ["a good film"]}))
    assert "inputs" in message  # names the key it expected
    # not JSON at all
    response = requests.post(
        f"{served.classifier_url}/invocations",
        data="{not json",
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert 400 <= response.status_code < 500, response.text
    # a param outside its range: the model's own one-line message, naming the param, is the
    # last line (MLflow puts "Failed to predict data '<inputs>'." before it)
    bad = {"inputs": ["the cat"], "params": {"temperature": -1.0}}
    message = error_message(invocations(served.lm_url, bad))
    assert message.strip().splitlines()[-1] == (
        "Error: temperature is -1.0; must be a number >= 0 (0: greedy)"
    )
    # a param the schema does not have, and one of the wrong type
    wrong_type = {"inputs": ["the cat"], "params": {"max_new_tokens": "many"}}
    message = error_message(invocations(served.lm_url, wrong_type))
    assert "max_new_tokens" in message
