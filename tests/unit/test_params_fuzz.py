"""Params fuzzing (issue 14, item 5): any value for any key of params.yaml ends in a valid
:class:`Params` or in a one-line :class:`LmopsError` that names the key, never a traceback.

The keys and their types come from walking the schema's dataclasses, so a key added to
``lmops.config`` is fuzzed without touching this file. Each case writes a params.yaml (YAML is
what users edit, and its loader turns ``1e20`` or ``.inf`` into numbers) and runs what the
pipeline's first stage runs: :func:`load_params`, then the check stage's cross-checks.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmops.config import LmopsError, Params, load_params
from lmops.stage import cross_check

pytestmark = pytest.mark.filterwarnings("ignore")


@dataclasses.dataclass(frozen=True)
class Key:
    """One leaf of the schema: its dotted name, annotated type, default and allowed choices."""

    dotted: str
    type: Any
    default: Any
    choices: tuple[Any, ...] | None


def schema_keys(cls: type = Params, prefix: str = "") -> Iterator[Key]:
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if isinstance(kind, type) and dataclasses.is_dataclass(kind):
            yield from schema_keys(kind, f"{prefix}{f.name}.")
        else:
            yield Key(
                f"{prefix}{f.name}", kind, getattr(instance, f.name), f.metadata.get("choices")
            )


KEYS = list(schema_keys())
SECTIONS = sorted({k.dotted.rsplit(".", 1)[0] for k in KEYS if "." in k.dotted})

HUGE = (1e20, 10**20, 2**63, 2**32, 2**31, -(10**20), float("inf"), float("-inf"), float("nan"))
ODD = (None, "", " ", "abc", "nope", [], [""], [None], {}, {"a": 1}, True, False, 0, -1, -3)


def base_types(kind: Any) -> set[Any]:
    """``int | None`` -> {int, NoneType}; ``list[str]`` -> {list}."""
    args = typing.get_args(kind)
    origin = typing.get_origin(kind)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return set().union(*(base_types(a) for a in args))
    return {origin or kind}


def values_for(key: Key) -> st.SearchStrategy[Any]:
    """Values a user might write for ``key``: odd ones for any key, and the ones its type
    invites (numbers around 0 and far beyond, wrong choices, lists of bad entries)."""
    types = base_types(key.type)
    options: list[st.SearchStrategy[Any]] = [st.sampled_from(ODD), st.sampled_from(HUGE)]
    if int in types or float in types:
        options += [
            st.integers(min_value=-(2**70), max_value=2**70),
            st.integers(min_value=-5, max_value=5),
            st.floats(allow_nan=True, allow_infinity=True),
            st.floats(min_value=-2.0, max_value=2.0),
        ]
    if str in types:
        options.append(st.text(max_size=12))
    if key.choices:
        wrong = [str(c).upper() for c in key.choices] + [f"{c}x" for c in key.choices]
        options.append(st.sampled_from(list(key.choices) + wrong))
    if list in types:
        item = st.one_of(st.text(max_size=8), st.floats(), st.integers(), st.none())
        options.append(st.lists(item, max_size=4))
        if isinstance(key.default, list) and key.default:
            options.append(st.just(list(key.default) * 2))  # duplicates
    return st.one_of(options)


@st.composite
def overrides(draw: st.DrawFn) -> dict[str, Any]:
    """One to three keys set at once (cross-field rules need more than one), or a whole
    section replaced by something that is not a section."""
    if draw(st.integers(0, 19)) == 0:
        return {draw(st.sampled_from(SECTIONS)): draw(st.sampled_from(ODD + HUGE[:2]))}
    chosen = draw(
        st.lists(st.sampled_from(KEYS), min_size=1, max_size=3, unique_by=lambda k: k.dotted)
    )
    return {k.dotted: draw(values_for(k)) for k in chosen}


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = out
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):  # a section already replaced by a scalar
                child = node[part] = {}
            node = child
        node[leaf] = value
    return out


def names_a_key(message: str, flat: dict[str, Any]) -> bool:
    """The message names a key that was set: its dotted name, or its section and its name
    (``pretrain.min_lr must be between 0 and lr`` after ``pretrain.lr`` was set)."""
    for dotted in flat:
        section, _, leaf = dotted.rpartition(".")
        if dotted in message or (section and section in message and leaf in message):
            return True
    return False


ROOT = Path(tempfile.mkdtemp(prefix="lmops-fuzz-"))


def run_check(flat: dict[str, Any]) -> Params | LmopsError:
    """What `dvc repro` runs first (pipeline/check.py), on params.yaml with ``flat`` set."""
    path = ROOT / "params.yaml"
    path.write_text(yaml.safe_dump(nested(flat), allow_unicode=True))
    try:
        params = load_params(path)
        cross_check(params, ROOT)
    except LmopsError as exc:
        return exc
    return params


# ~150 cases run in < 30 s on a busy 2-core machine (a load is 35-100 ms: OmegaConf builds the
# schema each time); LMOPS_FUZZ_EXAMPLES=5000 for a longer campaign (RELIABILITY.md)
EXAMPLES = int(os.environ.get("LMOPS_FUZZ_EXAMPLES", "150"))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides())
def test_any_value_gives_params_or_one_line_naming_the_key(flat: dict[str, Any]) -> None:
    logging.disable(logging.WARNING)  # warmup >= max_steps logs a warning; not under test
    try:
        result = run_check(flat)
    finally:
        logging.disable(logging.NOTSET)
    if isinstance(result, LmopsError):
        message = str(result)
        assert "\n" not in message, message
        assert names_a_key(message, flat), f"{message!r} names none of {sorted(flat)}"
        return
    # accepted: every number that reached Params is finite and fits in 64 bits
    for dotted in flat:
        value: Any = result
        for part in dotted.split("."):
            value = getattr(value, part, None)
        for x in value if isinstance(value, list) else [value]:
            if isinstance(x, float):
                assert math.isfinite(x), (dotted, x)
            if isinstance(x, int):
                assert abs(x) < 2**63, (dotted, x)


@pytest.mark.parametrize(
    ("flat", "expected"),
    [  # one case per bug the fuzzer found (issue 14, item 5)
        ({"pretrain.lr": float("inf")}, "pretrain.lr is inf; must be a finite number"),
        ({"tracking.system_metrics_interval": float("inf")}, "system_metrics_interval is inf"),
        ({"clean.shard_mb": float("inf")}, "clean.shard_mb is inf"),
        ({"pretrain.warmup_steps": 2**63}, "pretrain.warmup_steps is 9223372036854775808"),
        ({"pretrain.seed": -1}, "pretrain.seed is -1; must be in 0..4294967295"),
        ({"clean.minhash.seed": 2**32}, "clean.minhash.seed"),
        ({"data.sample.seed": 10**20}, "data.sample.seed"),
        ({"pretrain.model.n_layer": 10**9}, "pretrain.model.n_layer is 1000000000; must be in"),
        ({"pretrain.model.block_size": 2**31}, "pretrain.model.block_size"),
        ({"pretrain.model.vocab_size": 2**40}, "pretrain.model.vocab_size must be in"),
        (
            {"tokenize.special_tokens": ["<|endoftext|>", ""]},
            "tokenize.special_tokens has an empty",
        ),
        ({"hardware.devices": "abc"}, "hardware.devices is 'abc'; use auto"),
        ({"hardware.devices": "0,-1"}, "hardware.devices"),
        ({"hardware.data_executor.ray_cpus_per_task": 0}, "ray_cpus_per_task must be >= 1"),
        ({"hardware.data_executor.slurm_mem_per_cpu_gb": -2}, "slurm_mem_per_cpu_gb"),
        ({"hardware.data_executor.work_dir": ""}, "work_dir must not be empty"),
        ({"tokenize.special_tokens": {"a": 1}}, "'tokenize.special_tokens': is a mapping"),
        ({"data.corpus_weights": {}}, "'data.corpus_weights': is a mapping"),
        ({"pretrain": 5}, "'pretrain': is 5; must be a section with keys model"),
        ({"pretrain.model": [1]}, "'pretrain.model': is [1]; must be a section"),
        ({"export": None}, "section 'export' is empty (null)"),
        ({"clean.gopher_quality.stop_words": True}, "clean.gopher_quality.stop_words is True"),
    ],
)
def test_found_bugs_give_one_line(flat: dict[str, Any], expected: str) -> None:
    result = run_check(flat)
    assert isinstance(result, LmopsError), result
    assert expected in str(result) and "\n" not in str(result)


def test_every_key_is_fuzzed() -> None:
    """The walk reaches nested sections (a schema change cannot hide keys from the fuzzer)."""
    dotted = {k.dotted for k in KEYS}
    assert {"pretrain.model.n_layer", "hardware.data_executor.type", "finetune.lora.rank"} <= dotted
    assert len(dotted) >= 150
