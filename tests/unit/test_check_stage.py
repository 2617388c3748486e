"""The check stage (pipeline/check.py): the first stage of `dvc repro`, so a bad param stops the
pipeline before DVC removes any other stage's outputs (issue 14, item 6)."""

from __future__ import annotations

import dataclasses
import importlib.util
import runpy
from pathlib import Path

import pytest
import yaml

from lmops import stage
from lmops.config import LmopsError, Params
from lmops.stage import PARAMS_OK, check_params, cross_check

REPO = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def test_check_declares_every_section_and_every_stage_depends_on_it() -> None:
    check = STAGES["check"]
    assert sorted(check["params"]) == sorted(f.name for f in dataclasses.fields(Params))
    assert [next(iter(o)) if isinstance(o, dict) else o for o in check["outs"]] == [
        PARAMS_OK.as_posix()
    ]
    for name, spec in STAGES.items():
        if name != "check":
            assert PARAMS_OK.as_posix() in spec["deps"], f"stage {name} does not depend on check"


def test_out_is_the_same_bytes_for_any_valid_params(tmp_path: Path) -> None:
    first = check_params(Params(), tmp_path).read_bytes()
    other = Params()
    other.pretrain.max_steps = 7
    other.hardware.devices = "2"
    assert check_params(other, tmp_path).read_bytes() == first


def _local(tmp_path: Path, **data: object) -> Params:
    params = Params()
    params.data = dataclasses.replace(params.data, source="local", **data)  # type: ignore[arg-type]
    return params


def test_missing_corpus_file_is_named(tmp_path: Path) -> None:
    params = _local(tmp_path, corpus_paths=["data/raw/nope.txt"], labeled_train_path="x.tsv")
    with pytest.raises(LmopsError, match="nope.txt: no such file or folder; fix data.corpus_paths"):
        cross_check(params, tmp_path)


def test_missing_labeled_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "corpus.txt").write_text("some text\n")
    params = _local(tmp_path, corpus_paths=["corpus.txt"], labeled_train_path="gone.tsv")
    with pytest.raises(LmopsError, match="data.labeled_train_path gone.tsv: no such file"):
        cross_check(params, tmp_path)


def test_missing_extra_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        stage.importlib.util, "find_spec", lambda n, *a: None if n == "onnxscript" else real(n)
    )
    params = Params()
    params.export.onnx = True
    with pytest.raises(
        LmopsError, match=r"export.onnx needs the 'onnx' extra \(missing onnxscript"
    ):
        cross_check(params, tmp_path)


def test_slurm_without_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stage.shutil, "which", lambda name: None)
    params = Params()
    params.hardware.data_executor.type = "slurm"
    with pytest.raises(LmopsError, match="sbatch is not on the PATH"):
        cross_check(params, tmp_path)


def test_script_fails_in_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("pretrain:\n  val_batches: 0\n")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        runpy.run_path(str(REPO / "pipeline" / "check.py"), run_name="__main__")
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: check: params.yaml: pretrain.val_batches") and "\n" not in err
    assert not (tmp_path / PARAMS_OK).exists()

    (tmp_path / "params.yaml").write_text("pretrain:\n  val_batches: 2\n")
    runpy.run_path(str(REPO / "pipeline" / "check.py"), run_name="__main__")
    assert (tmp_path / PARAMS_OK).read_text() == stage.PARAMS_OK_TEXT
