"""Stage pretrain: a GPT decoder trained as a causal LM on the token files, tracked in MLflow.

Every process of a multi-device run executes this script; only global rank 0 opens the MLflow
run and writes the outputs (:mod:`lmops.training.pretraining`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lmops.config import Params
from lmops.io import atomic_dir, write_csv
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run
from lmops.training.pretraining import Pretraining
from lmops.training.strategies import configure_threads


@stage_main("pretrain")
def main(params: Params, root: Path) -> None:
    configure_threads()
    tokens = require(root / "data" / "tokens" / "meta.json", "run the tokenize stage first").parent
    out = root / "models" / "pretrain"
    job = Pretraining.setup(params, root, tokens)
    tracked = (
        stage_run(
            "pretrain",
            params,
            inputs={"tokens": tokens},
            datasets={"tokens": "training"},  # the MLflow UI's Dataset column
            upstream={"tokenize": tokens},
            out_dir=out,
            root=root,
            resume_run_id=job.resume_run_id,
            system_metrics=True,
        )
        if job.is_main
        else contextlib.nullcontext(None)
    )
    with tracked as run:
        result = job.fit(run)
        if result is None:
            return  # ranks > 0: training done, rank 0 writes the outputs
        with atomic_dir(out / "model") as tmp:
            job.save_model(tmp, result.model)
        write_csv(out / "history.csv", result.history)
        final = {"val_loss": result.metrics["val/loss"], "val_ppl": result.metrics["val/ppl"]}
        finish_stage(
            out,
            metrics=result.metrics,
            logged=prefixed(final, "final"),
            artifacts=[out / "history.csv"],
        )
    job.finish(result)


if __name__ == "__main__":
    main()
