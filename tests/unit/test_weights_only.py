"""Loading a model or a checkpoint never runs code from the file.

Bundles hold weights as safetensors (no pickle at all). Resume checkpoints are Lightning's
``torch.save`` pickles, since they carry optimizer, scheduler, loop and RNG state that safetensors
cannot; they are loaded with ``torch.load(weights_only=True)``, which only rebuilds tensors and
plain containers. These tests prove our checkpoints need nothing more, that a checkpoint holding
code is refused, and that every resume in the stages asks for ``weights_only``.
"""

from __future__ import annotations

import ast
import functools
import pickle
from pathlib import Path

import pytest
import torch

from lmops.training.checkpointing import CheckpointStore
from tests.unit.test_checkpointing import tokens, train  # noqa: F401  (tokens: the fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SRC = Path(__file__).resolve().parents[2] / "src" / "lmops"
UNSAFE_LOADS = {("torch", "save"), ("torch", "load"), ("pickle", "load"), ("pickle", "loads")}


@functools.cache
def package_nodes() -> list[tuple[Path, ast.AST]]:
    """Every AST node of the package's source, with its file (parsed once per test run)."""
    return [
        (path, node)
        for path in sorted(SRC.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
    ]


class _Payload:
    """What a hostile checkpoint carries: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_resume_checkpoints_load_with_weights_only(tokens: Path, tmp_path: Path) -> None:  # noqa: F811
    store = CheckpointStore(tmp_path / "ckpt", "k")
    store.prepare()
    train(tokens, store, every=2, kill_at=3)  # one checkpoint (step 2), then "killed"
    latest = store.latest()
    assert latest is not None
    state = torch.load(latest[0], weights_only=True, map_location="cpu")
    # model, optimizer, scheduler, loops and our RNG states: all plain data
    assert {"state_dict", "optimizer_states", "lr_schedulers", "loops", "callbacks"} <= set(state)


def test_a_checkpoint_holding_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "step-00000002.ckpt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": {}, "x": _Payload(marker)}, fh)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)
    assert not marker.exists()


def test_every_resume_in_the_stages_loads_weights_only() -> None:
    """Each ``fit(..., ckpt_path=...)`` in the package passes ``weights_only=True``: torch's own
    default is True only since 2.6, and pyproject allows older torch."""
    calls = []
    for path, node in package_nodes():
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "fit" and "ckpt_path" in keywords:
                only = keywords.get("weights_only")
                calls.append((path.name, isinstance(only, ast.Constant) and only.value is True))
    assert {name for name, _ in calls} >= {"pretraining.py", "finetuning.py"}
    assert all(ok for _, ok in calls), calls


def test_no_torch_save_or_pickle_load_of_weights_in_the_package() -> None:
    """Weights leave the package only as safetensors: no ``torch.save`` / ``torch.load`` /
    ``pickle.load`` outside Lightning's checkpointing."""
    found = [
        f"{path.relative_to(SRC)}:{node.lineno} {node.value.id}.{node.attr}"
        for path, node in package_nodes()
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and (node.value.id, node.attr) in UNSAFE_LOADS
    ]
    assert not found, found


@pytest.mark.parametrize("kind", ["classifier", "lm"])
def test_pyfunc_pickle_holds_no_weights(tmp_path: Path, kind: str) -> None:
    """MLflow pickles the python model after running it on the input example: the loaded
    weights must not ride along in ``python_model.pkl`` (they travel as model.safetensors)."""
    from lmops.export.pyfunc import save_pyfunc
    from tests.unit.test_bundle import make_classifier_bundle, make_lm_bundle

    bundle = (make_classifier_bundle if kind == "classifier" else make_lm_bundle)(tmp_path)
    save_pyfunc(bundle, tmp_path / "pyfunc")
    weights = (bundle / "model.safetensors").stat().st_size
    pickled = (tmp_path / "pyfunc" / "python_model.pkl").stat().st_size
    assert pickled < min(weights // 4, 16_384), (pickled, weights)
