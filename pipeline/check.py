"""Stage check: params.yaml is valid, before any other stage runs.

DVC removes a stage's outputs before it runs the stage's command, so a stage that stops on a
bad param has already lost its previous outputs (the uncached metrics.json, history.csv and
run.json for good). Every other stage depends on this stage's out, so `dvc repro` runs this
first and stops here on a bad param or a missing input file, with one line, and nothing else
is touched. The out's bytes never change while the params are valid, so a valid change re-runs
only the stages that declare it.
"""

from __future__ import annotations

from pathlib import Path

from lmops.config import Params
from lmops.stage import check_params, stage_main


@stage_main("check")
def main(params: Params, root: Path) -> None:
    check_params(params, root)


if __name__ == "__main__":
    main()
