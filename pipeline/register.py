"""Stage register: the exported pyfunc models become versions in the MLflow registry (alias challenger)."""

from __future__ import annotations

import logging
from pathlib import Path

from lmops.config import Params
from lmops.io import atomic_write_json, read_json
from lmops.stage import require, stage_main
from lmops.tracking.registry import register_model
from lmops.tracking.runs import stage_run

log = logging.getLogger(__name__)


@stage_main("register")
def main(params: Params, root: Path) -> None:
    cfg = params.register
    export = require(
        root / "models" / "export" / "export.json", "run the export stage first"
    ).parent
    evaluation = require(
        root / "reports" / "eval" / "metrics.json", "run the evaluate stage first"
    ).parent
    out = root / "models" / "registry"
    manifest = read_json(export / "export.json")
    metrics = {k: float(v) for k, v in read_json(evaluation / "metrics.json").items()}
    with stage_run(
        "register",
        params,
        inputs={"export": export, "metrics": evaluation / "metrics.json"},
        upstream={"export": export, "evaluate": evaluation},
        out_dir=out,
        root=root,
    ) as run:
        registered = {}
        for kind, (name, metric, higher) in cfg.targets(params.finetune.task).items():
            if kind not in manifest:
                continue  # finetune.task none: the LM alone
            version = register_model(
                export / kind / "pyfunc",
                name,
                export_hash=manifest[kind]["bundle_sha256"],
                metrics=metrics,
                run_id=run.info.run_id,
                promote_metric=metric,
                higher_is_better=higher,
            )
            registered[kind] = {"name": name, "version": version, "alias": "challenger"}
            log.info("%s: registered %s version %s (alias challenger)", kind, name, version)
        atomic_write_json(out / "registered.json", registered)


if __name__ == "__main__":
    main()
