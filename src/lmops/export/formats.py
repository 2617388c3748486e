"""The export stage's other runtimes: which formats ``export.onnx`` / ``export.hf`` ask for,
checked before any work, and written beside each bundle.

Layout under ``models/export/<kind>/`` (inside the folders the export stage already declares as
outs, so ``dvc.yaml`` lists nothing new):

- ``onnx/model.onnx`` + ``onnx/verification.json`` (``export.onnx``), also carried by the pyfunc
  model as its ``onnx`` artifact, so a registered version has it;
- ``hf/`` a ``GPT2LMHeadModel`` folder (``export.hf``), for LM bundles only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lmops.config import ExportConfig, LmopsError, ModelConfig
from lmops.io import SKIPPED

__all__ = ["ExtraFormats", "check_formats"]

log = logging.getLogger(__name__)


def check_formats(cfg: ExportConfig, sources: Mapping[str, Path]) -> None:
    """Fail with one line, before any work, when a requested format cannot be written: its extra
    is missing, or an LM among ``sources`` (model folders) has no exact GPT-2 equivalent.

    Only each source's ``config.json`` is read, so this costs nothing next to the export.
    """
    if cfg.onnx:
        from lmops.export.onnx import require_onnx

        require_onnx()
    if cfg.hf:
        from lmops.export.hf import check_hf_compatible, require_hf

        require_hf()
        for source in sources.values():
            config_path = Path(source) / "config.json"
            if (Path(source) / SKIPPED).is_file() or not config_path.is_file():
                continue  # no model there (finetune.task: none); the export says so itself
            config = json.loads(config_path.read_text(encoding="utf-8"))
            if config.get("kind") == "lm":
                try:
                    check_hf_compatible(ModelConfig.from_dict(config["gpt"]))
                except LmopsError as exc:
                    raise LmopsError(f"export.hf: {source}: {exc}") from None


class ExtraFormats:
    """The ``extras`` hook of :func:`lmops.export.pyfunc.export_model` for one bundle: writes
    what ``cfg`` asks for and keeps the verification figures for the stage's manifest."""

    def __init__(self, cfg: ExportConfig) -> None:
        self.cfg = cfg
        self.summary: dict[str, Any] = {}  # for export.json
        self.metrics: dict[str, float] = {}  # for MLflow, e.g. {"onnx_max_abs_diff": 3e-8}

    def __call__(self, bundle: Path, dest: Path) -> dict[str, Path]:
        """Write the formats into ``dest``; return the artifacts the pyfunc model carries."""
        artifacts: dict[str, Path] = {}
        if self.cfg.onnx:
            from lmops.export.onnx import export_onnx

            result = export_onnx(bundle, dest / "onnx")
            artifacts["onnx"] = dest / "onnx"
            self.summary["onnx"] = {
                "file": str(result.path.relative_to(dest)),
                "inputs": result.inputs,
                "max_abs_diff": result.max_abs_diff,
            }
            self.metrics["onnx_max_abs_diff"] = result.max_abs_diff
        if self.cfg.hf:
            from lmops.export.hf import CLASSIFIER_NOT_EXACT, export_hf

            kind = json.loads((bundle / "config.json").read_text(encoding="utf-8"))["kind"]
            if kind != "lm":
                log.info("hf: skipping the %s: %s", kind, CLASSIFIER_NOT_EXACT)
                self.summary["hf"] = {"skipped": CLASSIFIER_NOT_EXACT}
            else:
                hf = export_hf(bundle, dest / "hf")
                self.summary["hf"] = {"folder": "hf", "max_abs_diff": hf.max_abs_diff}
                self.metrics["hf_max_abs_diff"] = hf.max_abs_diff
        return artifacts
