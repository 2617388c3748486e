"""Time a full `dvc repro` of the default pipeline (built-in sample) in a fresh copy of the project.

Usage: python bench/pipeline_repro.py [--runs 3]
Each run copies the project into a temp folder (git init + dvc init), runs `dvc repro` with the
shipped params.yaml and reports wall time per stage and in total; prints the median.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COPY = ["dvc.yaml", "params.yaml", "pipeline", "src", "data/raw", ".dvcignore", ".gitignore"]


def fresh_copy(dest: Path) -> None:
    for name in COPY:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for cmd in (
        ["git", "init", "-q"],
        [
            "git",
            "-c",
            "user.email=b@b",
            "-c",
            "user.name=b",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        ["dvc", "init", "-q"],
    ):
        subprocess.run(cmd, cwd=dest, check=True)


def one_run() -> tuple[float, dict[str, float]]:
    env = dict(
        os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}"
    )
    env.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fresh_copy(root)
        start = time.perf_counter()
        proc = subprocess.Popen(
            ["dvc", "repro"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stages: dict[str, float] = {}
        current, t0 = None, start
        assert proc.stdout is not None
        for line in proc.stdout:
            m = re.match(r"Running stage '(\w+)'", line)
            if m:
                now = time.perf_counter()
                if current:
                    stages[current] = now - t0
                current, t0 = m.group(1), now
        if proc.wait() != 0:
            raise SystemExit("dvc repro failed")
        total = time.perf_counter() - start
        if current:
            stages[current] = start + total - t0
        return total, stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    totals = []
    for i in range(args.runs):
        total, stages = one_run()
        totals.append(total)
        print(
            f"run {i + 1}: {total:.1f} s  " + "  ".join(f"{k} {v:.1f}" for k, v in stages.items())
        )
    print(f"median of {args.runs}: {statistics.median(totals):.1f} s  (load {os.getloadavg()})")


if __name__ == "__main__":
    main()
