"""The ``lmops`` command: generate from a folder or the registry, registry verbs, serve command."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from lmops.cli import main, serve_command
from lmops.export.bundle import generate_batch, generate_text, load_bundle
from lmops.export.pyfunc import save_pyfunc
from lmops.models.generation import GenerationParams
from lmops.tracking.registry import register_model
from tests.unit.test_bundle import make_lm_bundle
from tests.unit.test_runs import sqlite_store


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    uri = sqlite_store(tmp_path / "store")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    yield uri
    mlflow.set_tracking_uri(None)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1, err
    assert err[0].startswith("lmops: error: ")
    return err[0]


def test_generate_from_a_bundle_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = make_lm_bundle(tmp_path)
    argv = ["generate", "the cat", "--model", str(bundle), "--max-new-tokens", "6"]
    assert main([*argv, "--temperature", "0"]) == 0
    text = capsys.readouterr().out
    head, tail = generate_text(load_bundle(bundle), "the cat", max_new_tokens=6, temperature=0)
    assert text == head + tail + "\n" and text.startswith("the cat")

    assert main([*argv, "--seed", "5", "--top-k", "20"]) == 0
    sampled = capsys.readouterr().out
    assert main([*argv, "--seed", "5", "--top-k", "20"]) == 0
    assert capsys.readouterr().out == sampled  # a seed makes sampling repeatable


def test_generate_streams_stops_and_batches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = make_lm_bundle(tmp_path)
    b = load_bundle(bundle)
    writes: list[str] = []
    real_write = sys.stdout.write

    def spy(text: str) -> int:
        writes.append(text)
        return real_write(text)

    argv = ["generate", "the cat", "--model", str(bundle), "--temperature", "0"]
    monkeypatch.setattr(sys.stdout, "write", spy)
    assert main([*argv, "--max-new-tokens", "12"]) == 0
    monkeypatch.undo()
    head, tail = generate_text(b, "the cat", max_new_tokens=12, temperature=0)
    assert capsys.readouterr().out == head + tail + "\n"
    assert writes[0] == head and len(writes) > 3  # the prompt first, then piece by piece

    stop = tail[3:5]
    assert main([*argv, "--max-new-tokens", "12", "--stop", stop, "--no-stream"]) == 0
    assert capsys.readouterr().out == head + tail[: tail.find(stop)] + "\n"

    assert main(["generate", "the cat", "a dog", "--model", str(bundle), "--top-k", "1"]) == 0
    texts = [
        h + t for h, t in generate_batch(b, ["the cat", "a dog"], GenerationParams(temperature=0))
    ]
    assert capsys.readouterr().out == "\n\n".join(texts) + "\n"


def test_generate_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "hi", "--model", str(tmp_path / "missing")]) == 1
    assert "no such folder" in one_error_line(capsys)
    assert main(["generate", "hi", "--model", str(tmp_path / "missing"), "--top-p", "2"]) == 1
    assert "top_p" in one_error_line(capsys)  # checked before the model is looked for
    assert (
        main(["generate", "hi", "--model", str(tmp_path / "missing"), "--temperature", "-1"]) == 1
    )
    assert "temperature" in one_error_line(capsys)
    (tmp_path / "empty").mkdir()
    assert main(["generate", "hi", "--model", str(tmp_path / "empty")]) == 1
    assert "no model bundle" in one_error_line(capsys)


def test_registry_verbs_end_to_end(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = make_lm_bundle(tmp_path)
    pyfunc = tmp_path / "pyfunc"
    save_pyfunc(bundle, pyfunc, max_new_tokens=4)
    client = MlflowClient(store)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp).info.run_id
    mlflow.set_tracking_uri(store)
    for export_hash, ppl in [("a", 20.0), ("b", 30.0)]:
        register_model(
            pyfunc,
            "tiny-lm",
            export_hash=export_hash,
            metrics={"val/ppl": ppl},
            run_id=run_id,
            promote_metric="val/ppl",
            higher_is_better=False,
        )
    capsys.readouterr()

    # generate from the registry: the bundle is found inside the downloaded pyfunc model
    argv = ["generate", "the cat", "--max-new-tokens", "6", "--temperature", "0"]
    assert main([*argv, "--model", "models:/tiny-lm@challenger"]) == 0
    from_registry = capsys.readouterr().out
    assert main([*argv, "--model", str(bundle)]) == 0
    assert capsys.readouterr().out == from_registry

    assert main(["promote", "tiny-lm", "--version", "1"]) == 0
    assert "champion is now version 1" in capsys.readouterr().out
    assert main(["promote", "tiny-lm"]) == 1  # v2's perplexity is worse
    line = one_error_line(capsys)
    assert "worse" in line and "val/ppl 30" in line
    # judged on a metric the versions lack unless forced; direction flags parse
    assert main(["promote", "tiny-lm", "--metric", "val/acc", "--higher-is-better"]) == 1
    assert "no metric 'val/acc'" in one_error_line(capsys)
    assert main(["promote", "tiny-lm", "--force"]) == 0
    assert "[forced]" in capsys.readouterr().out

    assert main(["models", "tiny-lm"]) == 0
    listing = capsys.readouterr().out
    assert "v2" in listing and "champion" in listing and "val/ppl=30" in listing
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["tiny-lm"]
    assert {r["version"]: r["aliases"] for r in rows} == {2: ["champion"], 1: ["previous-champion"]}

    assert main(["rollback", "tiny-lm"]) == 0
    assert "champion is now version 1 (was 2)" in capsys.readouterr().out
    assert int(client.get_model_version_by_alias("tiny-lm", "champion").version) == 1

    assert main(["rollback", "nope"]) == 1
    assert "no registered model named 'nope'" in one_error_line(capsys)
    assert main(["serve", "tiny-lm", "--alias", "staging"]) == 1
    assert "no version of 'tiny-lm' has alias 'staging'" in one_error_line(capsys)


def test_serve_dry_run_prints_the_mlflow_command(
    store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "clf", "--port", "5123", "--dry-run"]) == 0
    printed = capsys.readouterr().out.strip()
    env, *cmd = shlex.split(printed)
    assert env == f"MLFLOW_TRACKING_URI={store}"
    assert cmd == serve_command("clf", "champion", 5123, "127.0.0.1")
    assert cmd[1:] == [
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        "models:/clf@champion",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        "5123",
    ]
    assert cmd[0] == sys.executable


def test_console_entry_exits_1_with_one_line(tmp_path: Path, store: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "lmops.cli", "promote", "nope"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "lmops: error: no registered model named 'nope'; run the register stage, "
        "or see `lmops models` for the names there are"
    ]


def test_registry_commands_on_a_dead_server_fail_at_once_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Not minutes of the MLflow client's retries: the server is probed first."""
    from tests.unit.test_tracking_probe import closed_port

    uri = f"http://127.0.0.1:{closed_port()}"
    for argv in (["models"], ["promote", "clf"], ["serve", "clf"]):
        assert main(["--tracking-uri", uri, *argv]) == 1
        assert "is unreachable" in one_error_line(capsys)


