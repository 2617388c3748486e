"""The stage wrapper: user errors become one line on stderr and exit 1, before the body runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmops.config import Params
from lmops.stage import require, stage_main


def _project(tmp_path: Path, params: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text(params)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def test_body_gets_validated_params_and_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, "pretrain:\n  max_steps: 7\n", monkeypatch)
    seen: list[tuple[Params, Path]] = []
    stage_main("demo")(lambda p, r: seen.append((p, r)))()
    assert seen[0][0].pretrain.max_steps == 7 and seen[0][1] == root


def test_bad_params_exit_1_without_running_body(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _project(tmp_path, "pretrain:\n  max_stepz: 7\n", monkeypatch)
    ran: list[bool] = []
    with pytest.raises(SystemExit) as exc:
        stage_main("demo")(lambda p, r: ran.append(True))()
    assert exc.value.code == 1 and not ran
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "error: demo:" in err[0] and "pretrain.max_stepz" in err[0]


def test_user_error_in_body_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _project(tmp_path, "", monkeypatch)

    def body(p: Params, r: Path) -> None:
        require(r / "missing.bin", "run the tokenize stage first")

    with pytest.raises(SystemExit) as exc:
        stage_main("demo")(body)()
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert "missing.bin is missing; run the tokenize stage first" in err and "\n" not in err


def test_other_errors_are_not_swallowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tmp_path, "", monkeypatch)

    def body(p: Params, r: Path) -> None:
        raise RuntimeError("a bug, not a user error")

    with pytest.raises(RuntimeError):
        stage_main("demo")(body)()
