"""Nothing is lost when a stage fails on a bad param under `dvc repro` (issue 14, item 6).

DVC removes a stage's outputs before it runs the stage's command, so a stage stopping on a bad
param "before any work" used to leave models/pretrain/ empty, its uncached metrics.json,
history.csv and run.json gone for good. The check stage (pipeline/check.py) now runs first and
every stage depends on its out, so `dvc repro` stops there and removes nothing else.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from .project import make_project, run, write_params

pytestmark = pytest.mark.e2e

KEPT = [  # every out of the stages that ran, cached or not
    "data/clean/corpus/train.jsonl",
    "data/clean/metrics.json",
    "data/clean/run.json",
    "data/tokens/train.bin",
    "data/tokens/metrics.json",
    "models/pretrain/model/model.safetensors",
    "models/pretrain/model/config.json",
    "models/pretrain/metrics.json",
    "models/pretrain/history.csv",
    "models/pretrain/run.json",
]


def stages_run(output: str) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", output)


def digests(root: Path) -> dict[str, str]:
    return {rel: hashlib.sha256((root / rel).read_bytes()).hexdigest() for rel in KEPT}


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        ({"pretrain": {"val_batches": 0}}, "pretrain.val_batches"),  # the IndexError
        ({"hardware": {"devices": "two"}}, "hardware.devices"),  # a section no stage declares
    ],
)
def test_bad_param_stops_at_check_and_keeps_every_output(
    tmp_path: Path, bad: dict, named: str
) -> None:
    root = make_project(tmp_path / "proj")
    first = run(["dvc", "repro", "pretrain"], root)
    assert stages_run(first.stdout) == ["check", "clean", "tokenize", "pretrain"]
    before = digests(root)

    write_params(root, bad)
    proc = run(["dvc", "repro", "pretrain"], root, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert stages_run(proc.stdout) == ["check"]
    ours = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(ours) == 1 and named in ours[0] and "Traceback" not in output, output
    assert digests(root) == before  # every out still there, byte for byte

    # fixed (to a value other than the first): only the check and the stage that declares it
    write_params(root, {"pretrain": {"val_batches": 2}, "hardware": {"devices": "1"}})
    proc = run(["dvc", "repro", "pretrain"], root)
    assert stages_run(proc.stdout) == ["check", "pretrain"]
    after = digests(root)
    assert all(after[rel] == before[rel] for rel in KEPT if not rel.startswith("models/"))
    assert "up to date" in run(["dvc", "status", "--with-deps", "pretrain"], root).stdout