def test_serve_dry_run_hides_the_tracking_password(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("lmops.tracking.runs.check_tracking_server", lambda uri: None)
    uri = "http://alice:s3cr3t-xyz@127.0.0.1:1"
    assert main(["--tracking-uri", uri, "serve", "clf", "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "s3cr3t-xyz" not in printed and "alice" in printed


def test_rollback_without_a_previous_champion_says_why_in_one_line(
    tmp_path: Path, store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pyfunc = tmp_path / "pyfunc"
    save_pyfunc(make_lm_bundle(tmp_path), pyfunc, max_new_tokens=4)
    client = MlflowClient(store)
    exp = client.create_experiment("t", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow.set_tracking_uri(store)
    register_model(
        pyfunc,
        "tiny-lm",
        export_hash="a",
        metrics={"val/ppl": 20.0},
        run_id=client.create_run(exp).info.run_id,
        promote_metric="val/ppl",
        higher_is_better=False,
    )
    capsys.readouterr()
    assert main(["rollback", "tiny-lm"]) == 1
    assert "no champion yet; promote a version first" in one_error_line(capsys)
    assert main(["promote", "tiny-lm"]) == 0
    capsys.readouterr()
    assert main(["rollback", "tiny-lm"]) == 1
    assert "version 1 is its first champion" in one_error_line(capsys)
    # nothing moved, and the registry lock was let go each time
    assert {k: int(v) for k, v in client.get_registered_model("tiny-lm").aliases.items()} == {
        "champion": 1
    }
    assert [m.name for m in client.search_registered_models()] == ["tiny-lm"]
