"""MLflow pyfunc models around a bundle: a text classifier and a text generator.

The classifier's signature comes from the ``predict`` type hints (MLflow 3 infers it; a pydantic
output class gives a typed ``{label, probability}`` record schema). The generator's is explicit:
strings in, strings out, and a params schema from :class:`~lmops.models.generation.
GenerationParams` (``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``stop``, ``seed``,
with the model's defaults). Explicit because MLflow infers an empty list (``stop``'s default) as a
datetime array; ``TypeFromExample`` still hands ``predict`` a plain list of prompts.
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
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from mlflow.types.type_hints import TypeFromExample

from lmops.config import LmopsError

__all__ = [
    "ClassifierModel",
    "export_model",
    "GeneratorModel",
    "Prediction",
    "generator_signature",
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


def _state_without_weights(model: mlflow.pyfunc.PythonModel) -> dict[str, Any]:
    """What ``python_model.pkl`` may hold: everything but the loaded bundle. MLflow runs
    ``load_context`` and ``predict`` on the input example to infer a signature and only then
    pickles the object; without this the weights would ride along as a pickled second copy of
    ``model.safetensors`` (weights leave lmops as safetensors only)."""
    return {k: v for k, v in vars(model).items() if k != "bundle"}


class ClassifierModel(mlflow.pyfunc.PythonModel):
    """Texts in, ``{"label", "probability"}`` records out (one per text, same order)."""

    def __getstate__(self) -> dict[str, Any]:
        return _state_without_weights(self)

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
    """Prompts in, continuations out (the generated text only, without the prompt).

    The prompts of one request are generated together (batches of ``batch_size``, left-padded,
    KV cache). Request params follow the schema: ``top_k`` 0, ``top_p`` 1.0 and ``seed`` -1 mean
    off; prompt ``i`` samples from ``seed + i``. A bad value is an ``MlflowException`` with one
    line naming the param (HTTP 400 when served).
    """

    def __init__(self, max_new_tokens: int = 64, batch_size: int = 16) -> None:
        self.max_new_tokens = int(max_new_tokens)
        self.batch_size = int(batch_size)

    def __getstate__(self) -> dict[str, Any]:
        return _state_without_weights(self)

    def load_context(self, context: Any) -> None:
        from lmops.export.bundle import load_bundle

        self.bundle = load_bundle(context.artifacts["bundle"])

    def defaults(self) -> Any:
        """The ``GenerationParams`` a request without params gets."""
        from lmops.models.generation import GenerationParams

        return GenerationParams(max_new_tokens=self.max_new_tokens)

    def predict(
        self, context: Any, model_input: TypeFromExample, params: dict[str, Any] | None = None
    ) -> list[str]:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from lmops.export.bundle import generate_batch
        from lmops.models.generation import GenerationParams

        try:
            gen = GenerationParams.from_schema(params or {}, self.defaults())
        except LmopsError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        prompts = [str(p) for p in model_input]
        out = generate_batch(self.bundle, prompts, gen, batch_size=self.batch_size)
        return [tail for _, tail in out]


def generator_signature(max_new_tokens: int) -> ModelSignature:
    """Strings in, strings out, and one param per :class:`GenerationParams` field with this
    model's defaults (``top_k`` 0, ``top_p`` 1.0, ``seed`` -1: off; ``stop`` a string list)."""
    from lmops.models.generation import GenerationParams

    defaults = GenerationParams(max_new_tokens=max_new_tokens).to_schema()
    dtypes = {
        "max_new_tokens": "long",
        "temperature": "double",
        "top_k": "long",
        "top_p": "double",
        "stop": "string",
        "seed": "long",
    }
    specs = [
        ParamSpec(name, dtypes[name], value, (-1,) if isinstance(value, list) else None)
        for name, value in defaults.items()
    ]
    return ModelSignature(
        inputs=Schema([ColSpec("string")]),
        outputs=Schema([ColSpec("string")]),
        params=ParamSchema(specs),
    )


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
    signature: ModelSignature | None = None
    if kind == "classifier":
        python_model = ClassifierModel()
        input_example: Any = ["a short text to classify"]
    elif kind == "lm":
        python_model = GeneratorModel(max_new_tokens)
        signature = generator_signature(max_new_tokens)
        input_example = ["Once upon a time"]
    else:
        raise LmopsError(f"{bundle / 'config.json'}: unknown kind {kind!r}")
    extra: dict[str, Any] = {} if signature is None else {"signature": signature}
    return {
        **extra,
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
    replacing ``dest`` whole. The copy gets ``SHA256SUMS`` (:func:`~lmops.export.bundle.
    write_checksums`), so the registered model refuses to load files changed after this export.
    A source that holds no model (``finetune.task: none``) gives a
    ``dest`` saying so; returns whether a model was exported.

    ``extras(bundle, folder)`` writes other formats into ``folder`` (the future ``dest``, e.g.
    ``lmops.export.formats.ExtraFormats``) before the pyfunc is saved, and returns those the
    pyfunc should carry as artifacts; if it raises, ``dest`` is left as it was."""
    import shutil

    from lmops.export.bundle import write_checksums
    from lmops.io import SKIPPED, atomic_dir, write_skipped

    source = Path(source)
    if (source / SKIPPED).is_file():
        write_skipped(dest, f"{source} holds no model")
        return False
    with atomic_dir(dest) as tmp:
        shutil.copytree(source, tmp / "bundle")
        write_checksums(tmp / "bundle")  # travels into the pyfunc: its load_context verifies
        artifacts = extras(tmp / "bundle", tmp) if extras is not None else {}
        save_pyfunc(tmp / "bundle", tmp / "pyfunc", max_new_tokens, artifacts)
    return True
