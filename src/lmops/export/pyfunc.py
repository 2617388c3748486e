"""MLflow pyfunc models around a bundle: a text classifier and a text generator.

The signature comes from the ``predict`` type hints (MLflow 3 infers it; a pydantic output class
gives the classifier a typed ``{label, probability}`` record schema), and the generator's
params schema (``max_new_tokens``, ``temperature``, ``top_k``, ``seed``) from its input example.
``code_paths`` ships the ``lmops`` package inside the model, so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` work in an environment where ``lmops`` is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import mlflow
import pydantic

from lmops.config import LmopsError

__all__ = [
    "ClassifierModel",
    "export_model",
    "GeneratorModel",
    "Prediction",
    "log_pyfunc",
    "pyfunc_kwargs",
    "save_pyfunc",
]

# The serving process may not have lmops on its path; these are what the pyfunc itself imports.
_REQUIREMENTS = ("mlflow", "torch", "tokenizers", "safetensors", "numpy", "pydantic")


class Prediction(pydantic.BaseModel):
    """One classifier answer: the most likely label and its softmax probability."""

    label: str
    probability: float


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Texts in, ``{"label", "probability"}`` records out (one per text, same order)."""

    def load_context(self, context: Any) -> None:
        from lmops.export.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: list[str], params: dict[str, Any] | None = None
    ) -> list[Prediction]:
        from lmops.export.bundle import classify

        # Plain dicts: they satisfy the Prediction schema and serialize to JSON as they are.
        return classify(self.bundle, list(model_input))  # type: ignore[return-value]


class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Prompts in, continuations out (the generated text only, without the prompt)."""

    def __init__(self, max_new_tokens: int = 64) -> None:
        self.max_new_tokens = int(max_new_tokens)

    def load_context(self, context: Any) -> None:
        from lmops.export.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def predict(
        self, context: Any, model_input: list[str], params: dict[str, Any] | None = None
    ) -> list[str]:
        from lmops.export.bundle import generate_text

        p = params or {}
        max_new = int(p.get("max_new_tokens", self.max_new_tokens))
        temperature = float(p.get("temperature", 1.0))
        top_k = int(p.get("top_k", 0)) or None  # 0: no top-k filter
        seed = int(p.get("seed", -1))  # -1: unseeded
        out = []
        for i, prompt in enumerate(model_input):
            _, tail = generate_text(
                self.bundle,
                prompt,
                max_new_tokens=max_new,
                temperature=temperature,
                top_k=top_k,
                seed=None if seed < 0 else seed + i,
            )
            out.append(tail)
        return out


def _lmops_package_dir() -> str:
    import lmops

    return str(Path(lmops.__file__).resolve().parent)


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in _REQUIREMENTS:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:  # pragma: no cover - every one is a dependency of lmops
            out.append(name)
    return out


def pyfunc_kwargs(
    bundle_dir: str | os.PathLike[str],
    max_new_tokens: int = 64,
    extra_artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
) -> dict[str, Any]:
    """Arguments shared by ``save_model`` and ``log_model`` for the bundle in ``bundle_dir``.

    ``extra_artifacts`` (e.g. ``{"onnx": folder}``) ride along in the model, so a registered
    version carries them too; the pyfunc itself reads only ``bundle``.
    """
    from lmops.export.bundle import find_bundle
    from lmops.io import read_json

    bundle = find_bundle(bundle_dir)
    kind = read_json(bundle / "config.json")["kind"]
    python_model: mlflow.pyfunc.PythonModel
    if kind == "classifier":
        python_model = ClassifierModel()
        input_example: Any = ["a short text to classify"]
    elif kind == "lm":
        python_model = GeneratorModel(max_new_tokens)
        # The params half of the example becomes the params schema (with these as defaults).
        input_example = (
            ["Once upon a time"],
            {"max_new_tokens": int(max_new_tokens), "temperature": 1.0, "top_k": 0, "seed": -1},
        )
    else:
        raise LmopsError(f"{bundle / 'config.json'}: unknown kind {kind!r}")
    return {
        "python_model": python_model,
        "artifacts": {
            "bundle": str(bundle),
            **{k: str(v) for k, v in (extra_artifacts or {}).items()},
        },
        "code_paths": [_lmops_package_dir()],
        "input_example": input_example,
        "pip_requirements": _requirements(),
    }


def save_pyfunc(
    bundle_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    max_new_tokens: int = 64,
    extra_artifacts: Mapping[str, str | os.PathLike[str]] | None = None,
) -> None:
    """Save the bundle as an MLflow pyfunc model folder at ``out_dir`` (which must not exist).

    The model kind follows the bundle: a classifier or a generator (``max_new_tokens`` is the
    generator's default answer length; callers override it per request with params).
    """
    mlflow.pyfunc.save_model(
        str(out_dir), **pyfunc_kwargs(bundle_dir, max_new_tokens, extra_artifacts)
    )


def log_pyfunc(
    bundle_dir: str | os.PathLike[str], name: str = "model", max_new_tokens: int = 64
) -> Any:
    """Log the bundle as a pyfunc model to the active run; returns MLflow's ``ModelInfo``.

    ``ModelInfo.model_uri`` (``models:/m-...``) is what :func:`lmops.tracking.registry.
    register_model` takes.
    """
    return mlflow.pyfunc.log_model(name=name, **pyfunc_kwargs(bundle_dir, max_new_tokens))


def export_model(
    source: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    max_new_tokens: int = 64,
    extras: Callable[[Path, Path], Mapping[str, Path]] | None = None,
) -> bool:
    """``dest/bundle`` (a copy of the model folder ``source``) and ``dest/pyfunc`` beside it,
    replacing ``dest`` whole. A source that holds no model (``finetune.task: none``) gives a
    ``dest`` saying so; returns whether a model was exported.

    ``extras(bundle, folder)`` writes other formats into ``folder`` (the future ``dest``, e.g.
    ``lmops.export.formats.ExtraFormats``) before the pyfunc is saved, and returns those the
    pyfunc should carry as artifacts; if it raises, ``dest`` is left as it was."""
    import shutil

    from lmops.io import SKIPPED, atomic_dir, write_skipped

    source = Path(source)
    if (source / SKIPPED).is_file():
        write_skipped(dest, f"{source} holds no model")
        return False
    with atomic_dir(dest) as tmp:
        shutil.copytree(source, tmp / "bundle")
        artifacts = extras(tmp / "bundle", tmp) if extras is not None else {}
        save_pyfunc(tmp / "bundle", tmp / "pyfunc", max_new_tokens, artifacts)
    return True
