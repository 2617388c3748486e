"""DDP and FSDP2 on two CPU processes (gloo): ranks in sync, parameters really sharded, and the
same validation losses and weights as one process with the same global batch.

DDP starts under torchrun (the way multi-node jobs start), FSDP2 with Lightning's own launcher
(``devices=2`` from a plain ``python`` command, the way ``dvc repro`` starts the stage).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.e2e.distributed_worker import CFG, write_tokens

pytestmark = pytest.mark.e2e

WORKER = Path(__file__).with_name("distributed_worker.py")
REPO = Path(__file__).resolve().parents[2]


def launch(prefix: list[str], out: Path, tokens: Path, strategy: str, devices: int, micro: int):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    env.pop("LMOPS_NUM_THREADS", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    cmd = [*prefix, str(WORKER), "--strategy", strategy, "--devices", str(devices)]
    cmd += ["--micro", str(micro), "--tokens", str(tokens), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(devices)]


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    return write_tokens(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def single(tokens, tmp_path_factory) -> dict:
    """One process, two micro-batches of 4 per step: the same global batch of 8."""
    out = tmp_path_factory.mktemp("single")
    return launch([sys.executable], out, tokens, "auto", 1, CFG.batch_size // 2)[0]


def assert_same_run(result: dict, single: dict) -> None:
    steps = [s for s, _ in single["val_loss"]]
    assert steps == list(range(CFG.val_every, CFG.max_steps + 1, CFG.val_every))
    assert [s for s, _ in result["val_loss"]] == steps
    for (_, a), (_, b) in zip(result["val_loss"], single["val_loss"], strict=True):
        assert a == pytest.approx(b, rel=1e-4)
    assert single["val_loss"][-1][1] < single["val_loss"][0][1] - 0.1  # it learned something
    assert result["weights"].keys() == single["weights"].keys()
    for name, tensor in single["weights"].items():
        torch.testing.assert_close(result["weights"][name], tensor, rtol=1e-4, atol=1e-5)


def assert_distinct_windows(ranks: list[dict]) -> None:
    """Each rank reads its own windows, and together they read what one process reads."""
    a, b = (set(r["indices"]) for r in ranks)
    assert a and b and not a & b
    assert sorted(a | b) == list(range(CFG.max_steps * CFG.batch_size))


def test_ddp_under_torchrun_matches_one_process(tokens, single, tmp_path) -> None:
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    ranks = launch([*torchrun, "--nproc-per-node", "2"], tmp_path, tokens, "ddp", 2, 4)
    assert all(r["world_size"] == 2 and not r["sharded"] for r in ranks)
    for name, tensor in ranks[0]["local"].items():  # replicas stay identical
        assert torch.equal(tensor, ranks[1]["local"][name]), name
    assert_distinct_windows(ranks)
    assert_same_run(ranks[0], single)
    # threads per process: the cores divided between the two ranks torchrun started
    cores = len(os.sched_getaffinity(0))
    assert [r["threads"] for r in ranks] == [max(1, cores // 2)] * 2
    assert ranks[0]["threads_set"] == max(1, cores // 2)


def test_fsdp2_shards_parameters_and_matches_one_process(tokens, single, tmp_path) -> None:
    ranks = launch([sys.executable], tmp_path, tokens, "fsdp", 2, 4)
    assert all(r["world_size"] == 2 and r["sharded"] for r in ranks)
    for name, numel in ranks[0]["full_numel"].items():
        parts = [r["local"][name] for r in ranks]
        # each rank holds only its part: together they make the whole parameter, once
        assert sum(p.numel() for p in parts) == numel, name
        assert all(p.numel() < numel for p in parts), name
        torch.testing.assert_close(
            torch.cat([p.reshape(-1, *p.shape[1:]) for p in parts]).reshape(-1),
            ranks[0]["weights"][name].reshape(-1),
        )
    assert ranks[1]["weights"] == {}  # only rank 0 gathers the full weights
    assert_distinct_windows(ranks)
    assert_same_run(ranks[0], single)
