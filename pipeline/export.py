"""Stage export: model directories (safetensors + config + tokenizer), MLflow pyfunc models,
and, when asked (export.onnx / export.hf), verified ONNX files and Hugging Face folders."""

from __future__ import annotations

import logging
from pathlib import Path

import mlflow

from lmops.config import Params
from lmops.export.formats import ExtraFormats, check_formats
from lmops.export.pyfunc import export_model
from lmops.io import atomic_write_json, sha256_files, sha256_path
from lmops.stage import require, stage_main
from lmops.tracking.runs import finish_stage, prefixed, stage_run

log = logging.getLogger(__name__)

SOURCES = {
    "finetuned": ("finetune", "run the finetune stage first"),
    "lm": ("pretrain", "run the pretrain stage first"),
}


@stage_main("export")
def main(params: Params, root: Path) -> None:
    out = root / "models" / "export"
    models = {
        kind: require(root / "models" / stage / "model", hint)
        for kind, (stage, hint) in SOURCES.items()
    }
    check_formats(params.export, models)  # a missing extra or a rotary LM for hf: fail now

    with stage_run(
        "export",
        params,
        inputs=models,
        upstream={stage: root / "models" / stage for stage, _ in SOURCES.values()},
        out_dir=out,
        root=root,
    ):
        manifest, logged = {}, {}
        for kind, src in models.items():
            extras = ExtraFormats(params.export)
            if not export_model(src, out / kind, params.export.max_new_tokens, extras):
                continue  # finetune.task none: no fine-tuned model to export
            manifest[kind] = {
                "bundle_sha256": sha256_path(out / kind / "bundle"),
                # per file, what load_bundle checks against the bundle's SHA256SUMS
                "files_sha256": sha256_files(out / kind, skip=("pyfunc",)),
                "source": str(src.relative_to(root)),
                **extras.summary,
            }
            logged.update(prefixed(extras.metrics, f"export/{kind}"))
            mlflow.set_tag(f"lmops.export.{kind}.sha256", manifest[kind]["bundle_sha256"])
        atomic_write_json(out / "export.json", manifest)
        finish_stage(out, logged=logged, artifacts=[out / "export.json"])
    log.info("exported %s to %s", ", ".join(manifest), out.relative_to(root))


if __name__ == "__main__":
    main()
